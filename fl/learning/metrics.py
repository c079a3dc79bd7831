"""Scores a classifier the same way everywhere: server, clients, baselines.

Every estimator is scored against the task's *global* class list, so a model
that never saw a class still yields probabilities of the global width.

Metrics that are not a per-row mean (macro F1, balanced accuracy, per-class
precision and recall) are computed from a **confusion matrix** of counts,
never by averaging ratios: counts from many sites add up to the counts of the
pooled rows, so ``metrics_from_confusion(sum of the sites' matrices)`` equals
the metric of the pooled predictions exactly (a mean of per-site F1s does
not). Accuracy and log loss are per-row means, so their sample-weighted mean
is exact too.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.special import expit
from sklearn.linear_model import LogisticRegression
from sklearn.utils.extmath import softmax as sk_softmax


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
    An estimator whose probabilities are not one column per class it knows
    (scikit-learn's MLP fit on a single class answers two columns for one
    class) is taken at its word: probability 1 for the class it predicts.
    """
    classes = np.asarray(classes)
    est_classes = np.asarray(estimator.classes_)
    fast = _logistic_proba(estimator, X)
    if fast is not None:
        proba = fast
    elif hasattr(estimator, "predict_proba") and _has_proba(estimator):
        with np.errstate(all="ignore"):
            proba = np.asarray(estimator.predict_proba(X), dtype=np.float64)
    else:
        scores = np.asarray(estimator.decision_function(X), dtype=np.float64)
        if scores.ndim == 1:  # binary margin -> two columns
            scores = np.column_stack([-scores, scores])
        proba = softmax(scores)
    if proba.ndim != 2 or proba.shape[1] != len(est_classes):
        proba = _one_hot(np.asarray(estimator.predict(X)), est_classes)
    if proba.shape[1] == len(classes) and np.array_equal(est_classes, classes):
        return np.nan_to_num(proba, nan=1.0 / len(classes))
    out = np.zeros((proba.shape[0], len(classes)))
    positions = np.searchsorted(classes, est_classes)
    out[:, positions] = proba
    return np.nan_to_num(out, nan=1.0 / len(classes))


def _logistic_proba(estimator: Any, X: Any) -> np.ndarray | None:
    """LogisticRegression.predict_proba without its input checks, the same operations in the same order (so
    the same bits); None when the checks could matter (not a finite float64 array of the fitted width).

    The checks (namespaces, dataframe detection, finiteness) cost more than the product for a client's few
    dozen rows: about half of scoring a small client, which every client does for every fit and evaluate.
    """
    if type(estimator) is not LogisticRegression or not isinstance(X, np.ndarray) or X.dtype != np.float64:
        return None
    coef, intercept = getattr(estimator, "coef_", None), getattr(estimator, "intercept_", None)
    if coef is None or intercept is None or X.ndim != 2 or coef.ndim != 2 or X.shape[1] != coef.shape[1]:
        return None
    if not np.isfinite(X).all():
        return None  # scikit-learn's own path says what is wrong
    scores = X @ coef.T + intercept  # decision_function (safe_sparse_dot of dense arrays is ``@``)
    if len(estimator.classes_) <= 2:  # _predict_proba_lr of a binary model
        prob = expit(scores.reshape(-1) if scores.shape[1] == 1 else scores)
        if prob.ndim != 1:
            return None
        return np.stack([1 - prob, prob], axis=1)
    return sk_softmax(scores, copy=False)


def _one_hot(predicted: np.ndarray, est_classes: np.ndarray) -> np.ndarray:
    """Probability 1 for each row's predicted class, in the column order of ``est_classes``."""
    out = np.zeros((len(predicted), len(est_classes)))
    out[np.arange(len(predicted)), np.searchsorted(est_classes, predicted)] = 1.0
    return out


def _has_proba(estimator: Any) -> bool:
    """SGD with hinge loss exposes predict_proba but raises when called."""
    loss = getattr(estimator, "loss", None)
    return not (type(estimator).__name__ == "SGDClassifier" and loss not in ("log_loss", "modified_huber"))


def uses_hinge_loss(estimator: Any) -> bool:
    """True for margin classifiers whose natural loss is the hinge loss."""
    return type(estimator).__name__ == "SGDClassifier" and getattr(estimator, "loss", None) == "hinge"


def score_classifier(estimator: Any, X: np.ndarray, y: np.ndarray, classes: np.ndarray,
                     with_f1: bool = True, with_confusion: bool = False) -> dict[str, Any]:
    """Accuracy, loss, macro F1 and balanced accuracy of ``estimator`` on (X, y), every label of ``y`` among
    ``classes``; with ``with_confusion`` also ``confusion``, the (k, k) int64 matrix of counts (row: true class,
    column: predicted class, in the order of ``classes``).

    loss is the log loss over the global classes (probabilities clipped to
    [1e-15, 1] and renormalised), or the hinge loss for hinge-loss models,
    whose probabilities would be made up. Computed with numpy alone: with
    many small clients scikit-learn's input checks cost more than the
    scoring (tests/test_metrics.py checks every number against scikit-learn).
    """
    classes = np.asarray(classes)
    if len(y) == 0:
        empty: dict[str, Any] = {"accuracy": math.nan, "loss": math.nan, "f1_macro": math.nan,
                                 "balanced_accuracy": math.nan}
        if with_confusion:
            empty["confusion"] = np.zeros((len(classes), len(classes)), dtype=np.int64)
        return empty
    index = np.searchsorted(classes, np.asarray(y))
    with np.errstate(all="ignore"):
        if uses_hinge_loss(estimator):
            margins = aligned_margins(estimator, X, classes)
            pred_index = np.searchsorted(classes, estimator.predict(X))
            loss = hinge(margins, index)
        else:
            proba = aligned_proba(estimator, X, classes)
            pred_index = np.argmax(proba, axis=1)
            clipped = np.clip(proba, 1e-15, 1.0)
            clipped /= clipped.sum(axis=1, keepdims=True)
            loss = float(-np.mean(np.log(clipped[np.arange(len(index)), index])))
    scores: dict[str, Any] = {"accuracy": float(np.mean(pred_index == index)), "loss": loss}
    if with_f1 or with_confusion:
        matrix = confusion_matrix(index, pred_index, len(classes))
        from_counts = metrics_from_confusion(matrix)
        scores["f1_macro"] = from_counts["f1_macro"]
        scores["balanced_accuracy"] = from_counts["balanced_accuracy"]
        if with_confusion:
            scores["confusion"] = matrix
    return scores


def aligned_margins(estimator: Any, X: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Decision margins in the column order of ``classes`` (a 1-D margin for a two-class task).

    A class the model never saw gets the row's lowest margin minus one: never
    predicted, and a finite loss when it is the true label.
    """
    margins = np.asarray(estimator.decision_function(X), dtype=np.float64)
    est_classes = np.asarray(estimator.classes_)
    same = len(est_classes) == len(classes) and np.array_equal(est_classes, classes)
    if margins.ndim == 1:
        if same:
            return margins
        margins = np.column_stack([-margins, margins])
    if same:
        return margins
    out = np.full((margins.shape[0], len(classes)), np.nan)
    out[:, np.searchsorted(classes, est_classes)] = margins
    floor = np.nanmin(out, axis=1, keepdims=True) - 1.0
    return np.where(np.isnan(out), floor, out)


def hinge(margins: np.ndarray, index: np.ndarray) -> float:
    """scikit-learn's hinge_loss: binary margins against ±1, else Crammer-Singer over the classes."""
    if margins.ndim == 1:
        sign = np.where(index == 1, 1.0, -1.0)
        return float(np.mean(np.maximum(0.0, 1.0 - sign * margins)))
    rows = np.arange(len(index))
    true = margins[rows, index]
    others = margins.copy()
    others[rows, index] = -np.inf
    return float(np.mean(np.maximum(0.0, 1.0 - (true - others.max(axis=1)))))


def confusion_matrix(index: np.ndarray, pred_index: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts of (true class, predicted class) over class positions 0..n_classes-1: a (k, k) int64 matrix."""
    flat = np.asarray(index, dtype=np.int64) * n_classes + np.asarray(pred_index, dtype=np.int64)
    return np.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def per_class(matrix: np.ndarray) -> dict[str, list[float | None]]:
    """Precision, recall and F1 of every class from a confusion matrix (rows true, columns predicted).

    A class with no true rows has no recall (None: absent, not 0); a class
    never predicted has no precision (None). F1 is 2·TP / (2·TP + FP + FN),
    None for a class neither present nor predicted, 0 for one present but
    never predicted correctly.
    """
    m = np.asarray(matrix, dtype=np.float64)
    tp = np.diag(m)
    true_rows, predicted = m.sum(axis=1), m.sum(axis=0)
    f1_denominator = 2 * tp + (predicted - tp) + (true_rows - tp)

    def ratio(num: np.ndarray, den: np.ndarray) -> list[float | None]:
        return [float(a / b) if b > 0 else None for a, b in zip(num, den)]

    return {"precision": ratio(tp, predicted), "recall": ratio(tp, true_rows), "f1": ratio(2 * tp, f1_denominator),
            "support": [int(v) for v in true_rows]}


def metrics_from_confusion(matrix: np.ndarray) -> dict[str, float]:
    """accuracy, f1_macro and balanced_accuracy of the predictions a confusion matrix counts.

    As scikit-learn computes them on the rows themselves: macro F1 averages
    over the classes that occur among the true or the predicted labels
    (``f1_score(average="macro")``), balanced accuracy is the mean recall
    over the classes with true rows (``balanced_accuracy_score``). NaN for
    an empty matrix.
    """
    m = np.asarray(matrix, dtype=np.float64)
    total = m.sum()
    if total <= 0:
        return {"accuracy": math.nan, "f1_macro": math.nan, "balanced_accuracy": math.nan}
    scores = per_class(m)
    f1 = [v for v in scores["f1"] if v is not None]
    recall = [v for v in scores["recall"] if v is not None]
    return {"accuracy": float(np.trace(m) / total), "f1_macro": float(np.mean(f1)) if f1 else math.nan,
            "balanced_accuracy": float(np.mean(recall)) if recall else math.nan}


def macro_f1(index: np.ndarray, pred_index: np.ndarray, n_classes: int) -> float:
    """scikit-learn's ``f1_score(average="macro")``: over the classes among the true or predicted labels."""
    return metrics_from_confusion(confusion_matrix(index, pred_index, n_classes))["f1_macro"]
