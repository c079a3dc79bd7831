"""Tests for fl.csvdata (through fl.data): labels, CSV files, client feature alignment."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fl.data import (
    DataError,
    features_from_frame,
    load_client_csv,
    load_dataset,
    normalize_labels,
)

CSV_BYTES = (
    b"age,color,city,notes,label\n"
    b"30,red,paris,n1,yes\n"
    b",blue,rome,n2,no\n"
    b"50,red,paris,n3,\n"
    b"40,green,oslo,n4,no\n"
    b"20,blue,,n5,yes\n"
)


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
    # Text labels are objects (one shared string per label), never a fixed-width array as wide as the longest.
    text = normalize_labels(pd.Series(["cat", "dog", "cat"]))
    assert text.dtype == object and text.tolist() == ["cat", "dog", "cat"] and text[0] is text[2]
    assert normalize_labels([1.5, 2.0]).dtype == object


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
    rows = [f"{i * 7 % 11},id{i},{i % 2}" for i in range(60)]  # x = i would be excluded as a row number
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
