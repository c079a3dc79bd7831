"""Models that cannot be averaged: trees, forests, boosting, nearest neighbours.

Their fitted trees or stored neighbours have no common parameter shape, so
each client fits one from scratch and the whole fitted model travels (a skops
blob) to be combined by stacking or voting, in one round.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.neighbors import KNeighborsClassifier
from sklearn.tree import DecisionTreeClassifier

from fl.learning.models.base import Hyper, ModelAdapter

TREES = Hyper("n_estimators", "Trees", 100, low=5, high=300)


class RandomForestAdapter(ModelAdapter):
    name = "random_forest"
    label = "Random forest"
    hyperparameters: ClassVar[tuple[Hyper, ...]] = (
        TREES, Hyper("max_depth", "Max depth (0 = unlimited)", None, low=0, high=30, zero_is_none=True))

    def make(self, params: dict, seed: int) -> RandomForestClassifier:
        return RandomForestClassifier(random_state=seed, n_jobs=1, **params)


class GradientBoostingAdapter(ModelAdapter):
    name = "gradient_boosting"
    label = "Gradient boosting"
    hyperparameters: ClassVar[tuple[Hyper, ...]] = (
        TREES, Hyper("max_depth", "Max depth (0 = unlimited)", 3, low=0, high=30, zero_is_none=True))
    fixed_defaults: ClassVar[dict[str, Any]] = {"learning_rate": 0.1}

    def make(self, params: dict, seed: int) -> GradientBoostingClassifier:
        return GradientBoostingClassifier(random_state=seed, **params)


class KNeighborsAdapter(ModelAdapter):
    name = "knn"
    label = "k-nearest neighbours"
    hyperparameters: ClassVar[tuple[Hyper, ...]] = (Hyper("n_neighbors", "Neighbours k", 5, low=1, high=50),)

    def make(self, params: dict, seed: int) -> KNeighborsClassifier:
        return KNeighborsClassifier(**params)

    def ready_for_whole_fit(self, estimator: Any, X: np.ndarray) -> Any:
        """k is capped at the local row count: a small client still fits."""
        return estimator.set_params(n_neighbors=min(int(estimator.n_neighbors), len(X)))


class DecisionTreeAdapter(ModelAdapter):
    name = "decision_tree"
    label = "Decision tree"
    hyperparameters: ClassVar[tuple[Hyper, ...]] = (
        Hyper("max_depth", "Max depth (0 = unlimited)", None, low=0, high=30, zero_is_none=True),)

    def make(self, params: dict, seed: int) -> DecisionTreeClassifier:
        return DecisionTreeClassifier(random_state=seed, **params)
