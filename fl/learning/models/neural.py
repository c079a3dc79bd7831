"""The neural network: scikit-learn's MLPClassifier.

Parameters: ``coefs_.i`` and ``intercepts_.i`` per layer, seeded Glorot
weights at round 1 (scikit-learn's own scheme), the same on every client. A
local epoch is one ``partial_fit`` pass of mini-batches; each round starts
from the global weights with a fresh optimiser (FedProx: one proximal step
per epoch). SCAFFOLD's correction is a step of its own beside every
mini-batch step of the optimiser (``corrected_gradients``).
"""

from __future__ import annotations

import copy
import json
import threading
from collections import OrderedDict
from typing import Any, ClassVar

import numpy as np
from sklearn.neural_network import MLPClassifier

from fl.learning.fedprox import proximal_step
from fl.learning.models.base import Hyper, ModelAdapter, NamedArrays, as_f64, phantom_rows


TEMPLATES_KEPT = 32  # fresh networks kept to copy: one per task and seed in use (a sweep's runs, each client's seed)
_TEMPLATES: OrderedDict[tuple, MLPClassifier] = OrderedDict()
_TEMPLATES_LOCK = threading.Lock()


class MLPAdapter(ModelAdapter):
    name = "mlp"
    label = "Neural network (MLP)"
    hyperparameters: ClassVar[tuple[Hyper, ...]] = (
        Hyper("hidden_layer_sizes", "Hidden layers (units, comma-separated)", (64,), layers=True),
        Hyper("learning_rate_init", "Learning rate", 0.005, options=(0.0005, 0.001, 0.005, 0.01, 0.05)),
    )
    fixed_defaults: ClassVar[dict[str, Any]] = {"batch_size": 32, "alpha": 1e-4}
    averageable = True
    iterative = True

    def make(self, params: dict, seed: int) -> MLPClassifier:
        params = dict(params)
        params["hidden_layer_sizes"] = tuple(int(u) for u in np.atleast_1d(params.get("hidden_layer_sizes", (64,))))
        return MLPClassifier(random_state=seed, **params)

    def fresh(self, params: dict | None, classes: np.ndarray, n_features: int, seed: int) -> MLPClassifier:
        """An MLP with global shapes and seeded Glorot weights, untouched by any data.

        A copy of one built per task and seed: building one takes a
        ``partial_fit`` on phantom rows (about 9 ms with scikit-learn's
        checks, more than a client's epoch on digits), and a round needs
        several (each client's fit and evaluation, the server's score).
        """
        key = (json.dumps(params or {}, sort_keys=True, default=repr), tuple(np.asarray(classes).tolist()),
               int(n_features), int(seed))
        with _TEMPLATES_LOCK:
            template = _TEMPLATES.get(key)
            if template is not None:
                _TEMPLATES.move_to_end(key)
        if template is None:
            template = self._build_fresh(params, classes, n_features, seed)
            with _TEMPLATES_LOCK:
                _TEMPLATES[key] = template
                while len(_TEMPLATES) > TEMPLATES_KEPT:
                    _TEMPLATES.popitem(last=False)
        return copy.deepcopy(template)

    def _build_fresh(self, params: dict | None, classes: np.ndarray, n_features: int, seed: int) -> MLPClassifier:
        est = self.build(params, seed)
        X0, y0 = phantom_rows(classes, n_features)
        batch_size = est.batch_size
        est.set_params(batch_size=len(y0))
        est.partial_fit(X0, y0, classes=classes)  # allocates every attribute
        est.set_params(batch_size=batch_size)
        rng = np.random.default_rng(seed)
        factor = 2.0 if est.activation == "logistic" else 6.0
        for i, coef in enumerate(est.coefs_):
            bound = np.sqrt(factor / (coef.shape[0] + coef.shape[1]))
            est.coefs_[i] = rng.uniform(-bound, bound, coef.shape)
            est.intercepts_[i] = rng.uniform(-bound, bound, coef.shape[1])
        restart_optimizer(est)
        return est

    def initial_parameters(self, params: dict | None, classes: Any, n_features: int, seed: int) -> NamedArrays:
        return self.get_parameters(self.fresh(params, np.asarray(classes), n_features, seed))

    def get_parameters(self, estimator: Any) -> NamedArrays:
        return [(f"coefs_.{i}", as_f64(c)) for i, c in enumerate(estimator.coefs_)] + [
            (f"intercepts_.{i}", as_f64(b)) for i, b in enumerate(estimator.intercepts_)]

    def set_parameters(self, estimator: MLPClassifier, arrays: NamedArrays) -> None:
        values = dict(arrays)
        n = len(estimator.coefs_)
        estimator.coefs_ = [as_f64(values[f"coefs_.{i}"]).copy() for i in range(n)]
        estimator.intercepts_ = [as_f64(values[f"intercepts_.{i}"]).copy() for i in range(n)]
        restart_optimizer(estimator)

    def global_estimator(self, params: dict | None, arrays: NamedArrays, classes: Any, n_features: int) -> Any:
        est = self.fresh(params, np.asarray(classes), n_features, 0)
        self.set_parameters(est, arrays)
        return est

    def ready_for_whole_fit(self, estimator: Any, X: np.ndarray) -> Any:
        """At least 200 iterations; mini-batches no larger than the rows (what scikit-learn would clip to,
        without its warning for every small client)."""
        if estimator.batch_size != "auto":
            estimator.set_params(batch_size=max(1, min(int(estimator.batch_size), len(X))))
        return estimator.set_params(max_iter=max(int(estimator.max_iter), 200))

    def learning_rate(self, params: dict | None) -> float:
        return float({**self.defaults, **(params or {})}["learning_rate_init"])

    def local_gradient(self, params: dict | None, X: np.ndarray, y: np.ndarray, classes: np.ndarray,
                       n_features: int, global_arrays: NamedArrays, config: dict) -> list[np.ndarray]:
        """The full-batch gradient (L2 term included) at the global weights, in the order of the arrays."""
        est = self.global_estimator(params, global_arrays, classes, n_features)
        coef_grads, intercept_grads = full_gradient(est, X, y)
        return coef_grads + intercept_grads

    def fit_local(self, previous: Any, params: dict | None, X: np.ndarray, y: np.ndarray, classes: np.ndarray,
                  n_features: int, global_arrays: NamedArrays | None, epochs: int, config: dict, seed: int, *,
                  losses: list[float] | None = None, correction: list[np.ndarray] | None = None) -> Any:
        est = previous if isinstance(previous, MLPClassifier) else self.fresh(params, classes, n_features, seed)
        lr = config.get("learning_rate")
        if lr is not None:
            est.set_params(learning_rate_init=float(lr))
        if global_arrays is not None:
            self.set_parameters(est, global_arrays)
        wanted = {**self.defaults, **(params or {})}.get("batch_size")
        if wanted != "auto":
            est.set_params(batch_size=max(1, min(int(wanted), len(X))))
        mu = float(config.get("proximal_mu") or 0.0)
        anchor = [a for _, a in global_arrays] if (mu > 0 and global_arrays is not None) else None
        if correction is not None:
            corrected_gradients(est, correction)
        try:
            self._epochs(est, X, y, classes, epochs, anchor, mu, losses)
        finally:
            if correction is not None:
                del est._backprop  # the class's own again: the estimator holds no function of ours
        return est

    @staticmethod
    def _epochs(est: MLPClassifier, X: np.ndarray, y: np.ndarray, classes: np.ndarray, epochs: int,
                anchor: list[np.ndarray] | None, mu: float, losses: list[float] | None) -> None:
        for _ in range(epochs):
            est.partial_fit(X, y, classes=classes)
            if anchor is not None:  # FedProx: one proximal step per epoch, in place (the optimiser holds the arrays)
                stepped = proximal_step(est.coefs_ + est.intercepts_, anchor, mu)
                for target, value in zip(est.coefs_ + est.intercepts_, stepped):
                    target[...] = value
            if losses is not None:
                losses.append(float(est.loss_))  # the epoch's mean mini-batch loss, L2 term included


def restart_optimizer(est: MLPClassifier) -> None:
    """Forget the optimiser's state: the next partial_fit starts a fresh one on the current weights.

    scikit-learn offers no public way to do this; the attributes touched are
    listed here only, and tests/test_models.py pins the behaviour (two
    clients starting a round from the same weights train identically).
    """
    if hasattr(est, "_optimizer"):
        del est._optimizer
    est.t_ = 0
    est.n_iter_ = 0
    est.loss_curve_ = []
    est._no_improvement_count = 0
    est.best_loss_ = np.inf


def full_gradient(est: MLPClassifier, X: np.ndarray, y: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The gradient of the MLP's training loss (L2 term included) over all of (X, y), per layer.

    scikit-learn has no public call for it; ``_backprop`` (the one its
    solvers call per mini-batch) is used here alone, with buffers laid out as
    ``_fit`` lays them out, and tests/test_scaffold.py pins the result
    against a finite-difference check.
    """
    X = np.asarray(X, dtype=np.float64)
    Y = est._label_binarizer.transform(y).astype(np.float64)
    if Y.ndim == 1:
        Y = Y.reshape(-1, 1)
    units = [X.shape[1]] + [c.shape[1] for c in est.coefs_]
    activations = [X] + [None] * (len(units) - 1)
    deltas = [None] * (len(activations) - 1)
    coef_grads = [np.empty((a, b)) for a, b in zip(units[:-1], units[1:])]
    intercept_grads = [np.empty(b) for b in units[1:]]
    _, coef_grads, intercept_grads = est._backprop(X, Y, None, activations, deltas, coef_grads, intercept_grads)
    return [g.copy() for g in coef_grads], [g.copy() for g in intercept_grads]


def corrected_gradients(est: MLPClassifier, correction: list[np.ndarray]) -> None:
    """Make every mini-batch step of ``est`` also step by −η·correction (SCAFFOLD), until ``del est._backprop``.

    The correction is a plain gradient step of the optimiser's rate η
    (``learning_rate_init``) beside the optimiser's own step, not part of the
    gradient Adam normalises: added to Adam's input it was measured to hurt
    (digits, Dirichlet 0.1, 10 clients, 5 local epochs, 10 rounds: 85.3 % vs
    FedAvg's 95.8 %; as a step of its own, 96.1 %). An instance attribute
    shadows scikit-learn's private ``_backprop`` (called once per mini-batch
    by its stochastic solvers, just before the optimiser's update, which adds
    to the same arrays); pinned by tests/test_scaffold.py.
    """
    original = type(est)._backprop.__get__(est)
    rate = float(est.learning_rate_init)

    def backprop(*args: Any) -> Any:
        for weights, fix in zip(est.coefs_ + est.intercepts_, correction):
            weights -= rate * fix
        return original(*args)

    est._backprop = backprop
