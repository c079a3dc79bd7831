"""Wire protocol v1, the codec: length-prefixed frames of a JSON header plus raw arrays, as bytes.

This is the Python reference of the contract in docs/protocol.md. A frame is

    magic "FLW1" | header_len u32 BE | body_len u64 BE | header JSON | body

where the body holds C-contiguous little-endian arrays (six dtypes, nothing
else) and optionally one opaque blob. Nothing here pickles or unpickles; a
``skops`` blob stays bytes until fl.wire.blobs loads it with an allow-list.

A receiver never trusts a length it has not checked: the codec's three
public steps say what to read next and are run by every reader (the event
loop's ``fl.wire.aio`` in production, the blocking ``fl.wire.reference_peer``
in tests and bench, ``decode_frame`` in memory):

    parse_prefix(16 bytes) -> header_len, body_len   (magic and both lengths checked)
    parse_header(header bytes, body_len) -> header, layout, blob_size   (before the body is allocated)
    build_frame(header, layout, blob_size, body) -> Frame

Nothing here touches a socket. Typed messages live in fl/wire/messages.py;
``fl.wire`` exports both.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from fl.wire.fields import BLOB_FORMAT_SKOPS, MAX_EXACT_INT, Frame, NamedArrays, ProtocolError

__all__ = [
    "MAGIC", "ALLOWED_DTYPES", "DEFAULT_MAX_HEADER_BYTES", "DEFAULT_MAX_MESSAGE_BYTES", "DEFAULT_FRAME_TIMEOUT_S",
    "PREFIX_SIZE", "Limits", "FrameLayout", "encode_frame", "frame_to_bytes", "parse_prefix", "parse_header",
    "build_frame", "decode_frame",
]

MAGIC = b"FLW1"
ALLOWED_DTYPES = ("<f8", "<f4", "<i8", "<i4", "|u1", "|b1")
DEFAULT_MAX_HEADER_BYTES = 1 << 20
DEFAULT_MAX_MESSAGE_BYTES = 256 << 20
DEFAULT_FRAME_TIMEOUT_S = 30.0

_PREFIX = struct.Struct(">4sIQ")  # magic, header_len, body_len
PREFIX_SIZE = _PREFIX.size  # 16
_DTYPES = {s: np.dtype(s) for s in ALLOWED_DTYPES}
_CANONICAL = {("f", 8): "<f8", ("f", 4): "<f4", ("i", 8): "<i8", ("i", 4): "<i4",
              ("u", 1): "|u1", ("b", 1): "|b1"}
_MAX_NDIM = 32


@dataclass(frozen=True)
class Limits:
    """What a receiver accepts; checked before anything is allocated."""

    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES  # max body_len
    # Longest a started frame may go without a new byte: a slow peer whose bytes keep coming is not stalled.
    # (A whole-frame bound, where one is needed, is the caller's: the server gives hello one deadline.)
    frame_timeout_s: float = DEFAULT_FRAME_TIMEOUT_S

    def __post_init__(self) -> None:
        if self.max_header_bytes < 1 or self.max_message_bytes < 0 or not self.frame_timeout_s > 0:
            raise ValueError(f"invalid limits: {self}")


# ----------------------------------------------------------------- encoding


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.generic, np.ndarray)):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _canonical(arr: np.ndarray, name: str) -> tuple[str, np.ndarray]:
    """Map an array to its wire dtype string, byte-swapping if needed."""
    dt = arr.dtype
    canon = _CANONICAL.get((dt.kind, dt.itemsize)) if dt.fields is None else None
    if canon is None:
        raise ProtocolError("dtype", f"array {name!r}: dtype {dt.str!r} is not one of {ALLOWED_DTYPES}")
    if dt != _DTYPES[canon]:  # e.g. big-endian '>f8'
        arr = arr.astype(_DTYPES[canon])
    return canon, arr


def encode_frame(header: dict, arrays: Iterable[tuple[str, np.ndarray]] = (),
                 blob: bytes | None = None, blob_format: str = BLOB_FORMAT_SKOPS) -> list[bytes | memoryview]:
    """Return the buffers of one frame, ready for send, without copying big arrays.

    Fills ``header["arrays"]`` and ``header["blob"]`` in place (removes them
    when there are no arrays / no blob). Contiguous arrays are sent from their
    own memory; only non-contiguous or big-endian ones are copied.
    """
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise ProtocolError("json", "header must be a dict with a string 'type'")
    descs: list[dict] = []
    buffers: list[bytes | memoryview] = []
    body_len = 0
    for name, arr in arrays:
        if not isinstance(name, str):
            raise ProtocolError("json", f"array name must be a string, got {name!r}")
        canon, a = _canonical(np.asarray(arr), name)
        if not a.flags.c_contiguous:
            a = a.copy(order="C")  # not ascontiguousarray: that turns 0-d into 1-d
        descs.append({"name": name, "dtype": canon, "shape": [int(s) for s in a.shape]})
        if a.nbytes:
            buffers.append(memoryview(a.reshape(-1).view(np.uint8)))
        body_len += a.nbytes
    header.pop("arrays", None)
    header.pop("blob", None)
    if descs:
        header["arrays"] = descs
    if blob is not None:
        if not isinstance(blob_format, str) or not blob_format:
            raise ProtocolError("blob", "blob_format must be a non-empty string")
        view = memoryview(blob).cast("B")
        header["blob"] = {"format": blob_format, "size": len(view)}
        if len(view):
            buffers.append(view)
        body_len += len(view)
    try:
        raw = json.dumps(header, allow_nan=False, ensure_ascii=False, separators=(",", ":"),
                         default=_json_default).encode("utf-8")
    except (TypeError, ValueError, UnicodeEncodeError, RecursionError) as exc:
        raise ProtocolError("json", f"header is not strict JSON (use json_safe for metrics): {exc}") from None
    if len(raw) > DEFAULT_MAX_HEADER_BYTES:
        raise ProtocolError("header_too_large", f"header is {len(raw)} bytes, limit {DEFAULT_MAX_HEADER_BYTES}")
    return [_PREFIX.pack(MAGIC, len(raw), body_len) + raw, *buffers]


def frame_to_bytes(header: dict, arrays: Iterable[tuple[str, np.ndarray]] = (),
                   blob: bytes | None = None, blob_format: str = BLOB_FORMAT_SKOPS) -> bytes:
    """One frame as a single bytes object (copies; for tests and small frames)."""
    return b"".join(encode_frame(header, arrays, blob, blob_format))


# ----------------------------------------------------------------- decoding
# parse_prefix -> parse_header -> build_frame: run by decode_frame and by every
# socket reader, so in-memory fuzzing exercises exactly the checks the socket path runs.

FrameLayout = list[tuple[str, np.dtype, tuple[int, ...], int]]  # per array: name, dtype, shape, nbytes


def parse_prefix(prefix: bytes | bytearray | memoryview, limits: Limits) -> tuple[int, int]:
    """The 16-byte prefix's ``header_len`` and ``body_len``, after checking the magic and both lengths."""
    magic, header_len, body_len = _PREFIX.unpack(prefix)
    if magic != MAGIC:
        raise ProtocolError("magic", f"bad magic {bytes(magic)!r}, expected {MAGIC!r}")
    if header_len == 0:
        raise ProtocolError("length", "header_len is 0; a header is at least '{}'")
    if header_len > limits.max_header_bytes:
        raise ProtocolError("header_too_large", f"header_len {header_len} > limit {limits.max_header_bytes}")
    if body_len > limits.max_message_bytes:
        raise ProtocolError("body_too_large", f"body_len {body_len} > limit {limits.max_message_bytes}")
    return header_len, body_len


def _strict_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ProtocolError("json", f"non-finite number {text!r} in header")
    return value


def _reject_constant(text: str) -> Any:
    raise ProtocolError("json", f"{text} is not JSON")


_MAX_INT_DIGITS = len(str(MAX_EXACT_INT))


def _exact_int(text: str) -> int:
    """A JSON integer every reader holds exactly: at most 2^53 in magnitude (a double's mantissa).

    A larger one is no count anyone has; it would overflow float conversions
    downstream (``math.isfinite(10**400)`` raises). Checked on the digits
    before ``int()`` runs, so a 4,000-digit number costs nothing.
    """
    digits = text.lstrip("-")
    if len(digits) > _MAX_INT_DIGITS or abs(value := int(text)) > MAX_EXACT_INT:
        shown = text if len(text) <= 24 else f"{text[:12]}...({len(digits)} digits)"
        raise ProtocolError("json", f"integer {shown} in header is beyond 2^53")
    return value


def _check_strings(value: Any) -> None:
    """Every string of a parsed header (keys and values) must be valid Unicode text: JSON's ``\\ud800``
    escape decodes to a lone surrogate, which no UTF-8 encoder takes (a welcome quoting it could not be
    sent). Iterative: depth costs no recursion."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise ProtocolError("json", "a string in the header is not valid Unicode (a lone surrogate)") from None
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


# What the checked decoder is needed for, read off the text: an integer of 16 digits or more (it may pass
# 2^53; a float's digits, next to "." or an exponent, may be as many as repr writes), a number of 300 digits
# or an exponent of 3 digits (a float that may overflow: 1e400 is inf), or a \\uD800-\\uDFFF escape (a lone
# surrogate; strict UTF-8 decoding already refuses surrogate bytes). A header with none of these, which is
# every header an honest peer sends, is read by json's C decoder alone: the same result, 5-10x sooner.
_NEEDS_CHECKS = re.compile(r"(?<![\d.])\d{16,}(?![\d.eE])|\d{300}|[eE][+-]?\d{3}|\\u[dD][89a-fA-F]")
_FAST_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_CHECKED_DECODER = json.JSONDecoder(parse_float=_strict_float, parse_int=_exact_int, parse_constant=_reject_constant)


def _decode_header(raw: bytes | bytearray | memoryview) -> Any:
    text = bytes(raw).decode("utf-8")
    if _NEEDS_CHECKS.search(text) is None:
        return _FAST_DECODER.decode(text)
    header = _CHECKED_DECODER.decode(text)
    _check_strings(header)
    return header


def parse_header(raw: bytes | bytearray | memoryview, body_len: int,
                 limits: Limits) -> tuple[dict, FrameLayout, int | None]:
    """Validate the header and its descriptors against body_len, before any body is read."""
    try:
        header = _decode_header(raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError("json", f"header is not UTF-8 JSON: {exc}") from None
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise ProtocolError("json", "header must be a JSON object with a string 'type'")
    descs = header.get("arrays")
    if descs is None:
        descs = []
    if not isinstance(descs, list):
        raise ProtocolError("json", "'arrays' must be a list")
    layout: FrameLayout = []
    total = 0
    for d in descs:
        if not isinstance(d, dict) or not isinstance(d.get("name"), str):
            raise ProtocolError("json", f"array descriptor needs a string 'name': {d!r:.200}")
        name, dtype, shape = d["name"], d.get("dtype"), d.get("shape")
        if not isinstance(dtype, str) or dtype not in _DTYPES:
            raise ProtocolError("dtype", f"array {name!r}: dtype {dtype!r:.40} not in {ALLOWED_DTYPES}")
        if (not isinstance(shape, list) or len(shape) > _MAX_NDIM
                or not all(type(s) is int and 0 <= s <= limits.max_message_bytes for s in shape)):
            raise ProtocolError("shape", f"array {name!r}: shape {shape!r:.200} is not a list of "
                                         f"at most {_MAX_NDIM} non-negative sizes")
        nbytes = _DTYPES[dtype].itemsize
        for s in shape:
            nbytes *= s
            if nbytes > limits.max_message_bytes:
                raise ProtocolError("body_too_large", f"array {name!r} of shape {shape} exceeds "
                                                      f"{limits.max_message_bytes} bytes")
        layout.append((name, _DTYPES[dtype], tuple(shape), nbytes))
        total += nbytes
    blob_size = None
    if header.get("blob") is not None:
        b = header["blob"]
        if (not isinstance(b, dict) or not isinstance(b.get("format"), str)
                or type(b.get("size")) is not int or b["size"] < 0):
            raise ProtocolError("blob", "'blob' must be {\"format\": str, \"size\": int >= 0}")
        blob_size = b["size"]
        total += blob_size
    if total != body_len:
        raise ProtocolError("length", f"arrays and blob need {total} bytes, body_len is {body_len}")
    return header, layout, blob_size


def build_frame(header: dict, layout: FrameLayout, blob_size: int | None,
                body: bytes | bytearray | memoryview) -> Frame:
    """Slice the body into arrays and the blob (a copy).

    Arrays are views into the body (no copy) when their offset suits their
    dtype; an unaligned one (after an odd-sized array) is copied, since some
    compiled code refuses unaligned buffers.
    """
    arrays: NamedArrays = []
    offset = 0
    for name, dtype, shape, nbytes in layout:
        if dtype.kind == "b" and nbytes and np.frombuffer(body, np.uint8, nbytes, offset).max() > 1:
            raise ProtocolError("dtype", f"array {name!r}: bool bytes must be 0 or 1")
        count = nbytes // dtype.itemsize
        arr = np.frombuffer(body, dtype, count, offset).reshape(shape)
        arrays.append((name, arr if arr.flags.aligned else arr.copy()))
        offset += nbytes
    blob = bytes(memoryview(body)[offset:offset + blob_size]) if blob_size is not None else None
    return Frame(header=header, arrays=arrays, blob=blob)


def decode_frame(data: bytes | bytearray | memoryview, limits: Limits = Limits()) -> Frame:
    """Decode exactly one whole frame held in memory (tests, fuzzing).

    Runs the same checks as every socket reader; truncated or trailing bytes are a
    ``length`` error. Arrays are views into ``data`` (read-only for bytes)
    or, when unaligned, writable copies.
    """
    view = memoryview(data).cast("B")
    if len(view) < PREFIX_SIZE:
        raise ProtocolError("length", f"{len(view)} bytes is shorter than the {PREFIX_SIZE}-byte prefix")
    header_len, body_len = parse_prefix(view[:PREFIX_SIZE], limits)
    end = PREFIX_SIZE + header_len
    if len(view) != end + body_len:
        raise ProtocolError("length", f"frame declares {end + body_len} bytes, got {len(view)}")
    header, layout, blob_size = parse_header(view[PREFIX_SIZE:end], body_len, limits)
    return build_frame(header, layout, blob_size, view[end:])
