"""The header decoder's fast path (json's C decoder alone) reads every header exactly as the checked one does.

``fl.wire.codec._decode_header`` skips the per-number hooks and the walk over
strings when the text cannot hold what they refuse (an integer beyond 2^53,
a float that overflows, a lone surrogate). These tests hold the two paths
to the same answer on any JSON, honest or hostile.
"""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fl.wire.codec import _CHECKED_DECODER, _check_strings, _decode_header
from fl.wire.fields import MAX_EXACT_INT, ProtocolError


def checked(text: str):
    """The reference: every number through its hook, every string walked."""
    value = _CHECKED_DECODER.decode(text)
    _check_strings(value)
    return value


def fast_path(text: str):
    return _decode_header(text.encode("utf-8"))


def outcome(fn, text: str):
    try:
        return ("ok", fn(text))
    except ProtocolError as exc:
        return ("refused", exc.code)
    except ValueError:
        return ("not json", None)


def same(a, b) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


numbers = st.one_of(
    st.integers(min_value=-(10**20), max_value=10**20),
    st.integers(min_value=MAX_EXACT_INT - 3, max_value=MAX_EXACT_INT + 3),
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=1e15, max_value=1e300),
)
texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20)
values = st.recursive(st.none() | st.booleans() | numbers | texts,
                      lambda inner: st.lists(inner, max_size=5) | st.dictionaries(texts, inner, max_size=5),
                      max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(values)
def test_any_header_an_encoder_writes_reads_the_same_on_both_paths(value):
    # Prepare: the header as a sender's json.dumps writes it
    text = json.dumps({"type": "x", "v": value}, ensure_ascii=False)
    # Execute
    fast, reference = outcome(fast_path, text), outcome(checked, text)
    # Assert
    assert fast[0] == reference[0]
    assert same(fast[1], reference[1])


HOSTILE = [
    '{"type":"x","n":9007199254740993}',  # 2^53 + 1
    '{"type":"x","n":-9007199254740993}',
    '{"type":"x","n":[1,2,123456789012345678901234567890]}',
    '{"type":"x","n":' + "9" * 4000 + "}",
    '{"type":"x","f":1e400}',
    '{"type":"x","f":-1E+309}',
    '{"type":"x","f":' + "1" * 400 + ".5}",
    '{"type":"x","s":"\\ud800"}',
    '{"type":"x","s":"\\uDFFF tail"}',
    '{"\\udc00":1,"type":"x"}',
    '{"type":"x","f":NaN}',
    '{"type":"x","f":-Infinity}',
]


@pytest.mark.parametrize("text", HOSTILE)
def test_what_the_checks_refuse_is_refused_on_the_fast_path_too(text):
    # Execute
    fast, reference = outcome(fast_path, text), outcome(checked, text)
    # Assert: refused both ways, with the same code
    assert reference[0] in ("refused", "not json")
    assert fast == reference


def test_honest_floats_of_seventeen_digits_take_the_fast_path_and_stay_exact():
    # Prepare: a metric as repr writes it (17 significant digits), a count, a 2^53 edge
    text = json.dumps({"type": "fit_result", "metrics": {"loss": 0.30258509299404568}, "n": MAX_EXACT_INT})
    # Execute
    header = fast_path(text)
    # Assert
    assert header["metrics"]["loss"] == 0.30258509299404568 and header["n"] == MAX_EXACT_INT
    assert math.isfinite(header["metrics"]["loss"])
