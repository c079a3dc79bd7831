"""Robust aggregation rules: hand-computed vectors and their defining properties."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fl.learning.aggregation import fedavg, krum, median, trimmed_mean


def _results(values, counts=None):
    counts = counts or [1] * len(values)
    return [([np.array(v, dtype=float)], n) for v, n in zip(values, counts)]


def test_median_by_hand():
    # Prepare: coordinates [1,5,3] -> 3 and [10,-2,4] -> 4 (unweighted even with weights)
    results = _results([[1.0, 10.0], [5.0, -2.0], [3.0, 4.0]], counts=[100, 1, 1])
    # Execute
    out = median(results)[0]
    # Assert
    np.testing.assert_allclose(out, [3.0, 4.0])


def test_trimmed_mean_by_hand():
    # Prepare: 5 values, beta=0.2 -> drop 1 from each end
    results = _results([[1.0], [2.0], [3.0], [4.0], [100.0]])
    # Execute / Assert
    np.testing.assert_allclose(trimmed_mean(results, beta=0.2)[0], [3.0])  # mean of 2, 3, 4
    np.testing.assert_allclose(trimmed_mean(results, beta=0.0)[0], [22.0])  # plain mean
    with pytest.raises(ValueError):
        trimmed_mean(results, beta=0.5)


def test_krum_picks_the_update_closest_to_its_neighbours():
    # Prepare: with f = 0 each score sums the squared distances to the n - 2 = 2 nearest others:
    # a=[10,10] huge; b=[0,.2]: .0229+.05=.0729; c=[.1,0]: .0089+.05=.0589; d=[.02,.05]: .0089+.0229=.0318
    updates = [[10.0, 10.0], [0.0, 0.2], [0.1, 0.0], [0.02, 0.05]]
    results = _results(updates, counts=[1, 1, 3, 1])
    # Execute
    best = krum(results, num_malicious=0)[0]
    multi = krum(results, num_malicious=0, num_to_keep=2)[0]
    # Assert: neither the first update nor any mean, but d; multi-Krum is the weighted mean of d and c
    np.testing.assert_allclose(best, [0.02, 0.05])
    np.testing.assert_allclose(multi, [(0.02 * 1 + 0.1 * 3) / 4, (0.05 * 1 + 0.0 * 3) / 4])


@pytest.mark.parametrize("rule", [median, lambda r: trimmed_mean(r, 0.2), lambda r: krum(r, 1)])
def test_one_huge_outlier_moves_robust_rules_little_and_fedavg_a_lot(rule):
    # Prepare
    honest = [[1.0 + 0.01 * i, -1.0] for i in range(9)]
    results = _results(honest + [[1e6, 1e6]])
    # Execute
    robust, mean = rule(results)[0], fedavg(results)[0]
    # Assert
    assert np.abs(robust - np.array([1.04, -1.0])).max() < 0.1
    assert np.abs(mean).max() > 1e4


@pytest.mark.parametrize("rule", [median, lambda r: trimmed_mean(r, 0.2), krum, lambda r: krum(r, 0, 2)])
def test_identical_inputs_give_the_input_back(rule):
    # Prepare
    w = [np.arange(6.0).reshape(2, 3), np.array([0.5])]
    # Execute
    out = rule([(w, 3), (w, 5), (w, 7), (w, 1), (w, 2)])
    # Assert
    for got, want in zip(out, w):
        np.testing.assert_allclose(got, want)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.floats(-100, 100), min_size=3, max_size=3), min_size=5, max_size=9), st.randoms())
def test_rules_are_permutation_invariant(values, rnd):
    # Prepare
    results = _results(values)
    shuffled = list(results)
    rnd.shuffle(shuffled)
    # Execute / Assert
    for rule in (median, lambda r: trimmed_mean(r, 0.2)):
        np.testing.assert_allclose(rule(results)[0], rule(shuffled)[0], atol=1e-9)
    # Krum's choice may tie; its score of the chosen update is what is invariant
    a, b = krum(results, 1)[0], krum(shuffled, 1)[0]
    assert any(np.allclose(a, v) for v in np.array(values)) and any(np.allclose(b, v) for v in np.array(values))
