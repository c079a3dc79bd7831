"""Global models built from whole client models: soft voting and stacking.

They follow scikit-learn's conventions (constructor stores parameters, ``fit``
returns self, fitted attributes end in ``_``) so the global model of an
ensemble run is a real estimator: ``predict`` / ``predict_proba`` on the
(standardised) features, savable with joblib and sendable with skops.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression

from fl.learning.metrics import aligned_proba


class SoftVotingEnsemble(ClassifierMixin, BaseEstimator):
    """Weighted mean of the members' class probabilities (weights: samples)."""

    def __init__(self, estimators: Sequence[Any] = (), weights: Sequence[float] | None = None, classes: Sequence = ()):
        self.estimators = estimators
        self.weights = weights
        self.classes = classes

    def fit(self, X: Any = None, y: Any = None) -> "SoftVotingEnsemble":
        """Members are already fitted; this only fixes classes and weights."""
        if not self.estimators:
            raise ValueError("a voting ensemble needs at least one fitted model")
        self.classes_ = np.asarray(self.classes)
        weights = np.ones(len(self.estimators)) if self.weights is None else np.asarray(self.weights, dtype=float)
        self.weights_ = weights / weights.sum()
        self.n_features_in_ = getattr(self.estimators[0], "n_features_in_", None)
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        probas = [aligned_proba(est, X, self.classes_) for est in self.estimators]
        return np.tensordot(self.weights_, np.stack(probas), axes=1)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


class StackingEnsemble(ClassifierMixin, BaseEstimator):
    """A meta-learner over the members' predicted probabilities.

    ``fit(X_val, y_val)`` trains the meta-learner on data none of the members
    saw (the server's validation split), as stacking requires.
    """

    def __init__(self, estimators: Sequence[Any] = (), classes: Sequence = (), meta_C: float = 1.0, random_state: int = 0):
        self.estimators = estimators
        self.classes = classes
        self.meta_C = meta_C
        self.random_state = random_state

    def _meta_features(self, X: np.ndarray) -> np.ndarray:
        return np.hstack([aligned_proba(est, X, self.classes_) for est in self.estimators])

    def fit(self, X: np.ndarray, y: np.ndarray) -> "StackingEnsemble":
        if not self.estimators:
            raise ValueError("stacking needs at least one fitted client model")
        self.classes_ = np.asarray(self.classes)
        self.n_features_in_ = X.shape[1]
        meta = LogisticRegression(C=self.meta_C, max_iter=1000, random_state=self.random_state)
        present = np.unique(y)
        if len(present) < 2:
            raise ValueError("the validation split holds a single class; stacking cannot fit its meta-learner")
        meta.fit(self._meta_features(X), y)
        self.meta_ = meta
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return aligned_proba(self.meta_, self._meta_features(X), self.classes_)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]
