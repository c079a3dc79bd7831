"""FedProx (Li et al., MLSys 2020): keep local training near the global model.

Each client minimises F_k(w) + (μ/2)·||w − w_global||² instead of F_k(w).
How the proximal term enters each model's local training:

- logreg with the ``gd`` local solver (the default): exactly, as a term of
  every gradient step (fl/learning/logistic.py).
- logreg with the ``lbfgs`` local solver: exactly. Scikit-learn's solver cannot take an extra term, so with
  μ > 0 the client minimises, with SciPy's L-BFGS-B for ``local_epochs``
  iterations warm-started at w_global,
      (1/S) Σ s_i ℓ(x_i, y_i; W, b) + ||W||² / (2 C S) + (μ/2)(||W − W_g||² + ||b − b_g||²)
  where ℓ is the multinomial (or binary) log loss and S the number of rows:
  scikit-learn's own objective (C Σ ℓ + ½||W||²) divided by C·S, plus the
  proximal term.
- sgd, linear_svm, mlp: after every local epoch (one partial_fit pass) the
  weights take one proximal step of unit length towards the global weights,
      w ← (w + μ w_g) / (1 + μ),
  the proximal operator of (μ/2)||w − w_g||². μ = 0 leaves training
  unchanged; a large μ keeps the client at the global model.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

from fl.learning.logistic import loss_and_gradient, targets

Arrays = list[np.ndarray]


def proximal_step(params: Arrays, global_params: Arrays, mu: float) -> Arrays:
    """prox of (mu/2)||w - w_g||^2 with unit step: (w + mu w_g) / (1 + mu)."""
    return [(np.asarray(w, dtype=np.float64) + mu * np.asarray(g, dtype=np.float64)) / (1.0 + mu)
            for w, g in zip(params, global_params)]


def prox_logreg(X: np.ndarray, y: np.ndarray, classes: np.ndarray, coef: np.ndarray, intercept: np.ndarray,
                C: float, mu: float, max_iter: int) -> tuple[np.ndarray, np.ndarray]:
    """Logistic regression with the FedProx term, warm-started at (coef, intercept) = the global weights
    (the ``lbfgs`` local solver; the ``gd`` one takes the proximal term in its steps, fl/learning/logistic.py)."""
    n, d = X.shape
    k = coef.shape[0]
    g_coef, g_int = coef.astype(np.float64), intercept.astype(np.float64)
    target = targets(y, classes, k)
    l2 = 1.0 / (C * float(n))  # scikit-learn's C Σ ℓ + ½||W||², divided by C·n

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        W = theta[: k * d].reshape(k, d)
        b = theta[k * d:]
        loss, grad_W, grad_b = loss_and_gradient(X, target, W, b, l2)
        dW_prox, db_prox = W - g_coef, b - g_int
        loss += 0.5 * mu * (np.sum(dW_prox**2) + np.sum(db_prox**2))
        return float(loss), np.concatenate([(grad_W + mu * dW_prox).ravel(), grad_b + mu * db_prox])

    start = np.concatenate([g_coef.ravel(), g_int])
    result = minimize(objective, start, jac=True, method="L-BFGS-B", options={"maxiter": max(1, int(max_iter))})
    theta = result.x
    return theta[: k * d].reshape(k, d), theta[k * d:]
