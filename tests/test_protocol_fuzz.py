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
