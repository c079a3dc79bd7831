"""Aggregation math: small pure functions over client results, plus ensembles.

A *result* is one client's parameter arrays and its sample count:
``results: list[tuple[list[np.ndarray], int]]``. Every rule returns the new
global arrays, in the same order and shapes. The functions never mutate
their inputs and never look at which client sent what, so they are easy to
check against hand-computed vectors (tests/test_strategies.py).

Whole-model aggregations (``stacking``, ``voting``) turn fitted client models
into one global estimator (see fl.learning.ensemble). The strategy classes
around these functions are in fl.learning.strategies.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from fl.learning.ensemble import SoftVotingEnsemble, StackingEnsemble

Arrays = list[np.ndarray]
Results = list[tuple[Arrays, int]]

def _check(results: Results) -> None:
    if not results:
        raise ValueError("no client results to aggregate")
    first = [a.shape for a in results[0][0]]
    for arrays, n in results:
        if [a.shape for a in arrays] != first:
            raise ValueError("client results disagree on array shapes")
        if n < 0:
            raise ValueError("a client reported a negative sample count")


def fedavg(results: Results) -> Arrays:
    """Sample-weighted mean per array (McMahan et al., 2017).

    w = sum_k (n_k / n) * w_k. With every count zero, an unweighted mean.
    """
    _check(results)
    counts = np.array([n for _, n in results], dtype=np.float64)
    weights = counts / counts.sum() if counts.sum() > 0 else np.full(len(results), 1.0 / len(results))
    return [
        np.tensordot(weights, np.stack([arrays[i] for arrays, _ in results]).astype(np.float64), axes=1)
        for i in range(len(results[0][0]))
    ]


def scaffold(results: Results, n_model: int, control: Arrays, pool_rows: int) -> tuple[Arrays, Arrays]:
    """SCAFFOLD's server step (Karimireddy et al., 2020, with the server rate 1 and samples as weights).

    Each result holds ``n_model`` model arrays, then that client's change of
    control variate Δc_i (one array per model array). Returns the new global
    arrays, the sample-weighted mean of the models (FedAvg), and the new
    server variate c + Σ_{sampled} n_i Δc_i / N, N = ``pool_rows`` (the rows
    of every client, sampled or not; at least the sampled ones): c stays the
    row-weighted mean of all the clients' variates.
    """
    _check(results)
    models = fedavg([(arrays[:n_model], n) for arrays, n in results])
    total = float(max(pool_rows, sum(n for _, n in results)))
    changes = [sum(n * np.asarray(arrays[n_model + i], dtype=np.float64) for arrays, n in results) / total
               for i in range(n_model)]
    return models, [np.asarray(c, dtype=np.float64) + d for c, d in zip(control, changes)]


def summed(results: Results) -> Arrays:
    """Each array summed over the clients, in the order given (client id: the same sum every time).

    The one sum path: histograms of boosted trees and quantile-sketch counts
    go through it, unweighted (each client's sums already count its rows).
    """
    _check(results)
    return [np.sum(np.stack([np.asarray(arrays[i], dtype=np.float64) for arrays, _ in results]), axis=0)
            for i in range(len(results[0][0]))]


def median(results: Results) -> Arrays:
    """Coordinate-wise median, unweighted (Yin et al., 2018).

    Each coordinate independently takes the median of the clients' values, so
    fewer than half the clients cannot drag it arbitrarily far.
    """
    _check(results)
    return [np.median(np.stack([arrays[i] for arrays, _ in results]).astype(np.float64), axis=0)
            for i in range(len(results[0][0]))]


def trimmed_mean(results: Results, beta: float = 0.2) -> Arrays:
    """Coordinate-wise trimmed mean (Yin et al., 2018), unweighted.

    Per coordinate, drop the ``int(beta * n)`` largest and smallest values
    and average the rest.
    """
    _check(results)
    if not 0.0 <= beta < 0.5:
        raise ValueError(f"trim beta must be in [0, 0.5), got {beta}")
    n = len(results)
    cut = int(beta * n)
    if n - 2 * cut < 1:
        raise ValueError(f"trimming {cut} of {n} values from each end leaves nothing to average")
    out = []
    for i in range(len(results[0][0])):
        stacked = np.sort(np.stack([arrays[i] for arrays, _ in results]).astype(np.float64), axis=0)
        out.append(stacked[cut:n - cut].mean(axis=0))
    return out


def krum(results: Results, num_malicious: int = 0, num_to_keep: int = 0) -> Arrays:
    """Krum and multi-Krum (Blanchard et al., 2017).

    Each update's score is the sum of squared distances to its
    ``n - num_malicious - 2`` nearest other updates (at least one). With
    ``num_to_keep == 0`` the lowest-scoring update is returned as it is;
    with ``num_to_keep = k`` the sample-weighted mean of the k best.
    """
    _check(results)
    n = len(results)
    if num_malicious < 0 or num_to_keep < 0:
        raise ValueError("num_malicious and num_to_keep must be >= 0")
    flat = np.stack([np.concatenate([a.ravel() for a in arrays]).astype(np.float64) for arrays, _ in results])
    sq = (flat**2).sum(axis=1)
    distances = np.maximum(sq[:, None] + sq[None, :] - 2.0 * flat @ flat.T, 0.0)
    closest = max(1, min(n - 1, n - num_malicious - 2)) if n > 1 else 0
    scores = np.array([np.sort(np.delete(distances[i], i))[:closest].sum() for i in range(n)])
    order = np.argsort(scores, kind="stable")
    if num_to_keep == 0:
        return [a.astype(np.float64, copy=True) for a in results[int(order[0])][0]]
    keep = order[: min(num_to_keep, n)]
    return fedavg([results[int(i)] for i in keep])


def voting(models: Sequence[Any], sample_counts: Sequence[int], classes: Sequence) -> SoftVotingEnsemble:
    """Soft vote of the client models, weighted by their sample counts."""
    return SoftVotingEnsemble(list(models), list(map(float, sample_counts)), list(classes)).fit()


def stacking(models: Sequence[Any], classes: Sequence, X_val: np.ndarray, y_val: np.ndarray,
             seed: int = 0) -> StackingEnsemble:
    """A logistic-regression meta-learner over the client models' probabilities,
    fit on the server's validation split (data no client model was trained on)."""
    return StackingEnsemble(list(models), list(classes), random_state=seed).fit(X_val, y_val)
