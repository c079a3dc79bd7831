"""Histogram gradient-boosted trees that federate by statistics: ``hist_gbdt``.

No site sends a model or a parameter: each sends, per step, sums over its
rows (a quantile sketch of every feature once; then, for every level of
every tree, the sums of the gradients and hessians of the rows in each node,
per feature and bin), the server adds them up and grows the trees itself
(fl/learning/trees.py). The trees equal those grown on the pooled rows with
the same bins. The global model is ``HistGBDTClassifier``, a small numpy
estimator (``predict``, ``predict_proba``, ``feature_importances_``) that is
also what a site trains alone and what the centralized baseline trains.
"""

from __future__ import annotations

import hashlib
from numbers import Integral, Real
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils._param_validation import Interval

from fl.learning import trees as T
from fl.learning.models.base import Hyper, ModelAdapter, NamedArrays


class HistGBDTClassifier(ClassifierMixin, BaseEstimator):
    """Gradient-boosted trees on binned features (binary log loss or multiclass softmax).

    ``fit`` grows ``n_rounds`` rounds on the rows given, with bins from their
    own quantiles; the federated model is the same estimator with the bins
    and trees the server grew (``from_arrays``).
    """

    _parameter_constraints: ClassVar[dict] = {
        "max_depth": [Interval(Integral, 1, 10, closed="both")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "max_bins": [Interval(Integral, 2, 255, closed="both")],
        "l2_regularization": [Interval(Real, 0, None, closed="left")],
        "min_child_weight": [Interval(Real, 0, None, closed="left")],
        "min_gain": [Interval(Real, 0, None, closed="left")],
        "n_rounds": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(self, max_depth: int = 4, learning_rate: float = 0.3, max_bins: int = 64,
                 l2_regularization: float = 1.0, min_child_weight: float = 1.0, min_gain: float = 0.0,
                 n_rounds: int = 20):
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.max_bins = max_bins
        self.l2_regularization = l2_regularization
        self.min_child_weight = min_child_weight
        self.min_gain = min_gain
        self.n_rounds = n_rounds

    def settings(self) -> T.Settings:
        return T.Settings(max_depth=int(self.max_depth), learning_rate=float(self.learning_rate),
                          l2=float(self.l2_regularization), min_child_weight=float(self.min_child_weight),
                          min_gain=float(self.min_gain))

    def fit(self, X: np.ndarray, y: np.ndarray, classes: np.ndarray | None = None) -> "HistGBDTClassifier":
        self._validate_params()
        X = np.asarray(X, dtype=np.float64)
        self.classes_ = np.asarray(classes) if classes is not None else np.unique(y)
        edges = T.merge_sketches([T.quantile_sketch(X)], int(self.max_bins))
        forest = T.fit_pooled(X, np.searchsorted(self.classes_, y), len(self.classes_), edges, self.settings(),
                              int(self.n_rounds))
        return self._set(T.edges_array(edges), forest, X.shape[1])

    def _set(self, edges: np.ndarray, forest: T.Forest, n_features: int) -> "HistGBDTClassifier":
        self.edges_ = np.asarray(edges, dtype=np.float64)
        self.tree_feature_, self.tree_threshold_, self.tree_missing_left_, self.tree_value_, self.tree_gain_ = \
            forest.arrays()
        self.n_features_in_ = int(n_features)
        return self

    @classmethod
    def from_arrays(cls, params: dict, arrays: dict[str, np.ndarray], classes: Any,
                    n_features: int) -> "HistGBDTClassifier":
        est = cls(**params)
        est.classes_ = np.asarray(classes)
        return est._set(arrays["edges"], T.Forest.from_named(arrays), n_features)

    @property
    def forest_(self) -> T.Forest:
        return T.Forest(self.tree_feature_, self.tree_threshold_, self.tree_missing_left_, self.tree_value_,
                        self.tree_gain_)

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        edges = T.edges_list(self.edges_)
        raw = T.predict_raw(self.forest_, np.asarray(X, dtype=np.float64), edges, T.n_outputs(len(self.classes_)))
        return raw[:, 0] if raw.shape[1] == 1 else raw

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        raw = self.decision_function(X)
        return T.probabilities(raw[:, None] if raw.ndim == 1 else raw, len(self.classes_))

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    @property
    def feature_importances_(self) -> np.ndarray:
        """Each feature's share of the total split gain."""
        gains = np.zeros(self.n_features_in_)
        inner = self.tree_feature_ >= 0
        np.add.at(gains, self.tree_feature_[inner], self.tree_gain_[inner])
        total = gains.sum()
        return gains / total if total > 0 else gains


class HistGBDTAdapter(ModelAdapter):
    """Trees grown on the server from the sites' summed histograms (see the module docstring)."""

    name = "hist_gbdt"
    label = "Gradient-boosted trees (histograms summed across sites)"
    hyperparameters: ClassVar[tuple[Hyper, ...]] = (
        Hyper("max_depth", "Tree depth", 4, low=1, high=8),
        Hyper("learning_rate", "Learning rate (shrinkage)", 0.3, options=(0.03, 0.05, 0.1, 0.2, 0.3, 0.5)),  # XGBoost's eta: fits in a run's default 20 rounds
        Hyper("max_bins", "Bins per feature", 64, options=(16, 32, 64, 128, 255)),
        Hyper("l2_regularization", "L2 regularisation λ", 1.0, options=(0.0, 0.1, 1.0, 10.0)),
        Hyper("min_child_weight", "Least hessian in a leaf", 1.0, options=(0.01, 0.1, 1.0, 5.0, 10.0)),
    )
    iterative = True  # rounds of trees
    statistics = True  # sites send sums; the server grows the model

    def make(self, params: dict, seed: int) -> HistGBDTClassifier:
        return HistGBDTClassifier(**params)

    def whole_params(self, params: dict | None, rounds: int) -> dict:
        """Trained from scratch (a site alone, the centralized baseline): as many rounds of trees as the run."""
        return {**(params or {}), "n_rounds": int(rounds)}

    def fit_whole(self, params: dict | None, X: np.ndarray, y: np.ndarray, classes: np.ndarray, seed: int) -> Any:
        return self.build(params, seed).fit(X, y, classes=classes)

    def global_estimator(self, params: dict | None, arrays: NamedArrays, classes: Any, n_features: int) -> Any:
        own = {k: v for k, v in {**self.defaults, **(params or {})}.items() if k != "n_rounds"}
        return HistGBDTClassifier.from_arrays(own, dict(arrays), classes, n_features)

    # ------------------------------------------------------------------ a site's side of the steps
    def local_statistics(self, state: dict, X: np.ndarray, y: np.ndarray, classes: np.ndarray, config: dict,
                         arrays: dict[str, np.ndarray], params: dict | None = None) -> NamedArrays:
        """The sums a site sends for one step: its quantile sketch, or its histograms of a level.

        ``state`` is the site's own, kept between steps and rounds: its rows
        binned with the run's edges and its raw scores of the trees so far.
        Raises ValueError for arrays no honest server sends (``trees.check_step``).
        """
        if config.get("statistics") == "sketch":
            sketch, counts = T.quantile_sketch(X)
            return [("sketch", sketch), ("sketch_count", counts)]
        params = {**self.defaults, **(params or {})}
        T.check_step(arrays, X.shape[1], T.n_outputs(len(classes)), int(params["max_depth"]), int(params["max_bins"]))
        edges = T.edges_list(arrays["edges"])
        key = hashlib.sha256(np.ascontiguousarray(arrays["edges"]).tobytes()).hexdigest()
        if state.get("edges") != key:
            state.clear()
            state.update(edges=key, binned=T.bin_rows(X, edges), applied=0,
                         raw=np.zeros((len(y), T.n_outputs(len(classes)))))
        n_bins = T.max_bin_count(edges)
        forest = T.Forest.from_named(arrays)
        if forest.n_trees < state["applied"]:  # another ensemble (a resumed run): from scratch
            state.update(applied=0, raw=np.zeros_like(state["raw"]))
        state["raw"] = T.raw_scores(forest, state["binned"], state["raw"].shape[1], n_bins, start=state["raw"],
                                    first_tree=state["applied"])
        state["applied"] = forest.n_trees
        g, h = T.gradients(state["raw"], np.searchsorted(classes, y), len(classes))
        growing = T.Forest.from_named({k: arrays["round_" + k] for k in T.FOREST_NAMES})
        frontier = T.Frontier(np.asarray(arrays["frontier_tree"], np.int64), np.asarray(arrays["frontier_node"],
                                                                                        np.int64))
        node_of = T.node_of_rows(growing, state["binned"], n_bins)
        G, H = T.histograms(state["binned"], g, h, node_of, frontier, n_bins)
        return [("hist_g", G), ("hist_h", H)]
