"""Client-side training: one client's model over its rounds, on its local data only.

What one *local epoch* means is the model adapter's business (one pass over
the local data for every iterative model; see fl/learning/models); this
class only keeps the estimator between rounds (stateful solvers such as SGD's
learning-rate schedule carry on) and scores it on the training rows.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from fl.learning.metrics import score_classifier
from fl.learning.models import NamedArrays, get_model


class LocalModel:
    """One client's model for the whole run (scikit-learn style: ``fit`` returns self, ``estimator_``)."""

    def __init__(self, name: str, params: dict | None, classes: Any, n_features: int, seed: int = 0):
        self.name = name
        self.params = params
        self.classes = classes
        self.n_features = n_features
        self.seed = seed

    def fit(self, X: np.ndarray, y: np.ndarray, global_arrays: NamedArrays | None = None,
            epochs: int = 1, config: dict | None = None, whole_model: bool = False,
            correction: list[np.ndarray] | None = None) -> "LocalModel":
        """Train on local data only; returns self with ``estimator_`` and ``train_metrics_`` set.

        ``whole_model`` asks for a model trained from scratch (stacking and
        voting), even for an averageable model; ``correction`` is SCAFFOLD's
        c − c_i, added to the gradient of every local step.
        """
        adapter = get_model(self.name)
        classes = np.asarray(self.classes)
        losses: list[float] = []
        if whole_model or adapter.one_shot:
            self.estimator_ = adapter.fit_whole(self.params, X, y, classes, self.seed)
        else:
            self.estimator_ = adapter.fit_local(getattr(self, "estimator_", None), self.params, X, y, classes,
                                                self.n_features, global_arrays, max(1, int(epochs)), config or {},
                                                self.seed, losses=losses, correction=correction)
        self.train_metrics_ = score_classifier(self.estimator_, X, y, classes, with_f1=False)  # F1 is unused here
        # One loss per local epoch where the model trains epoch by epoch; one solve (L-BFGS, whole models): one.
        self.epoch_losses_ = losses or [self.train_metrics_["loss"]]
        return self

    def get_parameters(self) -> NamedArrays:
        return get_model(self.name).get_parameters(self.estimator_)

    def gradient_at(self, X: np.ndarray, y: np.ndarray, global_arrays: NamedArrays, config: dict) -> list[np.ndarray]:
        """The gradient of the local objective at the global parameters (SCAFFOLD's c_i)."""
        return get_model(self.name).local_gradient(self.params, X, y, np.asarray(self.classes), self.n_features,
                                                  global_arrays, config)


PLATEAU_EPOCHS = 3
CONVERGENCE_TOLERANCE = 1e-3


def has_converged(losses: Sequence[float | None]) -> bool | None:
    """Whether training has reached a plateau: the last ``PLATEAU_EPOCHS`` epoch losses all lie within
    ``CONVERGENCE_TOLERANCE`` (0.1 %) of the last one, relative to it. None until there are that many finite
    losses. A loss that still falls, or rises, is not a plateau."""
    recent = [v for v in losses if v is not None and math.isfinite(v)][-PLATEAU_EPOCHS:]
    if len(recent) < PLATEAU_EPOCHS:
        return None
    return bool(max(recent) - min(recent) <= CONVERGENCE_TOLERANCE * max(abs(recent[-1]), 1e-12))
