"""Typed messages (fl.messages): round trips and field validation."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from fl.wire import (
    CLIENT_ID_PATTERN,
    PROTOCOL_VERSION,
    Bye,
    Error,
    Evaluate,
    EvaluateResult,
    Fit,
    FitResult,
    Hello,
    Ping,
    Pong,
    ProtocolError,
    Welcome,
    decode_frame,
    frame_to_bytes,
    parse_message,
)
from fl.wire.reference_peer import Connection
from tests.protocol_helpers import (
    assert_messages_equal,
    raw_frame,
)

pytestmark = pytest.mark.timeout(30)


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
