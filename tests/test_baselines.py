"""Baselines: every model with a one-class client, each baseline on its own, the majority class by hand."""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import numpy as np
import pytest

from fl.data import load_dataset, make_federated_data
from fl.learning.metrics import aligned_proba, score_classifier
from fl.learning.models import MODELS
from fl.learning.training import LocalModel
from fl.runs import baselines as baselines_module
from fl.runs.baselines import compute_baselines, majority_baseline, training_rows
from fl.runs.config import RunConfig
from fl.runs.live_run import RunState
from fl.wire import blobs

SMALL = {"random_forest": {"n_estimators": 5}, "gradient_boosting": {"n_estimators": 5}}
IDS = ["client_000", "client_001", "client_002"]


def _rows(n_classes: int, n: int = 90, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Separable blobs: class c around (3c, 3c, 3c, 3c)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    return rng.normal(size=(n, 4)) + 3.0 * y[:, None], y


@pytest.fixture(scope="module")
def iris_three_clients():
    """Iris in three clients: client_000 holds class 0 alone, the other two the rest."""
    data = make_federated_data(load_dataset("iris"), n_clients=3, partition_method="iid", seed=0)
    y = data.split.y_train
    rows = np.arange(len(y))
    rest = rows[y != 0]
    return dataclasses.replace(data, parts=[rows[y == 0], rest[::2], rest[1::2]])


def _config(model: str = "logreg", **kw) -> RunConfig:
    return RunConfig(dataset="iris", model=model, model_params=SMALL.get(model, {}), clients=3, seed=0, **kw)


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_fit_on_one_class_scores_over_the_global_classes(name, n_classes):
    # Prepare: a client whose rows are all of class 1; a test split with every class
    X, y = _rows(n_classes)
    classes = np.arange(n_classes)
    one = y == 1
    # Execute
    model = LocalModel(name, SMALL.get(name, {}), classes, X.shape[1], seed=0).fit(X[one], y[one], whole_model=True)
    proba = aligned_proba(model.estimator_, X, classes)
    scores = score_classifier(model.estimator_, X, y, classes)
    # Assert: global width, rows that sum to 1, the one class answered, finite numbers
    assert proba.shape == (len(y), n_classes)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert set(model.estimator_.predict(X)) == {1}
    assert scores["accuracy"] == pytest.approx(1 / n_classes)
    assert all(math.isfinite(v) for v in scores.values())
    loaded = blobs.load_model(blobs.dump_model(model.estimator_))  # it travels to stacking and voting too
    np.testing.assert_array_equal(loaded.predict(X[:5]), model.estimator_.predict(X[:5]))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_gets_its_baselines_with_a_one_class_client(name, iris_three_clients):
    # Prepare
    config = _config(name)
    # Execute
    result = compute_baselines(config, iris_three_clients, IDS)
    # Assert: all three present, none with a reason, the one-class client in the local-only mean
    for kind in ("centralized", "local_only", "majority"):
        assert math.isfinite(result[kind]["accuracy"]) and "reason" not in result[kind], (kind, result[kind])
    assert set(result["local_only"]["per_client"]) == set(IDS) and result["local_only"]["left_out"] == {}
    assert result["local_only"]["n_clients"] == 3
    assert result["centralized"]["accuracy"] > 0.8


def test_a_failing_centralized_fit_keeps_the_other_baselines(iris_three_clients, monkeypatch):
    # Prepare: the pooled fit fails (every row of the three clients), the per-client fits do not
    config = _config()
    pooled = sum(len(training_rows(config, iris_three_clients, i, cid)[1]) for i, cid in enumerate(IDS))
    real = baselines_module._fit_and_score

    def fit_and_score(config, X, y, *args):
        if len(y) == pooled:
            raise ValueError("out of memory")
        return real(config, X, y, *args)

    monkeypatch.setattr(baselines_module, "_fit_and_score", fit_and_score)
    # Execute
    result = compute_baselines(config, iris_three_clients, IDS)
    # Assert
    assert result["centralized"]["accuracy"] is None and "out of memory" in result["centralized"]["reason"]
    assert math.isfinite(result["local_only"]["accuracy"]) and result["local_only"]["n_clients"] == 3
    assert math.isfinite(result["majority"]["accuracy"])


def test_a_client_that_cannot_fit_is_left_out_of_the_local_mean_with_its_reason(iris_three_clients):
    # Prepare: client_002 holds no rows at all
    data = dataclasses.replace(iris_three_clients, parts=[*iris_three_clients.parts[:2], np.array([], dtype=int)])
    # Execute
    result = compute_baselines(_config(), data, IDS)
    # Assert: the mean is over the two others, and says so; the others are untouched
    local = result["local_only"]
    assert local["left_out"] == {"client_002": "no training rows"}
    assert (local["n_clients"], local["clients_total"]) == (2, 3)
    assert local["accuracy"] == pytest.approx(np.mean(list(local["per_client"].values())))
    assert math.isfinite(result["centralized"]["accuracy"]) and math.isfinite(result["majority"]["accuracy"])


def test_no_client_able_to_fit_makes_local_only_a_reason(iris_three_clients, monkeypatch):
    # Prepare: every fit fails but the pooled one
    config = _config()
    pooled = sum(len(training_rows(config, iris_three_clients, i, cid)[1]) for i, cid in enumerate(IDS))
    real = baselines_module._fit_and_score

    def fit_and_score(config, X, y, *args):
        if len(y) != pooled:
            raise ValueError("solver diverged")
        return real(config, X, y, *args)

    monkeypatch.setattr(baselines_module, "_fit_and_score", fit_and_score)
    # Execute
    result = compute_baselines(config, iris_three_clients, IDS)
    # Assert
    assert result["local_only"]["accuracy"] is None and "solver diverged" in result["local_only"]["reason"]
    assert set(result["local_only"]["left_out"]) == set(IDS)
    assert math.isfinite(result["centralized"]["accuracy"]) and math.isfinite(result["majority"]["accuracy"])


def test_majority_baseline_equals_a_hand_computation():
    # Prepare: training labels 0,0,0,1,1,2 over classes 0..3 (no client holds 3); the test split holds 3
    y_train = np.array([0, 0, 0, 1, 1, 2])
    y_test = np.array([0, 1, 3, 0])
    # Execute
    result = majority_baseline(y_train, np.zeros((4, 2)), y_test, np.arange(4))
    # Assert: always 0 -> 2 of 4 right; log loss of the prior (1/2, 1/3, 1/6, 0 clipped to 1e-15)
    prior = np.array([3, 2, 1, 1e-15 * 6]) / 6
    prior /= prior.sum()
    assert result["class"] == 0 and isinstance(result["class"], int)
    assert result["accuracy"] == pytest.approx(0.5)
    assert result["loss"] == pytest.approx(-np.mean(np.log(prior[y_test])))
    # class 0: 2TP / (2TP + FP 2); classes 1 and 3 score 0; class 2, neither true nor predicted, is left out of the
    # mean, as scikit-learn's f1_score(average="macro") leaves it out
    assert result["f1_macro"] == pytest.approx((4 / 6) / 3)


def test_majority_baseline_of_a_run_is_its_pooled_training_labels(iris_three_clients):
    # Prepare
    config = _config()
    y_pool = np.concatenate([training_rows(config, iris_three_clients, i, cid)[1] for i, cid in enumerate(IDS)])
    counts = np.bincount(y_pool, minlength=3)
    # Execute
    result = compute_baselines(config, iris_three_clients, IDS)["majority"]
    # Assert
    assert result["class"] == int(np.argmax(counts))
    assert result["accuracy"] == pytest.approx(np.mean(iris_three_clients.split.y_test == result["class"]))


def test_data_that_cannot_be_prepared_gives_every_baseline_the_reason(iris_three_clients, monkeypatch):
    # Prepare: a handle whose baselines cannot even start
    from fl.runs import simulation

    def broken(*args, **kwargs):
        raise MemoryError("cannot allocate the pool")

    monkeypatch.setattr(baselines_module, "compute_baselines", broken)
    state = RunState("r", _config(), IDS, {})
    handle = SimpleNamespace(config=_config(), data=iris_three_clients, state=state, writer=None,
                             server=SimpleNamespace(stop_requested=SimpleNamespace(is_set=lambda: False)))
    # Execute
    simulation._baselines(handle, IDS)
    # Assert
    snap = state.snapshot()
    assert snap["baselines_status"] == "failed"
    for kind in ("centralized", "local_only", "majority"):
        assert snap["baselines"][kind]["accuracy"] is None
        assert "cannot allocate the pool" in snap["baselines"][kind]["reason"]


def test_a_stopped_run_keeps_the_baselines_already_known(iris_three_clients):
    # Prepare: Stop is pressed as soon as the majority and centralized baselines are in
    from fl.runs import simulation

    state = RunState("r", _config(), IDS, {})
    stopped = SimpleNamespace(is_set=lambda: state.snapshot()["baselines"] is not None)
    handle = SimpleNamespace(config=_config(), data=iris_three_clients, state=state, writer=None,
                             server=SimpleNamespace(stop_requested=stopped))
    # Execute
    simulation._baselines(handle, IDS)
    # Assert: those two stay; local-only says why it is missing
    snap = state.snapshot()
    assert snap["baselines_status"] == "skipped"
    assert math.isfinite(snap["baselines"]["centralized"]["accuracy"])
    assert math.isfinite(snap["baselines"]["majority"]["accuracy"])
    assert snap["baselines"]["local_only"]["reason"] == "the run was stopped before it was computed"
