"""Gaussian naive Bayes: per-class counts, means and variances, merged exactly.

Averaging (or taking medians of) variances would be wrong, so the server
merges the statistics with the parallel-variance formula, which equals the
statistics of the pooled data exactly. One round says it all.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.naive_bayes import GaussianNB

from fl.learning.models.base import ModelAdapter, NamedArrays, as_f64


class GaussianNBAdapter(ModelAdapter):
    name = "gaussian_nb"
    label = "Gaussian naive Bayes"
    fixed_defaults = {"var_smoothing": 1e-9}
    averageable = True
    exact_merge = True

    def make(self, params: dict, seed: int) -> GaussianNB:
        return GaussianNB(**params)

    def expected_shapes(self, params: dict | None, classes: Any, n_features: int) -> list[tuple[str, tuple]]:
        k = len(classes)
        return [("theta_", (k, n_features)), ("var_", (k, n_features)), ("class_count_", (k,))]

    def get_parameters(self, estimator: Any) -> NamedArrays:
        # var_ is sent without scikit-learn's smoothing epsilon so that the
        # server can merge exact variances and add one global epsilon.
        raw_var = np.maximum(estimator.var_ - estimator.epsilon_, 0.0)
        return [("theta_", as_f64(estimator.theta_)), ("var_", as_f64(raw_var)),
                ("class_count_", as_f64(estimator.class_count_))]

    def fit_whole(self, params: dict | None, X: np.ndarray, y: np.ndarray, classes: np.ndarray, seed: int) -> Any:
        return self.build(params, seed).partial_fit(X, y, classes=classes)

    def merge(self, results: list[tuple[list[np.ndarray], int]]) -> list[np.ndarray]:
        """Per class c over clients i: n = Σ n_i, mean = Σ n_i μ_i / n, var = Σ n_i (v_i + μ_i²) / n − mean²."""
        theta = np.stack([r[0][0] for r in results]).astype(np.float64)
        var = np.stack([r[0][1] for r in results]).astype(np.float64)
        counts = np.stack([r[0][2] for r in results]).astype(np.float64)  # (clients, k)
        total = counts.sum(axis=0)  # (k,)
        safe = np.where(total > 0, total, 1.0)[:, None]
        w = counts[:, :, None]
        mean = (w * theta).sum(axis=0) / safe
        second = (w * (var + theta**2)).sum(axis=0) / safe
        merged_var = np.maximum(second - mean**2, 0.0)
        mean[total == 0] = 0.0
        merged_var[total == 0] = 0.0
        return [mean, merged_var, total]

    def global_estimator(self, params: dict | None, arrays: NamedArrays, classes: Any, n_features: int) -> Any:
        """GaussianNB from exact per-class counts, means and variances.

        The smoothing epsilon is recomputed as scikit-learn does it, from the
        variance of the whole (merged) data: law of total variance over classes.
        """
        est = self.build(params, 0)
        values = dict(arrays)
        counts, theta, var = as_f64(values["class_count_"]), as_f64(values["theta_"]), as_f64(values["var_"])
        total = counts.sum()
        if total <= 0:
            raise ValueError("Gaussian naive Bayes statistics hold no samples")
        mean = counts @ theta / total
        overall_var = counts @ (var + theta**2) / total - mean**2
        est.epsilon_ = float(est.var_smoothing * max(float(np.max(overall_var)), 0.0))
        est.classes_ = np.asarray(classes)
        est.theta_ = theta.copy()
        est.var_ = var + est.epsilon_
        est.class_count_ = counts.copy()
        est.class_prior_ = counts / total
        est.n_features_in_ = n_features
        return est
