"""Tests for fl.data: datasets, CSV handling, server split, partitioners, standardization."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.tree import DecisionTreeClassifier

from fl.data import (
    DATASETS, PARTITIONERS, DataError, Dataset, apply_standardization, features_from_frame,
    label_distribution, load_client_csv, load_dataset, make_federated_data, normalize_labels,
    partition, split_server_holdout, standardization_stats,
)

BUILT_IN = [d for d in DATASETS if d != "csv"]

CSV_BYTES = (
    b"age,color,city,notes,label\n"
    b"30,red,paris,n1,yes\n"
    b",blue,rome,n2,no\n"
    b"50,red,paris,n3,\n"
    b"40,green,oslo,n4,no\n"
    b"20,blue,,n5,yes\n"
)


def _assert_valid_partition(parts: list[np.ndarray], n_rows: int, min_samples: int) -> None:
    joined = np.concatenate(parts)
    assert all(p.dtype == np.int64 for p in parts)
    assert all(np.array_equal(p, np.sort(p)) for p in parts)
    assert len(joined) == n_rows and len(np.unique(joined)) == n_rows  # complete and disjoint
    assert joined.min() >= 0 and joined.max() < n_rows
    assert min(len(p) for p in parts) >= min_samples


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


# ---------------------------------------------------------------- labels

def test_normalize_labels_agrees_across_representations():
    # Prepare
    forms = [["1", " 2", "3.0"], [1.0, 2.0, 3.0], [1, 2, 3], np.array([1, 2, 3], dtype=np.int32)]

    # Execute
    results = [normalize_labels(f) for f in forms]

    # Assert
    for r in results:
        assert r.dtype == np.int64 and r.tolist() == [1, 2, 3]
    assert normalize_labels(["a", 1]).tolist() == ["a", "1"]
    assert normalize_labels(pd.Series(["cat", "dog"])).dtype.kind == "U"
    assert normalize_labels([1.5, 2.0]).dtype.kind == "U"


def test_normalize_labels_rejects_missing():
    # Prepare / Execute / Assert
    with pytest.raises(DataError, match="missing"):
        normalize_labels([1.0, float("nan")])


# ---------------------------------------------------------------- CSV

def test_csv_one_hot_median_fill_and_missing_target():
    # Prepare / Execute
    ds = load_dataset("csv", csv_data=CSV_BYTES, target="label")

    # Assert
    assert ds.feature_names == ["age", "color=blue", "color=green", "color=red",
                                "city=oslo", "city=paris", "city=rome", "notes=n1", "notes=n2", "notes=n4",
                                "notes=n5"]
    assert ds.X.shape == (4, 11) and ds.X.dtype == np.float64
    assert ds.X[1, 0] == 30.0  # median of 30, 40, 20
    assert ds.X[3, ds.feature_names.index("city=oslo")] == 0.0  # missing category -> all zeros
    assert ds.y.tolist() == ["yes", "no", "no", "yes"] and ds.classes == ["no", "yes"]
    assert any("dropped 1 rows with a missing target" in n for n in ds.notes)
    assert any("median" in n for n in ds.notes)


def test_csv_drops_text_columns_with_many_values(tmp_path):
    # Prepare
    rows = [f"{i},id{i},{i % 2}" for i in range(60)]
    path = tmp_path / "many.csv"
    path.write_text("x,name,t\n" + "\n".join(rows) + "\n")

    # Execute
    ds = load_dataset("csv", csv_path=str(path), target="t")

    # Assert
    assert ds.feature_names == ["x"]
    assert any("name" in n and "dropped" in n for n in ds.notes)


def test_csv_semicolon_separated():
    # Prepare
    data = b"a;b;t\n1;2;0\n3;4;1\n5;6;1\n"

    # Execute
    ds = load_dataset("csv", csv_data=data, target="t")

    # Assert
    assert ds.feature_names == ["a", "b"] and ds.y.tolist() == [0, 1, 1]


@pytest.mark.parametrize("data,word", [
    (b"", "empty"),
    (b"a,b,t\n", "no data rows"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "CSV"),
    (b'a,b,t\n1,"2,0\n', "parsed"),
])
def test_csv_bad_file_is_a_data_error(data, word):
    # Prepare / Execute / Assert
    with pytest.raises(DataError, match=word):
        load_dataset("csv", csv_data=data, target="t")


def test_csv_missing_target_column_lists_columns():
    # Prepare / Execute
    with pytest.raises(DataError) as err:
        load_dataset("csv", csv_data=CSV_BYTES, target="outcome")

    # Assert
    assert "'outcome'" in str(err.value) and "'age'" in str(err.value) and "'label'" in str(err.value)


def test_csv_without_target_or_file_is_a_data_error(tmp_path):
    # Prepare / Execute / Assert
    with pytest.raises(DataError, match="target"):
        load_dataset("csv", csv_data=CSV_BYTES)
    with pytest.raises(DataError, match="CSV"):
        load_dataset("csv", target="t")
    with pytest.raises(DataError, match="path"):
        load_dataset("csv", csv_path=str(tmp_path / "nope.csv"), target="t")


def test_csv_single_class_target_is_a_data_error():
    # Prepare
    data = b"a,t\n1,x\n2,x\n3,\n"

    # Execute / Assert
    with pytest.raises(DataError, match="only one class"):
        load_dataset("csv", csv_data=data, target="t")


def test_csv_without_usable_features_is_a_data_error():
    # Prepare
    data = "name,t\n" + "\n".join(f"n{i},{i % 2}" for i in range(80)) + "\n"

    # Execute / Assert
    with pytest.raises(DataError, match="no usable feature"):
        load_dataset("csv", csv_data=data.encode(), target="t")


# ---------------------------------------------------------------- client features

def test_features_from_frame_orders_columns_and_zeros_unseen_category():
    # Prepare
    df = pd.DataFrame({"color": ["red", "blue", "pink"], "age": [1.0, None, 3.0], "extra": [9, 9, 9]})
    names = ["color=green", "age", "color=red", "color=blue"]

    # Execute
    X = features_from_frame(df, names)

    # Assert
    assert X.shape == (3, 4)
    assert X[:, 0].tolist() == [0, 0, 0]  # a category this client never saw
    assert X[:, 1].tolist() == [1.0, 2.0, 3.0]  # median fill
    assert X[:, 2].tolist() == [1, 0, 0] and X[:, 3].tolist() == [0, 1, 0]


def test_features_from_frame_handles_equals_in_column_names():
    # Prepare
    df = pd.DataFrame({"a=b": ["x", "y"], "a": [5, 6]})

    # Execute
    X = features_from_frame(df, ["a=b=x", "a"])

    # Assert
    assert X.tolist() == [[1.0, 5.0], [0.0, 6.0]]


def test_features_from_frame_raises_on_missing_column():
    # Prepare
    df = pd.DataFrame({"age": [1, 2]})

    # Execute / Assert
    with pytest.raises(DataError, match="missing column"):
        features_from_frame(df, ["age", "height"])
    with pytest.raises(DataError, match="missing column 'color'"):
        features_from_frame(df, ["color=red"])


def test_load_client_csv_matches_server_columns(tmp_path):
    # Prepare
    server = load_dataset("csv", csv_data=CSV_BYTES, target="label")
    path = tmp_path / "client.csv"
    path.write_text("label,city,age,color,notes\nyes,paris,33,red,n9\nno,lima,44,teal,n2\n")

    # Execute
    X, y, names = load_client_csv(str(path), "label", server.feature_names)
    X_own, _, own_names = load_client_csv(str(path), "label")

    # Assert
    assert names == server.feature_names and X.shape == (2, len(server.feature_names))
    assert X[0, names.index("age")] == 33 and X[0, names.index("color=red")] == 1
    assert X[1, names.index("city=paris")] == 0 and not X[:, names.index("notes=n1")].any()
    assert y.tolist() == ["yes", "no"]
    assert own_names == ["city=lima", "city=paris", "age", "color=red", "color=teal", "notes=n2", "notes=n9"]
    assert X_own.shape == (2, 7)


# ---------------------------------------------------------------- partitioners

@pytest.mark.parametrize("method", PARTITIONERS)
def test_partition_properties(method):
    # Prepare
    y = load_dataset("digits").y

    # Execute
    parts = partition(y, 12, method, alpha=0.3, shards_per_client=2, min_samples=5, seed=4)
    again = partition(y, 12, method, alpha=0.3, shards_per_client=2, min_samples=5, seed=4)
    other = partition(y, 12, method, alpha=0.3, shards_per_client=2, min_samples=5, seed=5)

    # Assert
    assert len(parts) == 12
    _assert_valid_partition(parts, len(y), 5)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other))


def test_dirichlet_small_alpha_leaves_clients_missing_classes():
    # Prepare
    y = load_dataset("digits").y

    # Execute
    parts = partition(y, 20, "dirichlet", alpha=0.1, seed=0)
    counts = label_distribution(y, parts, list(range(10)))

    # Assert
    _assert_valid_partition(parts, len(y), 2)
    assert ((counts == 0).sum(axis=1) > 0).sum() >= 5  # several clients lack some class
    assert counts.sum() == len(y)


def test_dirichlet_large_alpha_is_close_to_iid():
    # Prepare
    y = load_dataset("digits").y

    # Execute
    counts = label_distribution(y, partition(y, 5, "dirichlet", alpha=1000.0, seed=0), list(range(10)))

    # Assert
    assert (counts > 0).all()


def test_shards_give_each_client_few_labels():
    # Prepare
    y = load_dataset("digits").y

    # Execute
    parts = partition(y, 10, "shards", shards_per_client=2, seed=1)

    # Assert
    labels_per_client = [len(np.unique(y[p])) for p in parts]
    assert max(labels_per_client) <= 4
    assert np.mean(labels_per_client) <= 3


def test_quantity_sizes_are_skewed():
    # Prepare
    y = np.zeros(1000, dtype=np.int64)

    # Execute
    sizes = sorted(len(p) for p in partition(y, 10, "quantity", quantity_skew=1.5, min_samples=3, seed=2))

    # Assert
    assert sizes[-1] > 5 * sizes[0]
    assert sizes[0] >= 3 and sum(sizes) == 1000


def test_iid_sizes_are_even():
    # Prepare / Execute
    sizes = [len(p) for p in partition(np.arange(103) % 3, 10, "iid")]

    # Assert
    assert max(sizes) - min(sizes) <= 1


def test_too_many_clients_is_a_data_error():
    # Prepare
    y = np.arange(30) % 2

    # Execute / Assert
    with pytest.raises(DataError, match="30 rows cannot give 20 clients at least 2 samples each"):
        partition(y, 20, "iid", min_samples=2)


@pytest.mark.parametrize("kwargs,word", [
    ({"n_clients": 0}, "at least 1"),
    ({"method": "zipf"}, "dirichlet"),
    ({"method": "dirichlet", "alpha": 0.0}, "alpha"),
    ({"method": "shards", "shards_per_client": 0}, "shards_per_client"),
    ({"method": "shards", "shards_per_client": 30}, "shards"),
    ({"method": "quantity", "quantity_skew": -1.0}, "quantity_skew"),
])
def test_bad_partition_settings_are_data_errors(kwargs, word):
    # Prepare
    args = {"n_clients": 5, "method": "iid", **kwargs}

    # Execute / Assert
    with pytest.raises(DataError, match=word):
        partition(np.arange(100) % 4, args.pop("n_clients"), args.pop("method"), **args)


@settings(max_examples=50, deadline=None)
@given(
    n_rows=st.integers(min_value=1, max_value=120),
    n_labels=st.integers(min_value=1, max_value=6),
    n_clients=st.integers(min_value=1, max_value=15),
    method=st.sampled_from(PARTITIONERS),
    min_samples=st.integers(min_value=1, max_value=4),
    seed=st.integers(min_value=0, max_value=2**31),
)
def test_partition_property(n_rows, n_labels, n_clients, method, min_samples, seed):
    # Prepare
    y = np.random.default_rng(seed).integers(n_labels, size=n_rows)
    feasible = n_clients * min_samples <= n_rows and (method != "shards" or 2 * n_clients <= n_rows)

    # Execute
    try:
        parts = partition(y, n_clients, method, alpha=0.2, min_samples=min_samples, seed=seed)
    except DataError:
        # Assert (only impossible requests may fail)
        assert not feasible
        return

    # Assert
    assert feasible and len(parts) == n_clients
    _assert_valid_partition(parts, n_rows, min_samples)
    again = partition(y, n_clients, method, alpha=0.2, min_samples=min_samples, seed=seed)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))


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
