"""The model registry and the client-side training of each model.

Two families:
- averageable models (logreg, sgd, linear_svm, mlp, gaussian_nb) exchange
  parameter arrays named after their scikit-learn fitted attributes;
- any model (trees and k-NN too) can travel whole, as a skops blob, for the
  stacking and voting aggregations.

Shapes always come from the task's global ``classes`` and ``n_features``,
never from the labels a client happens to hold, so a client that lacks a
class still returns arrays of the global shape.

Local training (what a local epoch means for each model) is in fl/training.py.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.tree import DecisionTreeClassifier


NamedArrays = list[tuple[str, np.ndarray]]


@dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about one model name."""

    name: str
    label: str
    averageable: bool
    make: Callable[[dict, int], Any]
    defaults: dict = field(default_factory=dict)
    round_free: bool = False  # fits from scratch each time; no global parameters to start from

    def build(self, params: dict | None = None, seed: int = 0) -> Any:
        merged = {**self.defaults, **(params or {})}
        return self.make(merged, seed)


def _mlp(p: dict, seed: int) -> MLPClassifier:
    p = dict(p)
    p["hidden_layer_sizes"] = tuple(int(u) for u in np.atleast_1d(p.get("hidden_layer_sizes", (64,))))
    return MLPClassifier(random_state=seed, **p)


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("logreg", "Logistic regression", True,
                  lambda p, s: LogisticRegression(random_state=s, **p), {"C": 1.0}),
        ModelSpec("sgd", "SGD classifier (log loss)", True,
                  lambda p, s: SGDClassifier(loss="log_loss", random_state=s, **p), {"alpha": 1e-4}),
        ModelSpec("linear_svm", "Linear SVM (hinge loss, SGD)", True,
                  lambda p, s: SGDClassifier(loss="hinge", random_state=s, **p), {"alpha": 1e-4}),
        ModelSpec("mlp", "Neural network (MLP)", True, _mlp,
                  {"hidden_layer_sizes": (64,), "learning_rate_init": 0.005, "batch_size": 32, "alpha": 1e-4}),
        ModelSpec("gaussian_nb", "Gaussian naive Bayes", True,
                  lambda p, s: GaussianNB(**p), {"var_smoothing": 1e-9}, round_free=True),
        ModelSpec("random_forest", "Random forest", False,
                  lambda p, s: RandomForestClassifier(random_state=s, n_jobs=1, **p),
                  {"n_estimators": 100, "max_depth": None}, round_free=True),
        ModelSpec("gradient_boosting", "Gradient boosting", False,
                  lambda p, s: GradientBoostingClassifier(random_state=s, **p),
                  {"n_estimators": 100, "learning_rate": 0.1, "max_depth": 3}, round_free=True),
        ModelSpec("knn", "k-nearest neighbours", False,
                  lambda p, s: KNeighborsClassifier(**p), {"n_neighbors": 5}, round_free=True),
        ModelSpec("decision_tree", "Decision tree", False,
                  lambda p, s: DecisionTreeClassifier(random_state=s, **p), {"max_depth": None}, round_free=True),
    )
}
AVERAGEABLE_MODELS = tuple(n for n, s in MODELS.items() if s.averageable)


def get_spec(name: str) -> ModelSpec:
    """The spec of a model, or a ValueError that lists the known names."""
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODELS)}") from None


def check_model_params(name: str, params: dict | None) -> None:
    """Reject hyperparameters the estimator does not have, before any run starts."""
    spec = get_spec(name)
    if not params:
        return
    allowed = set(spec.build({}, 0).get_params())
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValueError(f"model {name!r} has no parameter {', '.join(unknown)}")
    try:
        spec.build(params, 0)._validate_params()
    except Exception as exc:
        raise ValueError(f"bad parameter for model {name!r}: {exc}") from None


def _n_outputs(classes: np.ndarray) -> int:
    """Linear models store one row of weights for two classes, one per class above."""
    return 1 if len(classes) == 2 else len(classes)


def phantom_rows(classes: np.ndarray, n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """One all-zero row per class: lets scikit-learn allocate global shapes."""
    return np.zeros((len(classes), n_features)), np.asarray(classes)


# Few local iterations per round is the point of federated training, so the
# solvers' "did not converge" warnings are expected noise. A module-level
# filter, because warnings.catch_warnings is not thread-safe and clients run
# as threads.
warnings.filterwarnings("ignore", category=ConvergenceWarning)


# --------------------------------------------------------------------------
# Parameters <-> estimators
# --------------------------------------------------------------------------

def get_parameters(name: str, estimator: Any) -> NamedArrays:
    """The arrays an averageable model sends, named after its fitted attributes."""
    if name in ("logreg", "sgd", "linear_svm"):
        return [("coef_", _f64(estimator.coef_)), ("intercept_", _f64(estimator.intercept_))]
    if name == "mlp":
        return [(f"coefs_.{i}", _f64(c)) for i, c in enumerate(estimator.coefs_)] + [
            (f"intercepts_.{i}", _f64(b)) for i, b in enumerate(estimator.intercepts_)
        ]
    if name == "gaussian_nb":
        # var_ is sent without scikit-learn's smoothing epsilon so that the
        # server can merge exact variances and add one global epsilon.
        raw_var = np.maximum(estimator.var_ - estimator.epsilon_, 0.0)
        return [("theta_", _f64(estimator.theta_)), ("var_", _f64(raw_var)),
                ("class_count_", _f64(estimator.class_count_))]
    raise ValueError(f"model {name!r} has no parameter arrays; use stacking or voting")


def _f64(a: Any) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float64)


def expected_shapes(name: str, params: dict | None, classes: Any, n_features: int) -> list[tuple[str, tuple]]:
    """Names and shapes every client must return for this task."""
    arrays = init_parameters(name, params, classes, n_features, seed=0)
    if arrays is None:
        k = len(classes)
        return [("theta_", (k, n_features)), ("var_", (k, n_features)), ("class_count_", (k,))]
    return [(n, a.shape) for n, a in arrays]


def init_parameters(name: str, params: dict | None, classes: Any, n_features: int, seed: int) -> NamedArrays | None:
    """The server's round-1 global parameters, from the task alone.

    Linear models start at zero; the MLP at a seeded Glorot-uniform draw
    (scikit-learn's own scheme); round-free models have none.
    """
    classes = np.asarray(classes)
    spec = get_spec(name)
    if name in ("logreg", "sgd", "linear_svm"):
        k = _n_outputs(classes)
        return [("coef_", np.zeros((k, n_features))), ("intercept_", np.zeros(k))]
    if name == "mlp":
        est = fresh_mlp(spec, params, classes, n_features, seed)
        return get_parameters(name, est)
    if spec.round_free:
        return None
    raise ValueError(f"no initial parameters for model {name!r}")


def fresh_mlp(spec: ModelSpec, params: dict | None, classes: np.ndarray, n_features: int, seed: int) -> MLPClassifier:
    """An MLP with global shapes and seeded Glorot weights, untouched by any data."""
    est = spec.build(params, seed)
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
    _reset_mlp_optimizer(est)
    return est


def _reset_mlp_optimizer(est: MLPClassifier) -> None:
    """Drop the optimiser state: it holds references to the old weight arrays."""
    for attr in ("_optimizer",):
        if hasattr(est, attr):
            delattr(est, attr)
    est.t_ = 0
    est.n_iter_ = 0
    est.loss_curve_ = []
    est._no_improvement_count = 0
    est.best_loss_ = np.inf


def set_arrays(name: str, est: Any, arrays: NamedArrays) -> None:
    values = dict(arrays)
    if name in ("logreg", "sgd", "linear_svm"):
        est.coef_ = _f64(values["coef_"]).copy()
        est.intercept_ = _f64(values["intercept_"]).copy()
    elif name == "mlp":
        n = len(est.coefs_)
        est.coefs_ = [_f64(values[f"coefs_.{i}"]).copy() for i in range(n)]
        est.intercepts_ = [_f64(values[f"intercepts_.{i}"]).copy() for i in range(n)]
        _reset_mlp_optimizer(est)
    else:
        raise ValueError(f"cannot set parameters of model {name!r}")


def global_estimator(name: str, params: dict | None, arrays: NamedArrays, classes: Any, n_features: int) -> Any:
    """A ready-to-predict estimator holding the given (aggregated) arrays."""
    classes = np.asarray(classes)
    spec = get_spec(name)
    if name == "gaussian_nb":
        return _gaussian_nb_from_stats(spec.build(params, 0), dict(arrays), classes, n_features)
    if name == "mlp":
        est = fresh_mlp(spec, params, classes, n_features, 0)
    else:
        est = spec.build(params, 0)
        est.classes_ = classes
        est.n_features_in_ = n_features
        est.t_ = 1.0
    set_arrays(name, est, arrays)
    return est


def _gaussian_nb_from_stats(est: GaussianNB, values: dict, classes: np.ndarray, n_features: int) -> GaussianNB:
    """Rebuild GaussianNB from exact per-class counts, means and variances.

    The smoothing epsilon is recomputed as scikit-learn does it, from the
    variance of the whole (merged) data: law of total variance over classes.
    """
    counts = _f64(values["class_count_"])
    theta = _f64(values["theta_"])
    var = _f64(values["var_"])
    total = counts.sum()
    if total <= 0:
        raise ValueError("Gaussian naive Bayes statistics hold no samples")
    mean = counts @ theta / total
    overall_var = counts @ (var + theta**2) / total - mean**2
    est.epsilon_ = float(est.var_smoothing * max(float(np.max(overall_var)), 0.0))
    est.classes_ = classes
    est.theta_ = theta.copy()
    est.var_ = var + est.epsilon_
    est.class_count_ = counts.copy()
    est.class_prior_ = counts / total
    est.n_features_in_ = n_features
    return est
