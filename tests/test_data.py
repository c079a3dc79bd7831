"""Tests for fl.data: built-in datasets, the server's held-out split, standardization, FederatedData."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.tree import DecisionTreeClassifier

from fl.data import (
    DATASETS,
    DataError,
    Dataset,
    apply_standardization,
    label_distribution,
    load_dataset,
    make_federated_data,
    split_server_holdout,
    standardization_stats,
)

BUILT_IN = [d for d in DATASETS if d != "csv"]


def _id_dataset(n: int = 300, n_classes: int = 3) -> Dataset:
    """A dataset whose first feature is the row id, to track rows through splits."""
    y = np.arange(n, dtype=np.int64) % n_classes
    X = np.column_stack([np.arange(n, dtype=np.float64), np.random.default_rng(0).normal(size=n) * 10 + y])
    return Dataset("ids", X, y, ["id", "v"], list(range(n_classes)), [])


# ---------------------------------------------------------------- built-in datasets

@pytest.mark.parametrize("name", BUILT_IN)
def test_builtin_dataset_loads_with_sane_shapes(name):
    # Prepare
    expected_rows = {"iris": 150, "wine": 178, "breast_cancer": 569, "digits": 1797, "xor": 1000, "synthetic": 1000}

    # Execute
    ds = load_dataset(name)

    # Assert
    assert ds.X.dtype == np.float64 and ds.X.ndim == 2
    assert ds.X.shape[0] == len(ds.y) == expected_rows[name]
    assert len(ds.feature_names) == ds.X.shape[1]
    assert ds.y.dtype == np.int64
    assert ds.classes == sorted(set(ds.y.tolist())) and len(ds.classes) >= 2
    assert json.loads(json.dumps(ds.classes)) == ds.classes
    assert all(type(c) is int for c in ds.classes)


def test_sklearn_feature_names_are_kept():
    # Prepare / Execute
    digits, iris = load_dataset("digits"), load_dataset("iris")

    # Assert
    assert digits.feature_names[0].startswith("pixel_0")
    assert iris.feature_names[0] == "sepal length (cm)"


@pytest.mark.parametrize("n_features,n_classes", [(2, 4), (6, 50), (20, 3)])
def test_synthetic_accepts_any_valid_size(n_features, n_classes):
    # Prepare / Execute
    ds = load_dataset("synthetic", n_samples=500, n_features=n_features, n_classes=n_classes, seed=3)

    # Assert
    assert ds.X.shape == (500, n_features)
    assert len(ds.classes) == n_classes


def test_synthetic_is_seeded():
    # Prepare / Execute
    a, b = load_dataset("synthetic", seed=7), load_dataset("synthetic", seed=7)
    c = load_dataset("synthetic", seed=8)

    # Assert
    assert np.array_equal(a.X, b.X) and np.array_equal(a.y, b.y)
    assert not np.array_equal(a.X, c.X)


@pytest.mark.parametrize("kwargs,word", [
    ({"n_samples": 10}, "n_samples"), ({"n_features": 1}, "n_features"),
    ({"n_classes": 1}, "n_classes"), ({"n_classes": 51}, "n_classes"),
    ({"n_features": 2, "n_classes": 5}, "features"),
])
def test_synthetic_rejects_bad_ranges(kwargs, word):
    # Prepare / Execute / Assert
    with pytest.raises(DataError, match=word):
        load_dataset("synthetic", **kwargs)


def test_unknown_dataset_lists_choices():
    # Prepare / Execute
    with pytest.raises(DataError) as err:
        load_dataset("mnist")

    # Assert
    assert all(name in str(err.value) for name in DATASETS)


def test_xor_needs_a_nonlinear_model():
    # Prepare
    ds = load_dataset("xor", n_samples=800, seed=1)
    X_tr, X_te, y_tr, y_te = train_test_split(ds.X, ds.y, test_size=0.25, random_state=0)

    # Execute
    linear = LogisticRegression().fit(X_tr, y_tr).score(X_te, y_te)
    tree = DecisionTreeClassifier(random_state=0).fit(X_tr, y_tr).score(X_te, y_te)

    # Assert
    assert ds.feature_names == ["x0", "x1"]
    assert linear < 0.75
    assert tree > 0.9


def test_xor_has_a_minimum_size():
    # Prepare / Execute
    ds = load_dataset("xor", n_samples=5)

    # Assert
    assert len(ds.y) == 40


# ---------------------------------------------------------------- server split

def test_split_is_stratified_and_disjoint():
    # Prepare
    ds = _id_dataset(300, 3)

    # Execute
    split = split_server_holdout(ds, test_size=0.2, val_size=0.1, seed=0)

    # Assert
    ids = [set(a[:, 0].tolist()) for a in (split.X_train, split.X_test, split.X_val)]
    assert len(split.y_test) == 60 and len(split.y_val) == 30 and len(split.y_train) == 210
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert set().union(*ids) == set(range(300))
    assert np.bincount(split.y_test).tolist() == [20, 20, 20]
    assert np.bincount(split.y_val).tolist() == [10, 10, 10]


def test_split_without_val_gives_empty_val_and_tolerates_rare_classes():
    # Prepare
    ds = _id_dataset(50, 2)
    ds.y = ds.y.copy()
    ds.y[0] = 7  # a class with one row cannot be stratified

    # Execute
    split = split_server_holdout(ds, test_size=0.2, seed=1)

    # Assert
    assert split.X_val.shape == (0, 2) and len(split.y_val) == 0
    assert len(split.y_train) + len(split.y_test) == 50


@pytest.mark.parametrize("test_size,val_size", [(0.0, 0.0), (0.9, 0.0), (0.2, 0.5), (0.5, 0.4), (0.2, -0.1)])
def test_split_rejects_bad_sizes(test_size, val_size):
    # Prepare / Execute / Assert
    with pytest.raises(DataError):
        split_server_holdout(_id_dataset(), test_size=test_size, val_size=val_size)


# ---------------------------------------------------------------- standardization and federated view

def test_standardization_stats_and_apply():
    # Prepare
    X = np.array([[1.0, 5.0], [3.0, 5.0]])

    # Execute
    stats = standardization_stats(X)
    scaled = apply_standardization(X, stats)
    untouched = apply_standardization(X, None)

    # Assert
    assert stats == {"mean": [2.0, 5.0], "scale": [1.0, 1.0]}
    assert json.loads(json.dumps(stats)) == stats
    assert scaled.tolist() == [[-1.0, 0.0], [1.0, 0.0]]
    assert untouched.tolist() == X.tolist() and untouched is not X
    assert np.allclose(apply_standardization(X, {"standardize": stats}), scaled)
    with pytest.raises(DataError):
        apply_standardization(np.ones((2, 3)), stats)


def test_federated_data_stats_come_from_training_pool_only():
    # Prepare
    ds = load_dataset("wine")

    # Execute
    fd = make_federated_data(ds, n_clients=4, partition_method="dirichlet", alpha=0.5, seed=3)

    # Assert
    assert fd.stats == standardization_stats(fd.split.X_train)
    assert fd.stats != standardization_stats(np.vstack([fd.split.X_train, fd.split.X_test]))
    assert not np.allclose(fd.stats["mean"], standardization_stats(ds.X)["mean"])


def test_federated_data_clients_are_raw_and_reproducible():
    # Prepare
    ds = load_dataset("iris")

    # Execute
    fd = make_federated_data(ds, n_clients=5, partition_method="shards", seed=9)
    again = make_federated_data(load_dataset("iris"), n_clients=5, partition_method="shards", seed=9)
    X2, y2 = fd.client_data(2)

    # Assert
    assert np.array_equal(X2, fd.split.X_train[fd.parts[2]]) and np.array_equal(y2, fd.split.y_train[fd.parts[2]])
    assert X2.max() > 3  # raw centimetres, not standardized
    for i in range(5):
        assert all(np.array_equal(a, b) for a, b in zip(fd.client_data(i), again.client_data(i)))
    assert sum(len(p) for p in fd.parts) == len(fd.split.y_train)
    assert label_distribution(fd.split.y_train, fd.parts, ds.classes).sum() == len(fd.split.y_train)
    with pytest.raises(DataError):
        fd.client_data(5)
