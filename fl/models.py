"""The model registry and the client-side training of each model.

Two families:
- averageable models (logreg, sgd, linear_svm, mlp, gaussian_nb) exchange
  parameter arrays named after their scikit-learn fitted attributes;
- any model (trees and k-NN too) can travel whole, as a skops blob, for the
  stacking and voting aggregations.

Shapes always come from the task's global ``classes`` and ``n_features``,
never from the labels a client happens to hold, so a client that lacks a
class still returns arrays of the global shape.

What one *local epoch* means (the same thing for every iterative model):
one pass over the client's local data.
- sgd, linear_svm: one ``partial_fit`` call (one shuffled SGD pass);
- mlp: one ``partial_fit`` call (one pass of mini-batches);
- logreg: one L-BFGS iteration (each iteration evaluates the full-batch
  gradient, i.e. one pass), warm-started from the global weights;
- gaussian_nb, random_forest, gradient_boosting, knn, decision_tree: trained
  to completion on the local data in one go; ``local_epochs`` is ignored.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from sklearn.dummy import DummyClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.tree import DecisionTreeClassifier

from fl.metrics import score_classifier

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


def _phantom_rows(classes: np.ndarray, n_features: int) -> tuple[np.ndarray, np.ndarray]:
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
        est = _fresh_mlp(spec, params, classes, n_features, seed)
        return get_parameters(name, est)
    if spec.round_free:
        return None
    raise ValueError(f"no initial parameters for model {name!r}")


def _fresh_mlp(spec: ModelSpec, params: dict | None, classes: np.ndarray, n_features: int, seed: int) -> MLPClassifier:
    """An MLP with global shapes and seeded Glorot weights, untouched by any data."""
    est = spec.build(params, seed)
    X0, y0 = _phantom_rows(classes, n_features)
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


def _set_arrays(name: str, est: Any, arrays: NamedArrays) -> None:
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
        est = _fresh_mlp(spec, params, classes, n_features, 0)
    else:
        est = spec.build(params, 0)
        est.classes_ = classes
        est.n_features_in_ = n_features
        est.t_ = 1.0
    _set_arrays(name, est, arrays)
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


# --------------------------------------------------------------------------
# Client-side training
# --------------------------------------------------------------------------

class LocalModel:
    """One client's model for the whole run (scikit-learn style).

    Keeps the estimator between rounds so that stateful solvers (SGD's
    learning-rate schedule) carry on; the weights are replaced by the global
    ones at the start of every round.
    """

    def __init__(self, name: str, params: dict | None, classes: Any, n_features: int, seed: int = 0):
        self.name = name
        self.params = params
        self.classes = classes
        self.n_features = n_features
        self.seed = seed

    def fit(self, X: np.ndarray, y: np.ndarray, global_arrays: NamedArrays | None = None,
            epochs: int = 1, config: dict | None = None, whole_model: bool = False) -> "LocalModel":
        """Train on local data only; returns self with ``estimator_`` set.

        ``whole_model`` asks for a model trained from scratch (stacking and
        voting), even for an averageable model.
        """
        spec = get_spec(self.name)
        classes = np.asarray(self.classes)
        config = config or {}
        epochs = max(1, int(epochs))
        if whole_model or spec.round_free:
            self.estimator_ = self._fit_whole(spec, X, y, classes)
        elif self.name == "logreg":
            self.estimator_ = self._fit_logreg(spec, X, y, classes, global_arrays, epochs)
        else:
            self.estimator_ = self._fit_incremental(spec, X, y, classes, global_arrays, epochs, config)
        self.train_metrics_ = score_classifier(self.estimator_, X, y, classes)
        return self

    def get_parameters(self) -> NamedArrays:
        return get_parameters(self.name, self.estimator_)

    def _fit_whole(self, spec: ModelSpec, X: np.ndarray, y: np.ndarray, classes: np.ndarray) -> Any:
        """Fit from scratch; a client whose data defeats the model falls back to class priors."""
        if self.name == "gaussian_nb":
            est = spec.build(self.params, self.seed)
            return est.partial_fit(X, y, classes=classes)
        params = dict(self.params or {})
        if self.name == "knn":
            params["n_neighbors"] = min(int(params.get("n_neighbors", spec.defaults["n_neighbors"])), len(X))
        est = spec.build(params, self.seed)
        if self.name in ("logreg", "mlp"):
            est.set_params(max_iter=max(int(getattr(est, "max_iter", 100)), 200))
        try:
            return est.fit(X, y)
        except ValueError:
            # e.g. gradient boosting on a single class: predict the local prior.
            return DummyClassifier(strategy="prior").fit(X, y)

    def _fit_logreg(self, spec: ModelSpec, X: np.ndarray, y: np.ndarray, classes: np.ndarray,
                    global_arrays: NamedArrays | None, epochs: int) -> Any:
        """Warm-started L-BFGS over the global classes.

        Classes missing locally enter as zero-weight rows: the objective is
        exactly the local one, but scikit-learn allocates the global shape.
        """
        est = spec.build(self.params, self.seed)
        est.set_params(max_iter=epochs, warm_start=True)
        arrays = global_arrays or init_parameters(self.name, self.params, classes, self.n_features, self.seed)
        est.classes_ = classes
        _set_arrays(self.name, est, arrays)
        missing = np.setdiff1d(classes, np.unique(y))
        X_fit, y_fit, weights = X, y, np.ones(len(y))
        if len(missing) or len(np.unique(y)) < 2:
            X_fit = np.vstack([X, np.zeros((len(missing), X.shape[1]))])
            y_fit = np.concatenate([y, missing.astype(y.dtype, copy=False)])
            weights = np.concatenate([weights, np.zeros(len(missing))])
        return est.fit(X_fit, y_fit, sample_weight=weights)

    def _fit_incremental(self, spec: ModelSpec, X: np.ndarray, y: np.ndarray, classes: np.ndarray,
                         global_arrays: NamedArrays | None, epochs: int, config: dict) -> Any:
        """sgd, linear_svm, mlp: ``epochs`` partial_fit passes from the global weights."""
        est = getattr(self, "estimator_", None)
        if est is None or type(est) is DummyClassifier:
            if self.name == "mlp":
                est = _fresh_mlp(spec, self.params, classes, self.n_features, self.seed)
            else:
                est = spec.build(self.params, self.seed)
                X0, y0 = _phantom_rows(classes, self.n_features)
                est.partial_fit(X0, y0, classes=classes)  # allocates, then overwritten below
                est.t_ = 1.0
        lr = config.get("learning_rate")
        if lr is not None:
            if self.name == "mlp":
                est.set_params(learning_rate_init=float(lr))
            else:
                est.set_params(learning_rate="constant", eta0=float(lr))
        if global_arrays is not None:
            _set_arrays(self.name, est, global_arrays)
        if self.name == "mlp":
            wanted = (self.params or {}).get("batch_size", spec.defaults["batch_size"])
            if wanted != "auto":
                est.set_params(batch_size=max(1, min(int(wanted), len(X))))
        for _ in range(epochs):
            est.partial_fit(X, y, classes=classes)
        return est
