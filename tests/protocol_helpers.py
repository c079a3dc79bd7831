"""Frame builders and comparisons shared by the protocol tests (socket-pair fixtures are in conftest)."""

from __future__ import annotations

import dataclasses
import json
import struct

import numpy as np
import pytest

from fl.wire import (
    MAGIC,
    Limits,
    ProtocolError,
    decode_frame,
)


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
