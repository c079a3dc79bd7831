"""Our numpy scoring agrees with scikit-learn's metrics, number for number."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits, load_iris
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.metrics import accuracy_score, f1_score, hinge_loss, log_loss
from sklearn.tree import DecisionTreeClassifier

from fl.learning.metrics import aligned_proba, score_classifier


def _reference(estimator, X, y, classes):
    """The same three numbers the way the engine computed them before: scikit-learn's own metrics."""
    if getattr(estimator, "loss", None) == "hinge":
        pred = estimator.predict(X)
        loss = hinge_loss(y, estimator.decision_function(X), labels=classes)
    else:
        proba = aligned_proba(estimator, X, classes)
        pred = classes[np.argmax(proba, axis=1)]
        clipped = np.clip(proba, 1e-15, 1.0)
        loss = log_loss(y, clipped / clipped.sum(axis=1, keepdims=True), labels=classes)
    return {"accuracy": accuracy_score(y, pred), "loss": loss,
            "f1_macro": f1_score(y, pred, labels=classes, average="macro", zero_division=0)}


def _halves(loader, missing_last_class: bool):
    X, y = loader(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    X, y = X[order], y[order]
    half = len(y) // 2
    train = np.arange(half)
    if missing_last_class:
        train = train[y[train] != y.max()]
    return X[train], y[train], X[half:], y[half:], np.unique(y)


def _binary(return_X_y=True):
    X, y = load_iris(return_X_y=True)
    return X[y < 2], y[y < 2]


@pytest.mark.parametrize("make, loader, missing", [
    (lambda: LogisticRegression(max_iter=300), load_digits, True),
    (lambda: LogisticRegression(max_iter=300), load_iris, False),
    (lambda: LogisticRegression(max_iter=300), _binary, False),
    (lambda: SGDClassifier(loss="hinge", random_state=0), load_digits, False),
    (lambda: SGDClassifier(loss="hinge", random_state=0), _binary, False),
    (lambda: DecisionTreeClassifier(max_depth=3, random_state=0), load_digits, True),
])
def test_scores_equal_scikit_learns(make, loader, missing):
    # Prepare: some models never saw the last class, and are scored over all of them
    X_train, y_train, X, y, classes = _halves(loader, missing)
    estimator = make().fit(X_train, y_train)
    # Execute
    ours = score_classifier(estimator, X, y, classes)
    # Assert
    reference = _reference(estimator, X, y, classes)
    for key in ("accuracy", "loss", "f1_macro"):
        assert ours[key] == pytest.approx(reference[key], rel=1e-9, abs=1e-12), key


def test_a_margin_model_that_never_saw_a_class_gets_a_finite_loss():
    # Prepare: a linear SVM trained without class 9, scored on data that has it (scikit-learn refuses this)
    X_train, y_train, X, y, classes = _halves(load_digits, True)
    estimator = SGDClassifier(loss="hinge", random_state=0).fit(X_train, y_train)
    # Execute
    scores = score_classifier(estimator, X, y, classes)
    # Assert: class 9 is never predicted, and it costs at least 2 per row where it is the truth
    assert np.isfinite(scores["loss"]) and scores["loss"] >= 2 * np.mean(y == 9)
    assert scores["accuracy"] <= 1 - np.mean(y == 9)


def test_a_model_whose_probabilities_are_wider_than_its_classes_is_scored_by_its_predictions():
    # Prepare: scikit-learn's MLP fit on one class answers two probability columns for its one class
    from sklearn.neural_network import MLPClassifier

    X, y = load_iris(return_X_y=True)
    estimator = MLPClassifier(max_iter=20, random_state=0).fit(X[y == 1], y[y == 1])
    assert estimator.predict_proba(X[:3]).shape == (3, 2) and len(estimator.classes_) == 1
    # Execute
    proba = aligned_proba(estimator, X, np.array([0, 1, 2]))
    scores = score_classifier(estimator, X, y, np.array([0, 1, 2]))
    # Assert: probability 1 for the class it answers, every other column 0; scored like any model
    np.testing.assert_array_equal(proba, np.tile([0.0, 1.0, 0.0], (len(X), 1)))
    assert scores["accuracy"] == pytest.approx(np.mean(y == 1))
