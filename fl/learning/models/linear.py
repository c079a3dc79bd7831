"""Linear models: logistic regression and SGD classifiers (log loss, hinge loss).

Parameters: ``coef_`` (k, d) and ``intercept_`` (k,), k = 1 for two classes.
A local epoch is one pass over the local data:

- logistic regression, ``local_solver="gd"`` (the default): one full-batch
  gradient step of the size the server sets (``learning_rate``, default
  1.0; a schedule applies) on the site's share of the pooled objective
  (fl/learning/logistic.py). FedAvg of one such step on every site is one
  step of gradient descent on the pooled rows, so federated training goes
  where scikit-learn's LogisticRegression on the pooled rows goes.
- logistic regression, ``local_solver="lbfgs"``: one warm-started L-BFGS
  iteration (each evaluates the full-batch gradient). Its first step always
  has unit length, so on non-IID sites the model never settles; kept to
  reproduce earlier runs and Flower's scikit-learn example.
- SGD: one ``partial_fit`` pass.

FedProx enters exactly for logistic regression (a term of every step, or
fl/learning/fedprox.py for L-BFGS) and as a proximal step per epoch for SGD.
SCAFFOLD's correction enters every gradient step of ``gd``, and every chunk
of SGD's pass (``CORRECTION_CHUNK`` rows of per-row steps).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from sklearn.linear_model import LogisticRegression, SGDClassifier

from fl.learning.fedprox import prox_logreg, proximal_step
from fl.learning.logistic import gradient_at, gradient_steps, one_vs_rest_gradient
from fl.learning.metrics import score_classifier
from fl.learning.models.base import Hyper, ModelAdapter, NamedArrays, as_f64, n_outputs, phantom_rows

GD_LEARNING_RATE = 1.0  # logistic regression's gd step on standardised features (docs/engine.md: measured)
CORRECTION_CHUNK = 32  # SGD with SCAFFOLD: rows per partial_fit call, the correction applied after each


class LinearAdapter(ModelAdapter):
    """Shared by the linear models: arrays ``coef_`` and ``intercept_``, zero at round 1."""

    averageable = True
    iterative = True

    def initial_parameters(self, params: dict | None, classes: Any, n_features: int, seed: int) -> NamedArrays:
        k = n_outputs(np.asarray(classes))
        return [("coef_", np.zeros((k, n_features))), ("intercept_", np.zeros(k))]

    def get_parameters(self, estimator: Any) -> NamedArrays:
        return [("coef_", as_f64(estimator.coef_)), ("intercept_", as_f64(estimator.intercept_))]

    def set_parameters(self, estimator: Any, arrays: NamedArrays) -> None:
        values = dict(arrays)
        estimator.coef_ = as_f64(values["coef_"]).copy()
        estimator.intercept_ = as_f64(values["intercept_"]).copy()

    def global_estimator(self, params: dict | None, arrays: NamedArrays, classes: Any, n_features: int) -> Any:
        est = self.build(params, 0)
        est.classes_ = np.asarray(classes)
        est.n_features_in_ = n_features
        est.t_ = 1.0
        self.set_parameters(est, arrays)
        return est


class LogisticRegressionAdapter(LinearAdapter):
    name = "logreg"
    label = "Logistic regression"
    hyperparameters: ClassVar[tuple[Hyper, ...]] = (
        Hyper("C", "Inverse regularisation C", 1.0, options=(0.01, 0.1, 0.5, 1.0, 2.0, 10.0, 100.0)),
        Hyper("local_solver", "Local solver", "gd", options=("gd", "lbfgs"), own=True,
              help="gd: each local epoch is one gradient step of the learning rate, so the federation goes where "
                   "training on the pooled rows goes. lbfgs: one L-BFGS iteration per epoch, whose first step "
                   "always has length 1: on sites with different data the model does not settle."),
    )

    def make(self, params: dict, seed: int) -> LogisticRegression:
        return LogisticRegression(random_state=seed, **params)

    def ready_for_whole_fit(self, estimator: Any, X: np.ndarray) -> Any:
        return estimator.set_params(max_iter=max(int(estimator.max_iter), 200))

    def learning_rate(self, params: dict | None) -> float | None:
        """The gd step (a schedule applies); L-BFGS sizes its own steps."""
        return GD_LEARNING_RATE if self.setting(params, "local_solver") == "gd" else None

    def penalty(self, params: dict | None, config: dict, n_rows: int) -> float:
        """λ = 1 / (C·N), N the federation's training rows (the fit config's ``pool_rows``; this site's rows
        when a server does not say): the sites' objectives then add up to scikit-learn's pooled one."""
        rows = config.get("pool_rows")
        rows = int(rows) if isinstance(rows, int) and not isinstance(rows, bool) and rows > 0 else max(n_rows, 1)
        return 1.0 / (float(self.setting(params, "C")) * rows)

    def fit_local(self, previous: Any, params: dict | None, X: np.ndarray, y: np.ndarray, classes: np.ndarray,
                  n_features: int, global_arrays: NamedArrays | None, epochs: int, config: dict, seed: int, *,
                  losses: list[float] | None = None, correction: list[np.ndarray] | None = None) -> Any:
        """``epochs`` full-batch gradient steps (``gd``) or warm-started L-BFGS iterations (``lbfgs``)."""
        if self.setting(params, "local_solver") == "lbfgs":
            return self._fit_lbfgs(params, X, y, classes, n_features, global_arrays, epochs, config, seed)
        start = dict(global_arrays or self.initial_parameters(params, classes, n_features, seed))
        mu = float(config.get("proximal_mu") or 0.0)
        rate = config.get("learning_rate")
        W, b = gradient_steps(X, y, classes, start["coef_"], start["intercept_"], steps=epochs,
                              learning_rate=float(rate) if rate is not None else GD_LEARNING_RATE,
                              l2=self.penalty(params, config, len(y)), mu=mu,
                              anchor=(start["coef_"], start["intercept_"]), correction=correction, losses=losses)
        return self.global_estimator(params, [("coef_", W), ("intercept_", b)], classes, n_features)

    def local_gradient(self, params: dict | None, X: np.ndarray, y: np.ndarray, classes: np.ndarray,
                       n_features: int, global_arrays: NamedArrays, config: dict) -> list[np.ndarray]:
        arrays = dict(global_arrays)
        return gradient_at(X, y, classes, arrays["coef_"], arrays["intercept_"], self.penalty(params, config, len(y)))

    def _fit_lbfgs(self, params: dict | None, X: np.ndarray, y: np.ndarray, classes: np.ndarray, n_features: int,
                   global_arrays: NamedArrays | None, epochs: int, config: dict, seed: int) -> Any:
        """``epochs`` warm-started L-BFGS iterations over the global classes (one solve: no per-epoch loss).

        Classes missing locally enter as zero-weight rows: the objective is
        exactly the local one, but scikit-learn allocates the global shape.
        With a FedProx term (mu > 0) the same objective plus the proximal
        term is minimised by fl.learning.fedprox.prox_logreg.
        """
        est = self.build(params, seed)
        est.set_params(max_iter=epochs, warm_start=True)
        est.classes_ = classes
        self.set_parameters(est, global_arrays or self.initial_parameters(params, classes, n_features, seed))
        mu = float(config.get("proximal_mu") or 0.0)
        if mu > 0:
            est.coef_, est.intercept_ = prox_logreg(X, y, classes, est.coef_, est.intercept_, float(est.C), mu, epochs)
            est.n_features_in_ = X.shape[1]
            return est
        missing = np.setdiff1d(classes, np.unique(y))
        X_fit, y_fit, weights = X, y, np.ones(len(y))
        if len(missing) or len(np.unique(y)) < 2:
            X_fit = np.vstack([X, np.zeros((len(missing), X.shape[1]))])
            y_fit = np.concatenate([y, missing.astype(y.dtype, copy=False)])
            weights = np.concatenate([weights, np.zeros(len(missing))])
        return est.fit(X_fit, y_fit, sample_weight=weights)


class SGDAdapter(LinearAdapter):
    """Linear classifiers trained by SGD; one local epoch is one partial_fit pass."""

    loss: ClassVar[str] = "log_loss"
    hyperparameters: ClassVar[tuple[Hyper, ...]] = (
        Hyper("alpha", "L2 penalty α", 1e-4, options=(1e-6, 1e-5, 1e-4, 1e-3, 1e-2)),)

    def make(self, params: dict, seed: int) -> SGDClassifier:
        return SGDClassifier(loss=self.loss, random_state=seed, **params)

    def learning_rate(self, params: dict | None) -> float:
        """eta0 (scikit-learn's default 0.01); with a schedule the rate is constant within a round."""
        return float({**self.defaults, **(params or {})}.get("eta0", 0.01))

    def local_gradient(self, params: dict | None, X: np.ndarray, y: np.ndarray, classes: np.ndarray,
                       n_features: int, global_arrays: NamedArrays, config: dict) -> list[np.ndarray]:
        arrays = dict(global_arrays)
        return one_vs_rest_gradient(X, y, classes, arrays["coef_"], arrays["intercept_"],
                                    float(self.setting(params, "alpha")), self.loss)

    def fit_local(self, previous: Any, params: dict | None, X: np.ndarray, y: np.ndarray, classes: np.ndarray,
                  n_features: int, global_arrays: NamedArrays | None, epochs: int, config: dict, seed: int, *,
                  losses: list[float] | None = None, correction: list[np.ndarray] | None = None) -> Any:
        """``epochs`` partial_fit passes from the global weights.

        The estimator is kept between rounds, so SGD's learning-rate
        schedule (``t_``) carries on; only the weights are replaced. With
        SCAFFOLD's ``correction`` the rate is constant (eta0, or the
        server's) and the pass goes in chunks of ``CORRECTION_CHUNK`` rows,
        each followed by the correction of its per-row steps:
        w ← w − η·rows·(c − c_i).
        """
        est = previous if isinstance(previous, SGDClassifier) else None
        if est is None:
            est = self.build(params, seed)
            X0, y0 = phantom_rows(classes, n_features)
            est.partial_fit(X0, y0, classes=classes)  # allocates the global shapes, then overwritten below
            est.t_ = 1.0
        lr = config.get("learning_rate")
        if lr is None and correction is not None:
            lr = self.learning_rate(params)
        if lr is not None:
            est.set_params(learning_rate="constant", eta0=float(lr))
        if global_arrays is not None:
            self.set_parameters(est, global_arrays)
        mu = float(config.get("proximal_mu") or 0.0)
        anchor = [a for _, a in global_arrays] if (mu > 0 and global_arrays is not None) else None
        for _ in range(epochs):
            if correction is None:
                est.partial_fit(X, y, classes=classes)
            else:
                for start in range(0, len(y), CORRECTION_CHUNK):
                    chunk = slice(start, start + CORRECTION_CHUNK)
                    est.partial_fit(X[chunk], y[chunk], classes=classes)
                    rows = len(y[chunk]) * float(est.eta0)
                    est.coef_ -= rows * correction[0]
                    est.intercept_ -= rows * correction[1]
            if anchor is not None:  # FedProx: one proximal step per epoch (see fl/learning/fedprox.py)
                est.coef_[...], est.intercept_[...] = proximal_step([est.coef_, est.intercept_], anchor, mu)
            if losses is not None:  # SGD keeps no loss of its own: the local rows' loss (log or hinge) after the pass
                losses.append(score_classifier(est, X, y, classes, with_f1=False)["loss"])
        return est


class SGDLogLossAdapter(SGDAdapter):
    name = "sgd"
    label = "SGD classifier (log loss)"


class LinearSVMAdapter(SGDAdapter):
    name = "linear_svm"
    label = "Linear SVM (hinge loss, SGD)"
    loss = "hinge"
