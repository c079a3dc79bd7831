"""Property tests: random arrays round-trip; random or mutated bytes only ever raise ProtocolError."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fl.wire import (
    ALLOWED_DTYPES,
    MAGIC,
    Frame,
    Limits,
    Ping,
    ProtocolError,
    decode_frame,
    frame_to_bytes,
    parse_message,
)
from tests.protocol_helpers import (
    assert_arrays_equal,
    raw_frame,
)

pytestmark = pytest.mark.timeout(30)

SHAPES = [(), (0,), (5,), (2, 3), (2, 0, 3), (2, 3, 4)]


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


# ------------------------------------------------------------------ hostile values in every field (issue 23)

_HOSTILE = [10**400, -(10**400), 2**53 + 1, 10**15, "\ud800", "ok\udfff", 1e308, -1e308, True, None, "", "x" * 300,
            [], {}, [10**400], {"k": "\ud800"}, -1, 0, 0.5]

_VALID_HEADERS = {
    "hello": {"type": "hello", "protocol": 1, "client_id": "c1", "token": "t", "n_samples": 10, "n_features": 4,
              "features": ["summary"]},
    "welcome": {"type": "welcome", "run_id": "r", "task": {"model": "logreg", "model_params": {"C": 1.0},
                "n_features": 4, "classes": [0, 1], "feature_names": ["a", "b", "c", "d"],
                "preprocess": {"standardize": {"mean": [0, 0, 0, 0], "scale": [1, 1, 1, 1]}}}, "heartbeat_s": 5,
                "heartbeat_misses": 3},
    "fit": {"type": "fit", "round": 1, "config": {"return": "parameters", "local_epochs": 1, "pool_rows": 10}},
    "fit_result": {"type": "fit_result", "round": 1, "n_samples": 8, "metrics": {"train_loss": 0.5},
                   "metadata": {"train_time_s": 0.1, "epoch_losses": [0.5], "converged": None, "samples_used": 8,
                                "update_norm": 1.0}},
    "evaluate": {"type": "evaluate", "round": 1},
    "evaluate_result": {"type": "evaluate_result", "round": 1, "n_samples": 3, "metrics": {"accuracy": 0.5},
                        "confusion": [[1, 1], [0, 1]]},
    "ping": {"type": "ping", "t": 1.0},
    "pong": {"type": "pong", "t": 1.0},
    "bye": {"type": "bye", "reason": "run finished", "final_metrics": {"accuracy": 0.9}},
    "error": {"type": "error", "code": "x", "message": "y"},
    "summarize": {"type": "summarize", "min_category_count": 5, "target": "y", "local_test_size": 0.2},
    "summary": {"type": "summary", "rows": 10, "labels": [["a", 6], ["b", 4]],
                "columns": [{"name": "x", "kind": "numeric", "missing": 0, "count": 8, "sum": 4.0, "sum_sq": 4.0,
                             "min": 0.0, "max": 1.0},
                            {"name": "c", "kind": "category", "missing": 0, "values": {"u": 8}, "other": 0}],
                "report": {"notes": ["n"]}},
}


def _paths(value, path=()):
    """Every place in a JSON value (dict keys and list items), as a path of keys and indices."""
    yield path
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, path + (i,))


def _replaced(header, path, value):
    import copy

    out = copy.deepcopy(header)
    if not path:
        return out
    target = out
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return out


@pytest.mark.parametrize("msg_type", sorted(_VALID_HEADERS))
def test_a_hostile_value_anywhere_is_a_protocol_error_or_a_sendable_message(msg_type):
    """Every field of every message type (optional extensions included), replaced by each hostile value: the
    receiver raises ProtocolError or gets a message it can send on again, never another exception."""
    # Prepare
    header = _VALID_HEADERS[msg_type]
    assert parse_message(decode_frame(raw_frame(header))) is not None  # the valid one parses
    for path in list(_paths(header))[1:]:
        if path == ("type",):
            continue
        for value in _HOSTILE:
            data = raw_frame(_replaced(header, path, value))
            # Execute
            try:
                msg = parse_message(decode_frame(data))
            except ProtocolError:
                continue
            # Assert: what parses can be encoded again (no huge integer, no surrogate, nothing non-finite)
            frame_to_bytes(*msg.to_frame())
