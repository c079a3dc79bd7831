"""Logistic regression's objective in numpy, and local training as plain gradient steps.

The objective of a site with rows X (n, d), labels y over the task's classes:

    F(W, b) = (1/n) Σ ℓ(x_i, y_i; W, b) + (λ/2) ||W||²

with ℓ the binary log loss (one row of weights for ``classes[1]``, as
scikit-learn keeps two classes) or the multinomial one (a row per class).
scikit-learn's pooled objective ``C Σ ℓ + ½||W||²`` over all N training rows
of the federation is N·C times F with λ = 1 / (C·N), so with that λ the
sites' objectives, weighted by their rows, add up to the pooled one, and the
pooled optimum is scikit-learn's ``LogisticRegression(C)`` on the pooled rows.

``gradient_steps`` is the ``gd`` local solver: ``steps`` full-batch steps
``w ← w − η (∇F(w) + μ (w − w_global) + correction)``, where μ is FedProx's
proximal weight and ``correction`` SCAFFOLD's ``c − c_i`` (both optional),
η the server's rate (halved only where a step would not lower the site's
objective: Armijo's rule). One step from the global weights on every site,
averaged by rows, is exactly one step of gradient descent on the pooled
objective (tests/test_logistic.py).
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit, logsumexp, softmax

Arrays = list[np.ndarray]


def targets(y: np.ndarray, classes: np.ndarray, n_outputs: int) -> np.ndarray:
    """Binary targets for ``classes[1]`` (one output) or one-hot rows over the global classes."""
    if n_outputs == 1:
        return (y == classes[1]).astype(np.float64)
    return (np.asarray(y)[:, None] == np.asarray(classes)[None, :]).astype(np.float64)


def loss_and_gradient(X: np.ndarray, target: np.ndarray, W: np.ndarray, b: np.ndarray,
                      l2: float) -> tuple[float, np.ndarray, np.ndarray]:
    """F(W, b) and its gradient (dW, db): the mean log loss over the rows plus (l2/2)||W||² (b is not penalised)."""
    n = max(len(X), 1)
    z = X @ W.T + b
    if W.shape[0] == 1:
        z1 = z[:, 0]
        loss = float(np.sum(np.logaddexp(0.0, z1) - target * z1)) / n
        dz = ((expit(z1) - target) / n)[:, None]
    else:
        loss = float(np.sum(logsumexp(z, axis=1) - np.sum(target * z, axis=1))) / n
        dz = (softmax(z, axis=1) - target) / n
    loss += 0.5 * l2 * float(np.sum(W * W))
    return loss, dz.T @ X + l2 * W, dz.sum(axis=0)


ARMIJO = 1e-4  # sufficient decrease a step must bring, relative to its slope
MAX_HALVINGS = 30


def gradient_steps(X: np.ndarray, y: np.ndarray, classes: np.ndarray, W: np.ndarray, b: np.ndarray, *,
                   steps: int, learning_rate: float, l2: float, mu: float = 0.0,
                   anchor: tuple[np.ndarray, np.ndarray] | None = None, correction: Arrays | None = None,
                   losses: list[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``steps`` gradient steps of size ``learning_rate`` from (W, b); returns the new (W, b), inputs untouched.

    A step that would not lower the site's objective enough (Armijo's rule:
    by at least 1e-4 · step · slope) is halved until it does: on standardised
    features with the default rate this does not happen, and every site takes
    exactly the server's step; on features of large scale (a server without
    a global scaler) it keeps a step from overshooting and diverging. Steps
    with SCAFFOLD's correction are taken as the server sizes them: they
    follow the federation's direction, which need not lower this site's
    objective. ``losses`` gets the local objective after each step
    (the proximal term included).
    """
    W, b = np.array(W, dtype=np.float64), np.array(b, dtype=np.float64)
    target = targets(y, classes, W.shape[0])
    anchor = anchor if mu > 0 else None

    def objective(W: np.ndarray, b: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        loss, dW, db = loss_and_gradient(X, target, W, b, l2)
        if anchor is not None:
            dW, db = dW + mu * (W - anchor[0]), db + mu * (b - anchor[1])
            loss += 0.5 * mu * float(np.sum((W - anchor[0]) ** 2) + np.sum((b - anchor[1]) ** 2))
        return loss, dW, db

    loss, dW, db = objective(W, b)
    for _ in range(max(1, int(steps))):
        step_W, step_b = (dW + correction[0], db + correction[1]) if correction is not None else (dW, db)
        # Corrected (SCAFFOLD) steps follow the federation's direction, not the site's descent: not checked.
        slope = float(np.sum(dW * step_W) + np.sum(db * step_b)) if correction is None else 0.0
        rate = learning_rate
        for _ in range(MAX_HALVINGS):
            new_W, new_b = W - rate * step_W, b - rate * step_b
            new = objective(new_W, new_b)
            if slope <= 0 or new[0] <= loss - ARMIJO * rate * slope:
                break
            rate /= 2
        W, b = new_W, new_b
        loss, dW, db = new
        if losses is not None:
            losses.append(loss)
    return W, b


def one_vs_rest_gradient(X: np.ndarray, y: np.ndarray, classes: np.ndarray, W: np.ndarray, b: np.ndarray,
                         alpha: float, loss: str) -> Arrays:
    """The gradient of scikit-learn's SGDClassifier objective at (W, b): per output (one for two classes, one
    per class above: one-vs-rest), the mean log or hinge loss of ±1 targets plus (alpha/2)||w||²."""
    W, b = np.asarray(W, dtype=np.float64), np.asarray(b, dtype=np.float64)
    sign = 2.0 * targets(y, classes, W.shape[0]).reshape(len(y), -1) - 1.0
    z = X @ W.T + b
    n = max(len(X), 1)
    if loss == "hinge":
        dz = np.where(sign * z < 1.0, -sign, 0.0) / n
    else:
        dz = -sign * expit(-sign * z) / n
    return [dz.T @ X + alpha * W, dz.sum(axis=0)]


def gradient_at(X: np.ndarray, y: np.ndarray, classes: np.ndarray, W: np.ndarray, b: np.ndarray,
                l2: float) -> Arrays:
    """∇F at (W, b): a site's SCAFFOLD control variate at the global model (option I of the paper)."""
    _, dW, db = loss_and_gradient(X, targets(y, classes, W.shape[0]), np.asarray(W, dtype=np.float64),
                                  np.asarray(b, dtype=np.float64), l2)
    return [dW, db]
