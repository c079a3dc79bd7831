"""What framing and the typed messages share: constants, errors, ``Frame``, and the header-field checks.

Import these names from ``fl.wire``. This module sits at the bottom of the
wire package (``codec``, ``messages`` and ``summary_messages`` import it), so there is no import
cycle; the checks raise ``ProtocolError("message", ...)`` with the message
type and the field named.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np

from fl.errors import FLError

PROTOCOL_VERSION = 1
# \A...\Z so that .match(), .search() and .fullmatch() all reject "ok\n".
CLIENT_ID_PATTERN = re.compile(r"\A[A-Za-z0-9_.-]{1,64}\Z")
BLOB_FORMAT_SKOPS = "skops"

NamedArrays = list[tuple[str, np.ndarray]]
"""Ordered (name, array) pairs: the order is the order on the wire."""


class ProtocolError(FLError):
    """A frame or message broke the contract.

    ``.code`` is a short machine string (``magic``, ``header_too_large``,
    ``body_too_large``, ``json``, ``dtype``, ``shape``, ``length``, ``message``,
    ``blob``, ``timeout``); ``str(e)`` is for people.
    """

    def __init__(self, code: str, message: str):
        super().__init__(code, message)  # both in args, so copies keep the code
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message


class PeerClosed(FLError, ConnectionError):
    """The peer closed the connection (at a frame boundary or mid-frame)."""


@dataclass
class Frame:
    """One decoded frame: the header as received, the arrays, the blob."""

    header: dict
    arrays: NamedArrays
    blob: bytes | None = None


_PLAIN = frozenset((int, str, bool, type(None)))  # already what json writes (float is not: it may be NaN)


def json_safe(obj: Any) -> Any:
    """Return ``obj`` ready for ``json.dumps(allow_nan=False)``.

    Non-finite floats become ``None`` (a NaN metric travels as ``null``, the
    only spelling standard JSON has), numpy scalars and arrays become plain
    Python values, tuples become lists. Other values are left for json to
    accept or reject.
    """
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if obj is None or isinstance(obj, (str, int)):
        return obj
    if isinstance(obj, dict):
        return {(k.item() if isinstance(k, np.generic) else k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [v if type(v) in _PLAIN else json_safe(v) for v in obj]  # a confusion row: no call per count
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    return obj


# --------------------------------------------------------------- validation


def _fail(msg_type: str, text: str) -> NoReturn:
    raise ProtocolError("message", f"{msg_type}: {text}")


def _int(h: dict, key: str, t: str, minimum: int | None = None) -> int:
    value = h.get(key)
    if type(value) is not int:  # bool is an int subclass; it is not a count
        _fail(t, f"{key!r} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        _fail(t, f"{key!r} must be >= {minimum}, got {value}")
    return value


def _float(h: dict, key: str, t: str) -> float:
    value = h.get(key)
    if type(value) not in (int, float) or not math.isfinite(value):
        _fail(t, f"{key!r} must be a finite number, got {value!r}")
    return float(value)


def _str(h: dict, key: str, t: str, optional: bool = False) -> str | None:
    value = h.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        _fail(t, f"{key!r} must be a string, got {value!r}")
    return value


def _dict(h: dict, key: str, t: str, optional: bool = False) -> dict | None:
    value = h.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, dict):
        _fail(t, f"{key!r} must be a JSON object, got {type(value).__name__}")
    return value


MAX_CONFUSION_CLASSES = 256  # a confusion matrix of more classes is not sent (its metrics are then not available)
MAX_EXACT_INT = 2**53  # the largest integer every JSON reader holds exactly (a double's mantissa)


def _counts_matrix(h: dict, key: str, t: str, total: int) -> list[list[int]] | None:
    """An optional square matrix of non-negative integer counts that add up to ``total`` (a confusion matrix)."""
    value = h.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not 0 < len(value) <= MAX_CONFUSION_CLASSES:
        _fail(t, f"{key!r} must be a list of 1 to {MAX_CONFUSION_CLASSES} rows")
    k = len(value)
    for row in value:
        if not isinstance(row, list) or len(row) != k:
            _fail(t, f"{key!r} must be a square matrix ({k} rows of {k} counts)")
        for v in row:
            if type(v) is not int or not 0 <= v <= MAX_EXACT_INT:
                _fail(t, f"{key!r} must hold whole counts from 0 to 2^53")
    if sum(map(sum, value)) != total:
        _fail(t, f"{key!r} counts add up to {sum(map(sum, value))}, not to n_samples {total}")
    return value


def _check_type(frame: Frame, cls: type) -> dict:
    h = frame.header
    if h.get("type") != cls.TYPE:
        _fail(cls.TYPE, f"frame has type {h.get('type')!r}")
    return h


def _payload(frame: Frame, t: str) -> tuple[NamedArrays | None, bytes | None]:
    """Parameters of fit/fit_result/evaluate: arrays, a skops blob, or nothing."""
    if frame.blob is not None:
        desc = frame.header.get("blob")
        fmt = desc.get("format") if isinstance(desc, dict) else BLOB_FORMAT_SKOPS
        if fmt != BLOB_FORMAT_SKOPS:
            raise ProtocolError("blob", f"{t}: blob format {fmt!r} is not 'skops'")
    return (list(frame.arrays) if frame.arrays else None), frame.blob
