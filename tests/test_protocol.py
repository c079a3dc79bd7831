"""Wire protocol v1 (fl.protocol): framing, limits, typed messages, Connection.

Only loopback sockets (socket.socketpair or 127.0.0.1); every socket has a
timeout and is closed by its fixture.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import struct
import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fl.protocol import (
    ALLOWED_DTYPES, CLIENT_ID_PATTERN, MAGIC, PROTOCOL_VERSION, Bye, Connection, Error, Evaluate,
    EvaluateResult, Fit, FitResult, Frame, Hello, Limits, PeerClosed, Ping, Pong, ProtocolError,
    Welcome, decode_frame, encode_frame, frame_to_bytes, json_safe, parse_message, read_frame,
    write_frame,
)

pytestmark = pytest.mark.timeout(30)

SHAPES = [(), (0,), (5,), (2, 3), (2, 0, 3), (2, 3, 4)]


# ------------------------------------------------------------------ helpers


def _close_all(*socks: socket.socket) -> None:
    for s in socks:
        s.close()


@pytest.fixture
def unix_pair():
    a, b = socket.socketpair()
    a.settimeout(5)
    b.settimeout(5)
    yield a, b
    _close_all(a, b)


@pytest.fixture
def tcp_pair():
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(5)
    client = socket.create_connection(listener.getsockname(), timeout=5)
    server, _ = listener.accept()
    server.settimeout(5)
    listener.close()
    yield client, server
    _close_all(client, server)


@pytest.fixture(params=["socketpair", "tcp"])
def pair(request):
    """A connected (writer, reader) pair, over both transports."""
    return request.getfixturevalue("unix_pair" if request.param == "socketpair" else "tcp_pair")


def sample_array(dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    n = int(np.prod(shape))
    if dtype == "|b1":
        return (np.arange(n) % 3 == 0).reshape(shape)
    return (np.arange(n) * 3 - 7).astype(dtype).reshape(shape)


def prefix(header_len: int, body_len: int, magic: bytes = MAGIC) -> bytes:
    return struct.pack(">4sIQ", magic, header_len, body_len)


def raw_frame(header: dict | bytes, body: bytes = b"") -> bytes:
    """A frame built by hand, bypassing encode_frame's own checks."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return prefix(len(raw), len(body)) + raw + body


def assert_arrays_equal(got, expected) -> None:
    assert [n for n, _ in got] == [n for n, _ in expected]
    for (_, g), (_, e) in zip(got, expected):
        assert g.dtype == e.dtype and g.shape == e.shape
        assert g.tobytes() == e.tobytes()


def assert_messages_equal(got, expected) -> None:
    assert type(got) is type(expected)
    for f in dataclasses.fields(expected):
        g, e = getattr(got, f.name), getattr(expected, f.name)
        if f.name == "params" and e is not None:
            assert_arrays_equal(g, e)
        else:
            assert g == e, f.name


def expect_code(code: str, data: bytes, limits: Limits = Limits()) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_frame(data, limits)
    assert info.value.code == code, str(info.value)


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


# ------------------------------------------------------------ typed messages

W = [("coef_", np.arange(6, dtype="<f8").reshape(1, 6)), ("intercept_", np.array([0.5]))]
TASK = {"model": "logreg", "model_params": {"C": 1.0}, "n_features": 6, "classes": [0, 1],
        "feature_names": list("abcdef"), "preprocess": {"standardize": {"mean": [0.0] * 6, "scale": [1.0] * 6}}}
MESSAGES = [
    Hello(client_id="site-1", n_samples=100, n_features=6, token="s3cret"),
    Hello(client_id="a.b_C-9", n_samples=1, n_features=0),
    Welcome(run_id="run-42", task=TASK),
    Welcome(run_id="r", task={"model": "gnb", "model_params": {}, "n_features": 2, "classes": ["x", "y"]}),
    Fit(round=1, config={"local_epochs": 2, "learning_rate": 0.1}, params=W),
    Fit(round=2, config={"local_epochs": 1}),
    FitResult(round=1, n_samples=50, metrics={"train_loss": 0.5, "train_time_s": 0.01}, params=W),
    FitResult(round=1, n_samples=50, metrics={"train_time_s": 0.2}, blob=b"skops bytes"),
    Evaluate(round=3, params=W),
    Evaluate(round=3, blob=b"\x00model"),
    EvaluateResult(round=3, n_samples=20, metrics={"loss": 0.3, "accuracy": 0.9}),
    Ping(t=1.5), Pong(t=1700000000.25),
    Bye(reason="done", final_metrics={"accuracy": 0.9}), Bye(reason="kicked"),
    Error(code="auth", message="bad token"),
]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips_in_memory(msg):
    # Prepare
    header, arrays, blob = msg.to_frame()
    # Execute
    parsed = parse_message(decode_frame(frame_to_bytes(header, arrays, blob)))
    # Assert
    assert header["type"] == type(msg).TYPE
    assert_messages_equal(parsed, msg)


def test_every_message_round_trips_through_connection(unix_pair):
    # Prepare
    a, b = unix_pair
    sender, receiver = Connection(a), Connection(b)
    got = []
    # Execute
    reader = threading.Thread(target=lambda: got.extend(receiver.recv(5) for _ in MESSAGES))
    reader.start()
    for msg in MESSAGES:
        sender.send(msg)
    reader.join(10)
    # Assert
    assert len(got) == len(MESSAGES)
    for parsed, msg in zip(got, MESSAGES):
        assert_messages_equal(parsed, msg)
    assert sender.bytes_sent == receiver.bytes_received > 0


def test_nan_metric_is_sent_as_null_and_extra_fields_are_ignored():
    # Prepare
    msg = EvaluateResult(round=1, n_samples=5, metrics={"loss": float("nan"), "accuracy": 1.0})
    extra = raw_frame({"type": "ping", "t": 2, "future_field": {"x": 1}})
    # Execute
    parsed = parse_message(decode_frame(frame_to_bytes(*msg.to_frame())))
    ping = parse_message(decode_frame(extra))
    # Assert
    assert parsed.metrics == {"loss": None, "accuracy": 1.0}
    assert ping == Ping(t=2.0)


def test_hello_with_other_protocol_version_is_parsed_not_rejected():
    # Prepare
    frame = decode_frame(raw_frame({"type": "hello", "protocol": 2, "client_id": "c1", "shiny": True}))
    odd = decode_frame(raw_frame({"type": "hello", "protocol": 0, "client_id": "not valid", "n_samples": "x"}))
    # Execute
    hello = parse_message(frame)
    odd_hello = parse_message(odd)
    # Assert
    assert isinstance(hello, Hello) and hello.protocol == 2 and hello.protocol != PROTOCOL_VERSION
    assert hello.client_id == "c1"
    assert odd_hello.protocol == 0 and odd_hello.client_id == "unknown" and odd_hello.n_samples == 0


HELLO = {"type": "hello", "protocol": 1, "client_id": "c1", "token": None, "n_samples": 3, "n_features": 2}


@pytest.mark.parametrize("header, code", [
    ({**HELLO, "client_id": ""}, "message"),
    ({**HELLO, "client_id": "x" * 65}, "message"),
    ({**HELLO, "client_id": "bad id"}, "message"),
    ({**HELLO, "client_id": "ok\n"}, "message"),
    ({**HELLO, "n_samples": 0}, "message"),
    ({**HELLO, "n_samples": True}, "message"),
    ({**HELLO, "n_samples": 2.0}, "message"),
    ({**HELLO, "protocol": "1"}, "message"),
    ({**HELLO, "token": 5}, "message"),
    ({"type": "welcome", "run_id": "r", "task": {"model": "m", "model_params": {}, "n_features": 1}}, "message"),
    ({"type": "welcome", "run_id": "r", "task": []}, "message"),
    ({"type": "fit", "round": 0, "config": {}}, "message"),
    ({"type": "fit", "round": 1}, "message"),
    ({"type": "fit_result", "round": 1, "n_samples": 3, "metrics": [1]}, "message"),
    ({"type": "evaluate", "round": -1}, "message"),
    ({"type": "evaluate_result", "round": 1, "n_samples": -1, "metrics": {}}, "message"),
    ({"type": "ping", "t": "now"}, "message"),
    ({"type": "bye", "reason": "x", "final_metrics": 3}, "message"),
    ({"type": "error", "code": "auth"}, "message"),
    ({"type": "no_such_message"}, "message"),
])
def test_invalid_message_fields_are_rejected(header, code):
    # Prepare
    frame = decode_frame(raw_frame(header))
    # Execute
    with pytest.raises(ProtocolError) as info:
        parse_message(frame)
    # Assert
    assert info.value.code == code


def test_result_blob_must_be_skops():
    # Prepare
    data = frame_to_bytes({"type": "fit_result", "round": 1, "n_samples": 2, "metrics": {}},
                          blob=b"\x80\x04pickle", blob_format="pickle")
    # Execute
    with pytest.raises(ProtocolError) as info:
        parse_message(decode_frame(data))
    # Assert
    assert info.value.code == "blob"


def test_client_id_pattern():
    # Prepare
    good, bad = ["a", "A-b_c.9", "x" * 64], ["", "x" * 65, "a b", "é", "a/b", "ok\n"]
    # Execute
    good_ok = [bool(CLIENT_ID_PATTERN.match(s)) for s in good]
    bad_ok = [bool(CLIENT_ID_PATTERN.match(s)) for s in bad]
    # Assert
    assert all(good_ok) and not any(bad_ok)


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


# -------------------------------------------------------------- Connection


def test_connection_recv_idle_timeout_then_message(unix_pair):
    # Prepare
    a, b = unix_pair
    sender, receiver = Connection(a), Connection(b)
    # Execute
    with pytest.raises(TimeoutError):
        receiver.recv(idle_timeout=0.05)
    sender.send(Ping(t=3.0))
    msg = receiver.recv(idle_timeout=5)
    # Assert
    assert msg == Ping(t=3.0)
    assert receiver.bytes_received == sender.bytes_sent


def test_connection_send_to_departed_peer_raises_peer_closed(pair):
    # Prepare
    writer, reader = pair
    conn = Connection(writer)
    reader.close()
    # Execute: TCP may accept the first writes before the reset arrives
    with pytest.raises(PeerClosed):
        for _ in range(200):
            conn.send(Fit(round=1, config={}, params=[("w", np.zeros(1000))]))
            time.sleep(0.005)
    # Assert
    assert conn.closed
    conn.send_error("full", "never raises")
    conn.close()


def test_connection_recv_after_peer_close_and_after_own_close(unix_pair):
    # Prepare
    a, b = unix_pair
    peer, conn = Connection(a), Connection(b)
    peer.close()
    # Execute + Assert
    with pytest.raises(PeerClosed):
        conn.recv(idle_timeout=5)
    conn.close()
    conn.close()
    with pytest.raises(PeerClosed):
        conn.recv(idle_timeout=1)
    with pytest.raises(PeerClosed):
        conn.send(Ping(t=0.0))


def test_close_wakes_a_blocked_reader(tcp_pair):
    # Prepare
    _, server = tcp_pair
    conn = Connection(server)
    outcome = []
    reader = threading.Thread(target=lambda: outcome.append(_recv_outcome(conn)))
    reader.start()
    time.sleep(0.1)
    # Execute
    conn.close()
    reader.join(5)
    # Assert
    assert outcome == ["PeerClosed"]


def _recv_outcome(conn: Connection) -> str:
    try:
        conn.recv(idle_timeout=None)
        return "message"
    except Exception as exc:
        return type(exc).__name__


def test_concurrent_senders_never_interleave_frames_and_big_messages_pass(tcp_pair):
    # Prepare: 4 threads send small fits while one 8 MB fit goes out; reader polls with short idle timeouts
    client, server = tcp_pair
    sender, receiver = Connection(client), Connection(server)
    big = np.random.default_rng(0).random(1 << 20)

    def send_many(k: int) -> None:
        for i in range(20):
            sender.send(Fit(round=k * 100 + i + 1, config={"k": k}, params=[("w", np.full(500, k, "<i4"))]))

    threads = [threading.Thread(target=send_many, args=(k,)) for k in range(4)]
    threads.append(threading.Thread(target=sender.send, args=(Fit(round=1, config={"big": True}, params=[("w", big)]),)))
    # Execute
    for t in threads:
        t.start()
    got = []
    while len(got) < 81:
        try:
            got.append(receiver.recv(idle_timeout=0.01))
        except TimeoutError:
            continue
    for t in threads:
        t.join(5)
    # Assert
    bigs = [m for m in got if m.config.get("big")]
    assert len(bigs) == 1 and np.array_equal(bigs[0].params[0][1], big)
    for m in got:
        if not m.config.get("big"):
            assert np.all(m.params[0][1] == m.config["k"])
    assert sender.bytes_sent == receiver.bytes_received


def test_protocol_error_is_raised_by_connection_recv(unix_pair):
    # Prepare
    a, b = unix_pair
    conn = Connection(b)
    a.sendall(raw_frame({"type": "fit", "round": 0, "config": {}}))
    # Execute
    with pytest.raises(ProtocolError) as info:
        conn.recv(idle_timeout=5)
    # Assert
    assert info.value.code == "message"
    assert conn.bytes_received > 0


# ------------------------------------------------------------------ fuzzing

_array_strategy = st.sampled_from(ALLOWED_DTYPES).flatmap(
    lambda d: hnp.arrays(np.dtype(d), hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=8), _array_strategy), max_size=4),
       st.none() | st.binary(max_size=64))
def test_random_arrays_round_trip_exactly(arrays, blob):
    # Prepare
    data = frame_to_bytes({"type": "t"}, arrays, blob=blob)
    # Execute
    frame = decode_frame(data)
    # Assert
    assert_arrays_equal(frame.arrays, arrays)
    assert frame.blob == blob


def _only_protocol_errors(data: bytes) -> None:
    try:
        parse_message(decode_frame(data, Limits(max_message_bytes=1 << 16)))
    except ProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=256))
def test_random_bytes_only_raise_protocol_error(data):
    # Prepare: data from hypothesis, sometimes behind a valid magic
    # Execute + Assert
    _only_protocol_errors(data)
    _only_protocol_errors(MAGIC + data)


_VALID = frame_to_bytes({"type": "fit", "round": 1, "config": {}},
                        [("coef_", np.ones((2, 3))), ("mask", np.array([True, False]))], blob=b"blob")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(_VALID) - 1), st.integers(0, 255)), min_size=1, max_size=4),
       st.integers(0, len(_VALID)))
def test_mutated_frames_only_raise_protocol_error(flips, cut):
    # Prepare
    data = bytearray(_VALID)
    for pos, value in flips:
        data[pos] = value
    # Execute + Assert
    _only_protocol_errors(bytes(data))
    _only_protocol_errors(bytes(data[:cut]))


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                     | st.text(max_size=8), lambda kids: st.lists(kids, max_size=3)
                     | st.dictionaries(st.text(max_size=6), kids, max_size=3), max_leaves=8)
_fields = ["protocol", "client_id", "token", "n_samples", "n_features", "run_id", "task", "round", "config",
           "metrics", "t", "reason", "final_metrics", "code", "message", "arrays", "blob"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["hello", "welcome", "fit", "fit_result", "evaluate", "evaluate_result", "ping", "pong",
                        "bye", "error", "other"]),
       st.dictionaries(st.sampled_from(_fields), _json, max_size=6))
def test_random_headers_only_raise_protocol_error(msg_type, fields):
    # Prepare
    data = raw_frame({**fields, "type": msg_type})
    # Execute + Assert
    _only_protocol_errors(data)


def test_frame_dataclass_fields():
    # Prepare
    frame = Frame(header={"type": "ping", "t": 1}, arrays=[])
    # Execute
    msg = parse_message(frame)
    # Assert
    assert frame.blob is None and msg == Ping(t=1.0)
