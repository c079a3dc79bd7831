"""Scores a classifier the same way everywhere: server, clients, baselines.

Every estimator is scored against the task's *global* class list, so a model
that never saw a class still yields probabilities of the global width.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.metrics import f1_score, hinge_loss, log_loss


def softmax(scores: np.ndarray) -> np.ndarray:
    """Row-wise softmax, numerically stable."""
    shifted = scores - scores.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def aligned_proba(estimator: Any, X: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Class probabilities in the column order of ``classes``.

    Columns for classes the estimator never saw are zero. Estimators without
    ``predict_proba`` (hinge-loss linear SVM) get a softmax of their margins,
    which ranks classes the same way and is good enough for voting/stacking.
    """
    classes = np.asarray(classes)
    est_classes = np.asarray(estimator.classes_)
    if hasattr(estimator, "predict_proba") and _has_proba(estimator):
        with np.errstate(all="ignore"):
            proba = np.asarray(estimator.predict_proba(X), dtype=np.float64)
    else:
        scores = np.asarray(estimator.decision_function(X), dtype=np.float64)
        if scores.ndim == 1:  # binary margin -> two columns
            scores = np.column_stack([-scores, scores])
        proba = softmax(scores)
    if proba.shape[1] == len(classes) and np.array_equal(est_classes, classes):
        return np.nan_to_num(proba, nan=1.0 / len(classes))
    out = np.zeros((proba.shape[0], len(classes)))
    positions = np.searchsorted(classes, est_classes)
    out[:, positions] = proba
    return np.nan_to_num(out, nan=1.0 / len(classes))


def _has_proba(estimator: Any) -> bool:
    """SGD with hinge loss exposes predict_proba but raises when called."""
    loss = getattr(estimator, "loss", None)
    return not (type(estimator).__name__ == "SGDClassifier" and loss not in ("log_loss", "modified_huber"))


def uses_hinge_loss(estimator: Any) -> bool:
    """True for margin classifiers whose natural loss is the hinge loss."""
    return type(estimator).__name__ == "SGDClassifier" and getattr(estimator, "loss", None) == "hinge"


def score_classifier(estimator: Any, X: np.ndarray, y: np.ndarray, classes: np.ndarray,
                     with_f1: bool = True) -> dict[str, float]:
    """Accuracy, loss and macro F1 of ``estimator`` on (X, y).

    loss is the log loss over the global classes (probabilities clipped), or
    the multiclass hinge loss for hinge-loss models, whose probabilities would
    be made up.
    """
    classes = np.asarray(classes)
    if len(y) == 0:
        return {"accuracy": math.nan, "loss": math.nan, "f1_macro": math.nan}
    with np.errstate(all="ignore"):
        if uses_hinge_loss(estimator):
            pred = estimator.predict(X)
            margins = estimator.decision_function(X)
            loss = float(hinge_loss(y, margins, labels=classes))
        else:
            proba = aligned_proba(estimator, X, classes)
            pred = classes[np.argmax(proba, axis=1)]
            clipped = np.clip(proba, 1e-15, 1.0)
            clipped /= clipped.sum(axis=1, keepdims=True)
            loss = float(log_loss(y, clipped, labels=classes))
        scores = {"accuracy": float(np.mean(pred == y)), "loss": loss}
        if with_f1:
            scores["f1_macro"] = float(f1_score(y, pred, labels=classes, average="macro", zero_division=0))
        return scores
