"""Client-side training: each model's local epochs over local data only.

What one *local epoch* means (the same thing for every iterative model):
one pass over the client's local data.
- sgd, linear_svm: one ``partial_fit`` call (one shuffled SGD pass);
- mlp: one ``partial_fit`` call (one pass of mini-batches);
- logreg: one L-BFGS iteration (each iteration evaluates the full-batch
  gradient, i.e. one pass), warm-started from the global weights;
- gaussian_nb, random_forest, gradient_boosting, knn, decision_tree: trained
  to completion on the local data in one go; ``local_epochs`` is ignored.
FedProx's proximal term enters as described in fl/fedprox.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.dummy import DummyClassifier

from fl.learning.fedprox import prox_logreg, proximal_step
from fl.learning.metrics import score_classifier
from fl.learning.models import (
    ModelSpec, NamedArrays, fresh_mlp, phantom_rows, set_arrays, get_parameters, get_spec, init_parameters,
)


def _assign_in_place(name: str, est: Any, arrays: NamedArrays) -> None:
    """Write weights into the estimator's own arrays (keeps optimiser references valid)."""
    values = dict(arrays)
    if name == "mlp":
        for i in range(len(est.coefs_)):
            est.coefs_[i][...] = values[f"coefs_.{i}"]
            est.intercepts_[i][...] = values[f"intercepts_.{i}"]
    else:
        est.coef_[...] = values["coef_"]
        est.intercept_[...] = values["intercept_"]



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
            self.estimator_ = self._fit_logreg(spec, X, y, classes, global_arrays, epochs,
                                               float(config.get("proximal_mu") or 0.0))
        else:
            self.estimator_ = self._fit_incremental(spec, X, y, classes, global_arrays, epochs, config)
        self.train_metrics_ = score_classifier(self.estimator_, X, y, classes, with_f1=False)  # F1 is unused here
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
                    global_arrays: NamedArrays | None, epochs: int, mu: float = 0.0) -> Any:
        """Warm-started L-BFGS over the global classes.

        Classes missing locally enter as zero-weight rows: the objective is
        exactly the local one, but scikit-learn allocates the global shape.
        With a FedProx term (mu > 0) the same objective plus the proximal
        term is minimised by fl.fedprox.prox_logreg.
        """
        est = spec.build(self.params, self.seed)
        est.set_params(max_iter=epochs, warm_start=True)
        arrays = global_arrays or init_parameters(self.name, self.params, classes, self.n_features, self.seed)
        est.classes_ = classes
        set_arrays(self.name, est, arrays)
        if mu > 0:
            est.coef_, est.intercept_ = prox_logreg(X, y, classes, est.coef_, est.intercept_, float(est.C), mu,
                                                    epochs)
            est.n_features_in_ = X.shape[1]
            return est
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
                est = fresh_mlp(spec, self.params, classes, self.n_features, self.seed)
            else:
                est = spec.build(self.params, self.seed)
                X0, y0 = phantom_rows(classes, self.n_features)
                est.partial_fit(X0, y0, classes=classes)  # allocates, then overwritten below
                est.t_ = 1.0
        lr = config.get("learning_rate")
        if lr is not None:
            if self.name == "mlp":
                est.set_params(learning_rate_init=float(lr))
            else:
                est.set_params(learning_rate="constant", eta0=float(lr))
        if global_arrays is not None:
            set_arrays(self.name, est, global_arrays)
        if self.name == "mlp":
            wanted = (self.params or {}).get("batch_size", spec.defaults["batch_size"])
            if wanted != "auto":
                est.set_params(batch_size=max(1, min(int(wanted), len(X))))
        mu = float(config.get("proximal_mu") or 0.0)
        anchor = [a for _, a in global_arrays] if (mu > 0 and global_arrays is not None) else None
        for _ in range(epochs):
            est.partial_fit(X, y, classes=classes)
            if anchor is not None:  # FedProx: one proximal step per epoch (see fl/fedprox.py)
                names = [n for n, _ in get_parameters(self.name, est)]
                stepped = proximal_step([a for _, a in get_parameters(self.name, est)], anchor, mu)
                _assign_in_place(self.name, est, list(zip(names, stepped)))
        return est
