"""Columns that cannot fake a result: row numbers, IDs and constants excluded by default, leaks flagged."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from fl.runs.words import for_cli, for_page
from sklearn.datasets import load_breast_cancer

from fl.data import (
    DataError, describe_csv, exclusion_reason, features_from_frame, id_like_name, leak_score, load_client_frame,
    load_dataset, plan_features, read_csv_table,
)
from fl.runs import simulation
from fl.runs.config import RunConfig


def _frame(n: int = 40, seed: int = 0) -> pd.DataFrame:
    """Two honest features (a float measurement, a small integer count) and a two-class label."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"size": rng.normal(10, 2, n).round(3), "count": rng.integers(0, 6, n),
                         "label": np.where(np.arange(n) % 3 == 0, "a", "b")})


def _csv(df: pd.DataFrame, **kwargs) -> bytes:
    return df.to_csv(**kwargs).encode()


def _excluded(report) -> dict[str, str]:
    return {e["column"]: e["reason"] for e in report.column_report.to_dict()["excluded"]}


# ---------------------------------------------------------------- what is excluded

@pytest.mark.parametrize("values,expected", [
    (list(range(1, 41)), "a row number: 1 to 40 in steps of 1, one per row"),
    (list(range(100, 500, 10)), "a row number: 100 to 490 in steps of 10, one per row"),
    (list(np.random.default_rng(1).permutation(np.arange(40))), "a row number: 0 to 39 in steps of 1, one per row, "
                                                                "in another order"),
    (list(np.cumsum(np.random.default_rng(2).integers(1, 9, 40))), "whole numbers that rise row by row, one per row: "
                                                                   "a row number or an ID"),
    ([f"P-{i:05d}" for i in np.random.default_rng(3).permutation(40)],
     "text that differs in every row: an ID or a name"),
    ([7] * 40, "one value (7) in every row"),
    (["yes"] * 40, "one value ('yes') in every row"),
    ([2.5] * 30 + [None] * 10, "one value (2.5) and 10 missing"),
])
def test_row_numbers_ids_and_constants_are_excluded_with_their_reason(values, expected):
    # Prepare
    df = _frame()
    df.insert(0, "col", values)

    # Execute
    report = describe_csv(df, "label")

    # Assert
    assert _excluded(report) == {"col": expected}
    assert report.feature_names == ["size", "count"]
    assert report.columns[0]["kind"] == "excluded" and report.columns[0]["action"] == f"excluded: {expected}"


@pytest.mark.parametrize("name", ["id", "ID", "PatientID", "patient_id", "row_id", "Unnamed: 0", "...1", "rownames",
                                  "index", "uuid"])
def test_a_column_named_like_an_id_with_mostly_distinct_values_is_excluded(name):
    # Prepare: random integer IDs (not a progression, not increasing), only the name tells
    df = _frame()
    df.insert(0, name, np.random.default_rng(4).choice(10_000, 40, replace=False))

    # Execute
    report = describe_csv(df, "label")

    # Assert
    assert id_like_name(name)
    assert _excluded(report) == {name: "named like an ID or a row index, with 40 distinct values in 40 rows"}


@pytest.mark.parametrize("name,values", [
    ("weight", list(np.random.default_rng(5).normal(70, 9, 40).round(4))),     # unique floats: a measurement
    ("income", list(np.random.default_rng(6).choice(10**6, 40, replace=False))),  # unique integers, no pattern
    ("hospital_id", [f"h{i % 4}" for i in range(40)]),                        # an ID of a group, not of a row
    ("paid", list(np.random.default_rng(7).choice(10**6, 40, replace=False))),   # "id" inside a word is no ID
    ("year", [2000 + i % 7 for i in range(40)]),                               # repeated whole numbers
])
def test_genuine_features_are_not_excluded(name, values):
    # Prepare
    df = _frame()
    df.insert(0, name, values)

    # Execute
    plans = plan_features(df.drop(columns=["label"]))

    # Assert
    assert plans[0].kind in ("numeric", "category"), plans[0].action


def test_small_tables_are_not_judged_by_uniqueness():
    # Prepare: 5 rows, every column unique per row (as any column of a tiny table)
    df = pd.DataFrame({"x": [1, 2, 3, 4, 5], "name": list("abcde")})

    # Execute / Assert
    assert [p.kind for p in plan_features(df)] == ["numeric", "category"]
    assert exclusion_reason(df["x"], "x") is None


def test_keep_columns_keeps_an_excluded_column_and_says_so():
    # Prepare
    df = _frame()
    df.insert(0, "row", range(1, 41))
    data = _csv(df, index=False)

    # Execute
    kept = load_dataset("csv", csv_data=data, target="label", keep_columns="row")
    default = load_dataset("csv", csv_data=data, target="label")

    # Assert
    assert kept.feature_names == ["row", "size", "count"] and default.feature_names == ["size", "count"]
    assert kept.column_report.to_dict()["kept"] == [{"column": "row", "reason": "a row number: 1 to 40 in steps of "
                                                                               "1, one per row"}]
    assert any(n.startswith("kept on request column 'row'") for n in kept.notes)
    # the note names the setting by a marker: a flag on the command line, the setting's label on a page
    assert any(n.startswith("excluded column 'row'") and "--keep-columns row" in for_cli(n) for n in default.notes)
    assert any("“Keep excluded columns” (row)" in for_page(n) and "--" not in for_page(n) for n in default.notes)


def test_keep_columns_naming_a_column_the_file_lacks_is_refused():
    # Prepare
    data = _csv(_frame(), index=False)

    # Execute / Assert
    with pytest.raises(DataError, match=re.escape("keep_columns names 'rowid', which the CSV does not have")):
        load_dataset("csv", csv_data=data, target="label", keep_columns="size, rowid")
    assert "keep_columns names 'rowid'" in describe_csv(read_csv_table(None, data), "label", keep="rowid").problems[0]


def test_a_caller_can_exclude_more_columns_with_its_reason():
    # Prepare
    df = _frame()

    # Execute
    report = describe_csv(df, "label", exclude={"count": "the split column: its values are the clients"})

    # Assert
    assert report.feature_names == ["size"]
    assert _excluded(report) == {"count": "the split column: its values are the clients"}
    assert not any("keep-columns" in n for n in report.notes)  # keep_columns cannot bring a caller's exclusion back


def test_only_excluded_columns_left_says_which_could_be_kept():
    # Prepare
    df = pd.DataFrame({"id": range(40), "const": [1] * 40, "label": ["a", "b"] * 20})

    # Execute / Assert
    with pytest.raises(DataError, match=re.escape("Excluded as row numbers, IDs or constants: 'id', 'const'")):
        load_dataset("csv", csv_data=_csv(df, index=False), target="label")


# ---------------------------------------------------------------- leaks

def test_a_column_that_alone_predicts_the_label_is_flagged_not_excluded():
    # Prepare: 'score' is the label in disguise (a threshold separates the classes); 'grade' a text copy
    df = _frame(200)
    df["score"] = np.where(df["label"] == "a", 0.0, 1.0) + np.random.default_rng(8).uniform(0, 0.5, 200)
    df["grade"] = np.where(df["label"] == "a", "A", "B")

    # Execute
    report = describe_csv(df, "label")
    ds = load_dataset("csv", csv_data=_csv(df, index=False), target="label")

    # Assert
    assert report.column_report.to_dict()["leaks"] == [{"column": "score", "score": 1.0},
                                                        {"column": "grade", "score": 1.0}]
    assert "score" in report.feature_names and "grade=A" in report.feature_names
    assert any(w.startswith("'score' alone predicts the label for 100.0% of the rows") for w in report.warnings)
    assert [c.get("leak") for c in report.columns] == [None, None, None, 1.0, 1.0]
    assert ds.column_report.to_dict()["leaks"] == report.column_report.to_dict()["leaks"]


def test_leak_score_ignores_a_label_almost_everyone_shares_and_honest_features():
    # Prepare
    rng = np.random.default_rng(9)
    y_rare = np.array([1] * 2 + [0] * 398)
    y = rng.integers(0, 2, 400)

    # Execute / Assert: 99.5 % majority, any column "predicts" it; a noisy feature does not
    assert leak_score(rng.normal(size=400), y_rare) is None
    assert leak_score(y + rng.normal(scale=0.6, size=400), y) is None
    assert leak_score(y * 3.0 + 1, y) == 1.0


def test_the_report_goes_to_json_with_excluded_leaks_and_missing():
    # Prepare
    df = _frame()
    df.insert(0, "Unnamed: 0", range(40))
    df.loc[3, "size"] = None

    # Execute
    out = describe_csv(df, "label").to_dict()

    # Assert
    assert json.loads(json.dumps(out)) == out
    assert out["excluded"] == [{"column": "Unnamed: 0", "reason": "a row number: 0 to 39 in steps of 1, one per row"}]
    assert out["leaks"] == [] and out["missing"] == {"Unnamed: 0": 0, "size": 1, "count": 0, "label": 0}
    assert out["rows"] == 40 and out["feature_names"] == ["size", "count"]


# ---------------------------------------------------------------- one plan for server and clients

def test_a_client_builds_exactly_the_servers_columns_and_never_an_excluded_one(tmp_path):
    # Prepare: the server's file and a site's file, both with a row number; the site has a constant column
    server, site = _frame(80, 0), _frame(40, 1)
    server.insert(0, "row", range(80))
    site.insert(0, "row", range(40))
    site["count"] = 3  # constant at this site only: the server's task still uses it
    server_csv, site_csv = tmp_path / "server.csv", tmp_path / "site.csv"
    server.to_csv(server_csv, index=False)
    site.to_csv(site_csv, index=False)

    # Execute
    ds = load_dataset("csv", csv_path=str(server_csv), target="label")
    own = load_client_frame(str(site_csv), "label")
    X = features_from_frame(own.frame, ds.feature_names)

    # Assert
    assert ds.feature_names == ["size", "count"]
    assert own.names == ["size", "count"]  # a site's own plan: the row number out, its local constant kept
    assert X.shape == (40, 2) and (X[:, 1] == 3).all()


def test_the_keep_columns_knob_is_a_flag_of_simulate_server_and_client():
    # Prepare
    from fl.cli.main import build_parser

    parser = build_parser()

    # Execute
    args = [parser.parse_args([cmd, "--keep-columns", "row,id"]) for cmd in ("simulate", "server", "client")]

    # Assert
    assert all(a.keep_columns == "row,id" for a in args)
    assert RunConfig(keep_columns="row,id").validate().keep_columns == "row,id"


# ---------------------------------------------------------------- the measured case, end to end

def _sorted_export(tmp_path, with_index: bool) -> str:
    """breast_cancer sorted by label and exported with pandas, as public CSVs often are."""
    frame = load_breast_cancer(as_frame=True).frame.sort_values("target", kind="stable").reset_index(drop=True)
    frame.index += 1
    path = tmp_path / f"cancer{'_index' if with_index else ''}.csv"
    frame.to_csv(path, index=with_index)
    return str(path)


def test_a_row_number_in_a_file_sorted_by_label_no_longer_fakes_the_accuracy(tmp_path):
    # Prepare
    def config(path: str, keep: str = "") -> RunConfig:
        return RunConfig(dataset="csv", csv_path=path, target="target", model="logreg", clients=5, partition="iid",
                         rounds=3, keep_columns=keep, client_eval=False)

    with_index, without = _sorted_export(tmp_path, True), _sorted_export(tmp_path, False)

    # Execute
    handle = simulation.start(config(with_index))
    indexed = handle.wait(120)
    plain = simulation.run(config(without))
    kept = simulation.start(config(with_index, "column_1"))
    kept.wait(120)

    # Assert: the same accuracy as without the column, and the note says it was excluded
    assert indexed.status == plain.status == "completed"
    assert abs(indexed.final_metrics["accuracy"] - plain.final_metrics["accuracy"]) <= 0.01
    assert handle.data.dataset.feature_names == list(load_breast_cancer().feature_names)
    note = next(n for n in handle.data.dataset.notes if n.startswith("excluded column 'column_1'"))
    assert "a row number: 1 to 569 in steps of 1, one per row" in note and "--keep-columns column_1" in for_cli(note)
    assert kept.data.dataset.column_report.to_dict()["leaks"] == [{"column": "column_1", "score": 1.0}]


def test_the_command_line_says_once_which_columns_it_excluded(tmp_path, capsys):
    # Prepare
    from fl.cli.main import main

    path = _sorted_export(tmp_path, True)

    # Execute
    code = main(["simulate", "--dataset", "csv", "--csv", path, "--target", "target", "--model", "logreg",
                 "--clients", "3", "--rounds", "2", "--partition", "iid"])

    # Assert
    err = capsys.readouterr().err
    assert code == 0
    assert err.count("data: excluded column 'column_1' (a row number: 1 to 569 in steps of 1, one per row)") == 1
