"""Wire protocol v1 framing (fl.wire.codec, and fl.wire.reference_peer over sockets): frame round trips, malformed frames, timeouts and EOF."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from fl.wire import (
    ALLOWED_DTYPES,
    Limits,
    PeerClosed,
    ProtocolError,
    decode_frame,
    encode_frame,
    frame_to_bytes,
    json_safe,
)
from fl.wire.reference_peer import read_frame, write_frame
from tests.protocol_helpers import (
    assert_arrays_equal,
    expect_code,
    prefix,
    raw_frame,
    sample_array,
)

pytestmark = pytest.mark.timeout(30)

SHAPES = [(), (0,), (5,), (2, 3), (2, 0, 3), (2, 3, 4)]


# ------------------------------------------------------------ round trips


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", ALLOWED_DTYPES)
def test_every_dtype_and_shape_round_trips_in_memory(dtype, shape):
    # Prepare
    arr = sample_array(dtype, shape)
    # Execute
    frame = decode_frame(frame_to_bytes({"type": "t"}, [("x", arr)]))
    # Assert
    assert frame.header["arrays"] == [{"name": "x", "dtype": dtype, "shape": list(shape)}]
    assert_arrays_equal(frame.arrays, [("x", arr)])
    assert frame.blob is None


def test_every_dtype_and_shape_round_trips_over_socket(pair):
    # Prepare
    writer, reader = pair
    arrays = [(f"{d}{s}", sample_array(d, s)) for d in ALLOWED_DTYPES for s in SHAPES]
    # Execute
    sent = write_frame(writer, {"type": "t"}, arrays)
    frame, received = read_frame(reader, Limits(frame_timeout_s=5))
    # Assert
    assert sent == received == len(frame_to_bytes({"type": "t"}, arrays))
    assert_arrays_equal(frame.arrays, arrays)
    assert all(a.flags.writeable and a.flags.aligned for _, a in frame.arrays)


def test_non_contiguous_and_native_dtypes_are_canonicalised():
    # Prepare
    base = np.arange(24, dtype=np.float64).reshape(4, 6)
    arrays = [("strided", base[::2, 1::2]), ("fortran", np.asfortranarray(base)),
              ("big_endian", np.arange(5, dtype=">i4")), ("bool", np.array([True, False])),
              ("u8", np.array([0, 255], dtype=np.uint8)), ("scalar", np.float32(2.5))]
    # Execute
    frame = decode_frame(frame_to_bytes({"type": "t"}, arrays))
    # Assert
    dtypes = [d["dtype"] for d in frame.header["arrays"]]
    assert dtypes == ["<f8", "<f8", "<i4", "|b1", "|u1", "<f4"]
    for (_, got), (_, original) in zip(frame.arrays, arrays):
        np.testing.assert_array_equal(got, original)


@pytest.mark.parametrize("bad", [np.int16, np.float16, np.complex128, object, np.uint32, "U3", "M8[s]",
                                 [("a", "<f8"), ("b", "<i4")]])
def test_encode_rejects_disallowed_dtypes(bad):
    # Prepare
    arr = np.zeros(3, dtype=bad)
    # Execute
    with pytest.raises(ProtocolError) as info:
        encode_frame({"type": "t"}, [("x", arr)])
    # Assert
    assert info.value.code == "dtype"


def test_blob_round_trips_after_arrays(pair):
    # Prepare
    writer, reader = pair
    blob = bytes(range(256)) * 10
    arrays = [("coef_", np.ones((2, 3)))]
    # Execute
    write_frame(writer, {"type": "t"}, arrays, blob=blob, blob_format="skops")
    frame, _ = read_frame(reader)
    in_memory = decode_frame(frame_to_bytes({"type": "t"}, arrays, blob=b""))
    # Assert
    assert frame.blob == blob
    assert frame.header["blob"] == {"format": "skops", "size": len(blob)}
    assert_arrays_equal(frame.arrays, arrays)
    assert in_memory.blob == b""


def test_encode_fills_descriptors_in_place_and_reports_json_errors():
    # Prepare
    header = {"type": "t", "arrays": "stale", "blob": "stale"}
    # Execute
    encode_frame(header, [("a", np.zeros(2))])
    with pytest.raises(ProtocolError) as nan_info:
        encode_frame({"type": "t", "x": float("nan")})
    with pytest.raises(ProtocolError) as big_info:
        encode_frame({"type": "t", "x": "y" * (1 << 20)})
    # Assert
    assert header["arrays"] == [{"name": "a", "dtype": "<f8", "shape": [2]}] and "blob" not in header
    assert nan_info.value.code == "json"
    assert big_info.value.code == "header_too_large"


def test_json_safe_turns_non_finite_and_numpy_values_into_json():
    # Prepare
    metrics = {"loss": float("nan"), "acc": np.float32(0.5), "n": np.int64(3), "inf": np.inf,
               "ok": np.bool_(True), "per_class": np.array([1.0, np.nan]), "t": (1, 2)}
    # Execute
    safe = json_safe(metrics)
    text = json.dumps(safe, allow_nan=False)
    # Assert
    assert json.loads(text) == {"loss": None, "acc": 0.5, "n": 3, "inf": None, "ok": True,
                                "per_class": [1.0, None], "t": [1, 2]}



# ---------------------------------------------------------- malformed frames

BODY8 = {"type": "t", "arrays": [{"name": "a", "dtype": "<f8", "shape": [1]}]}


@pytest.mark.parametrize("data, code", [
    (b"FLW2" + prefix(2, 0)[4:] + b"{}", "magic"),
    (prefix(1 << 20 | 1, 0), "header_too_large"),
    (prefix(0, 0), "length"),
    (prefix(10, (256 << 20) + 1), "body_too_large"),
    (b"FLW1\x00", "length"),
    (raw_frame(b"{not json"), "json"),
    (raw_frame(b"\xff\xfe{}"), "json"),
    (raw_frame(b'{"type": "t", "x": NaN}'), "json"),
    (raw_frame(b'{"type": "t", "x": 1e999}'), "json"),
    (raw_frame(b"[1, 2]"), "json"),
    (raw_frame({"no_type": 1}), "json"),
    (raw_frame({"type": 3}), "json"),
    (raw_frame({"type": "t", "arrays": {"a": 1}}), "json"),
    (raw_frame({"type": "t", "arrays": [{"dtype": "<f8", "shape": [1]}]}, b"\0" * 8), "json"),
    (raw_frame({"type": "t", "arrays": [{"name": "a", "dtype": "|O", "shape": [1]}]}, b"\0" * 8), "dtype"),
    (raw_frame({"type": "t", "arrays": [{"name": "a", "dtype": "<f2", "shape": [1]}]}, b"\0" * 2), "dtype"),
    (raw_frame({"type": "t", "arrays": [{"name": "a", "dtype": "<c16", "shape": [1]}]}, b"\0" * 16), "dtype"),
    (raw_frame({"type": "t", "arrays": [{"name": "a", "dtype": ">f8", "shape": [1]}]}, b"\0" * 8), "dtype"),
    (raw_frame({"type": "t", "arrays": [{"name": "a", "dtype": "<f8", "shape": [-1]}]}), "shape"),
    (raw_frame({"type": "t", "arrays": [{"name": "a", "dtype": "<f8", "shape": [1.0]}]}, b"\0" * 8), "shape"),
    (raw_frame({"type": "t", "arrays": [{"name": "a", "dtype": "<f8", "shape": 1}]}, b"\0" * 8), "shape"),
    (raw_frame({"type": "t", "arrays": [{"name": "a", "dtype": "<f8", "shape": [1 << 40, 1 << 40]}]}),
     "shape"),
    (raw_frame({"type": "t", "arrays": [{"name": "a", "dtype": "<f8", "shape": [1 << 20, 1 << 10]}]}),
     "body_too_large"),
    (raw_frame(BODY8, b"\0" * 7), "length"),
    (raw_frame(BODY8, b"\0" * 9), "length"),
    (raw_frame(BODY8, b"\0" * 8) + b"\0", "length"),
    (raw_frame(BODY8, b"\0" * 8)[:-1], "length"),
    (raw_frame({"type": "t", "blob": {"format": "skops", "size": -1}}), "blob"),
    (raw_frame({"type": "t", "blob": {"size": 0}}), "blob"),
    (raw_frame({"type": "t", "blob": {"format": "skops", "size": 4}}, b"abc"), "length"),
    (raw_frame({"type": "t", "arrays": [{"name": "a", "dtype": "|b1", "shape": [2]}]}, b"\x01\x07"), "dtype"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_malformed_frames_are_rejected_with_their_code(data, code):
    # Prepare: data/code from the table above
    # Execute + Assert
    expect_code(code, data)


def test_limits_are_the_receivers_own():
    # Prepare
    data = frame_to_bytes({"type": "t", "pad": "x" * 100}, [("a", np.zeros(100))])
    # Execute
    small_header = pytest.raises(ProtocolError, decode_frame, data, Limits(max_header_bytes=64))
    small_body = pytest.raises(ProtocolError, decode_frame, data, Limits(max_message_bytes=799))
    # Assert
    assert small_header.value.code == "header_too_large"
    assert small_body.value.code == "body_too_large"
    assert decode_frame(data, Limits(max_message_bytes=800)).arrays[0][1].shape == (100,)


@pytest.mark.parametrize("first_bytes, limits, code", [
    (prefix(10, 2048), Limits(max_message_bytes=1024, frame_timeout_s=5), "body_too_large"),
    (prefix(4096, 0), Limits(max_header_bytes=1024, frame_timeout_s=5), "header_too_large"),
    (b"HTTP/1.1 200 OK\r\n", Limits(frame_timeout_s=5), "magic"),
])
def test_lengths_are_checked_before_reading_what_they_guard(pair, first_bytes, limits, code):
    # Prepare: only the prefix is sent; reading on would block for frame_timeout_s
    writer, reader = pair
    writer.sendall(first_bytes[:16])
    start = time.monotonic()
    # Execute
    with pytest.raises(ProtocolError) as info:
        read_frame(reader, limits, idle_timeout=5)
    # Assert
    assert info.value.code == code
    assert time.monotonic() - start < 1.0


def test_body_length_mismatch_is_detected_before_the_body_is_read(pair):
    # Prepare: header needs 8 body bytes, prefix claims 100, no body is ever sent
    writer, reader = pair
    raw = json.dumps(BODY8).encode()
    writer.sendall(prefix(len(raw), 100) + raw)
    start = time.monotonic()
    # Execute
    with pytest.raises(ProtocolError) as info:
        read_frame(reader, Limits(frame_timeout_s=5), idle_timeout=5)
    # Assert
    assert info.value.code == "length"
    assert time.monotonic() - start < 1.0


# ------------------------------------------------------- timeouts and EOF


@pytest.mark.parametrize("sent", ["prefix", "header", "body"])
def test_peer_stalling_mid_frame_times_out(pair, sent):
    # Prepare
    writer, reader = pair
    full = frame_to_bytes({"type": "t"}, [("a", np.zeros(16))])
    cut = {"prefix": 7, "header": 20, "body": len(full) - 5}[sent]
    writer.sendall(full[:cut])
    start = time.monotonic()
    # Execute
    with pytest.raises(ProtocolError) as info:
        read_frame(reader, Limits(frame_timeout_s=0.3), idle_timeout=5)
    # Assert
    elapsed = time.monotonic() - start
    assert info.value.code == "timeout"
    assert 0.25 <= elapsed < 2.0


def test_idle_timeout_consumes_nothing(pair):
    # Prepare
    writer, reader = pair
    start = time.monotonic()
    # Execute
    with pytest.raises(TimeoutError):
        read_frame(reader, idle_timeout=0.1)
    idle = time.monotonic() - start
    write_frame(writer, {"type": "ping", "t": 1.0})
    frame, _ = read_frame(reader, idle_timeout=5)
    # Assert
    assert idle < 1.0
    assert frame.header == {"type": "ping", "t": 1.0}


@pytest.mark.parametrize("cut", [0, 10, 30])
def test_eof_raises_peer_closed(pair, cut):
    # Prepare
    writer, reader = pair
    writer.sendall(frame_to_bytes({"type": "t"}, [("a", np.zeros(4))])[:cut])
    writer.close()
    # Execute + Assert
    with pytest.raises(PeerClosed):
        read_frame(reader, Limits(frame_timeout_s=5), idle_timeout=5)


def test_frames_back_to_back_are_read_one_at_a_time(pair):
    # Prepare
    writer, reader = pair
    data = b"".join(frame_to_bytes({"type": "t", "i": i}, [("a", np.full(3, i))]) for i in range(5))
    writer.sendall(data)
    # Execute
    frames = [read_frame(reader, idle_timeout=5)[0] for _ in range(5)]
    # Assert
    assert [f.header["i"] for f in frames] == list(range(5))
    assert [int(f.arrays[0][1][0]) for f in frames] == list(range(5))
