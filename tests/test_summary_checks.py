"""The checks a coordinator runs on a site's data summary, and the merge that is bounded by the sites' rows (issue 23).

Pure functions: an honest summary of any frame passes (hypothesis draws the
frames), every lie of the issue is named in one sentence, a site that
disagrees on a column only changes its own share of the task, and labels are
never held in a fixed-width array as wide as the longest label.
"""

from __future__ import annotations

import copy
import math
import tracemalloc

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fl.data import DataError, features_from_frame, local_holdout, normalize_labels
from fl.data.site_summary import merge_summaries, report_lines, summarize_data
from fl.data.summary_checks import clean_report, summary_problem, text_problem
from fl.federation.client import task_labels
from fl.federation.summary_exchange import SummaryPlan, TaskBuilder
from fl.federation.task import Task
from fl.learning.metrics import score_classifier
from fl.wire import Summary

pytestmark = pytest.mark.timeout(120)


def site(n: int = 40, seed: int = 0, labels: tuple = ("a", "b"), shift: float = 0.0) -> tuple[pd.DataFrame, np.ndarray]:
    """A small honest site: two numeric columns, one text column, labels drawn from ``labels``."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"x": rng.normal(3.0 + shift, 2.0, n), "z": rng.uniform(0, 10, n),
                          "town": rng.choice(["north", "south"], n)})
    return frame, rng.choice(list(labels), n)


def honest(n: int = 40, seed: int = 0, share: float = 0.2, min_count: int = 5, **kw) -> dict:
    frame, y = site(n, seed, **kw)
    train, _ = local_holdout(n, share, seed)
    return summarize_data(frame, y, min_count, train_rows=train if share > 0 else None)


def problem(summary: dict, n_samples: int | None = None, share: float = 0.2) -> str | None:
    return summary_problem(summary, n_samples=summary["rows"] if n_samples is None else n_samples,
                           local_test_size=share, min_category_count=5)


def column(summary: dict, name: str) -> dict:
    return next(c for c in summary["columns"] if c["name"] == name)


# ------------------------------------------------------------------ honest summaries always pass

_cells = st.one_of(st.floats(-1e6, 1e6, allow_nan=False), st.just(float("nan")), st.just(float("inf")),
                   st.sampled_from(["n/a", " 7 ", ""]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 60), seed=st.integers(0, 10_000), share=st.sampled_from([0.0, 0.2, 0.5, 0.9]),
       min_count=st.integers(1, 6), int_labels=st.booleans(), data=st.data())
def test_an_honest_summary_of_any_frame_passes(n, seed, share, min_count, int_labels, data) -> None:
    # Prepare: numbers with gaps, infinities and stray text; a text column; labels of either type
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "num": rng.normal(rng.uniform(-1e5, 1e5), rng.uniform(0, 1e3), n),
        "const": np.full(n, rng.uniform(-1e9, 1e9)),
        "mixed": data.draw(st.lists(_cells, min_size=n, max_size=n)),
        "town": rng.choice(["a", "b", " c ", "\tbad\x1b", "x" * 300, None], n),
        "empty": [None] * n})
    frame.loc[rng.random(n) < 0.2, "num"] = np.nan
    y = rng.integers(0, 3, n) if int_labels else rng.choice(["yes", "no", " maybe "], n)
    y = normalize_labels(y)
    train, _ = local_holdout(n, share, seed)
    # Execute
    summary = summarize_data(frame, y, min_count, train_rows=train if share > 0 else None)
    # Assert
    assert summary_problem(summary, n_samples=n, local_test_size=share, min_category_count=min_count) is None
    assert clean_report(summary["report"]) == (summary["report"], None)


# ------------------------------------------------------------------ every lie is named


def _set(name: str, **fields):
    def change(s: dict) -> None:
        column(s, name).update(fields)
    return change


def _labels(pairs: list) -> callable:
    def change(s: dict) -> None:
        s["labels"] = pairs
        s["rows"] = sum(n for _, n in pairs) if all(type(n) is int for _, n in pairs) else s["rows"]
    return change


LIES = {
    "count 10^400": (_set("x", count=10**400), "count"),
    "count 10^15 on a 40-row site": (_set("x", count=10**15), "count"),
    "count 10^9 beyond its rows": (_set("x", count=10**9, sum=1e13, sum_sq=1e17, max=1e4), "count"),
    "count 0 with a sum": (_set("x", count=0, missing=32, sum=-5000.0, sum_sq=0.0, min=None, max=None), "count 0"),
    "negative variance": (_set("x", sum_sq=1.0), "negative variance"),
    "variance beyond min and max": (_set("x", sum_sq=1e12), "variance"),
    "min above max": (_set("x", min=10.0, max=-10.0), "above max"),
    "mean outside min..max": (_set("x", sum=1e6), "outside"),
    "missing 10^6": (_set("x", missing=10**6), "missing"),
    "rows beyond hello": (lambda s: s.update(rows=10**6), "hello"),
    "category rarer than the minimum": (_set("town", values={"north": 2, "south": 30}, other=0), "at least 5"),
    "categories not adding up": (_set("town", other=500), "add up"),
    "a surrogate in a category": (_set("town", values={"north\ud800": 16, "south": 16}, other=0), "surrogate"),
    "an escape in a category": (_set("town", values={"\x1b[2J": 16, "south": 16}, other=0), "not printable"),
    "a surrogate in a label": (_labels([["a\ud800", 20], ["b", 20]]), "surrogate"),
    "a 50,000-character label": (_labels([["a" * 50_000, 20], ["b", 20]]), "50000 characters"),
    "2,000 labels": (_labels([[f"l{i}", 1] for i in range(2_000)]), "2000 labels"),
    "labels not adding up to rows": (lambda s: s["labels"].__setitem__(0, [s["labels"][0][0], 1]), "add up"),
    "two labels that are one": (_labels([["1", 20], [1, 20]]), "same label"),
    "a long column name": (lambda s: column(s, "x").update(name="n" * 300), "300 characters"),
    "a huge integer sum": (_set("x", sum=10**400), "finite"),
    "1,000 named values": (_set("town", values={f"v{i}": 5 for i in range(1_000)}, other=0), "at most 50"),
}


@pytest.mark.parametrize("lie", sorted(LIES))
def test_each_lie_is_refused_with_a_sentence_naming_it(lie: str) -> None:
    # Prepare
    summary = copy.deepcopy(honest())
    change, words = LIES[lie]
    change(summary)
    # Execute
    n_samples = 40 if lie == "rows beyond hello" else summary["rows"]
    why = summary_problem(summary, n_samples=n_samples, local_test_size=0.2, min_category_count=5)
    # Assert
    assert why is not None and words in why, why
    why.encode("ascii")  # quotes hostile text escaped: safe in an error frame and on a terminal


def test_large_but_representable_counts_are_checked_without_overflow() -> None:
    # Prepare: a site that declares 10^15 rows, consistently
    rows = 10**15
    s = {"rows": rows, "labels": [["a", rows - 1], ["b", 1]], "columns": [
        {"name": "x", "kind": "numeric", "missing": 0, "count": rows, "sum": 3.0 * rows, "sum_sq": 10.0 * rows,
         "min": 0.0, "max": 10.0}]}
    # Execute / Assert: consistent, so accepted (its weight is what it declares)
    assert summary_problem(s, n_samples=rows, local_test_size=0.0, min_category_count=5) is None
    assert "hello" in summary_problem(s, n_samples=rows - 1, local_test_size=0.0, min_category_count=5)
    merged = merge_summaries({"big": s, "small": honest()}, 5)
    assert all(math.isfinite(v) for v in merged.mean + merged.scale)


def test_text_rule() -> None:
    assert text_problem("ok label", "a label") is None
    assert text_problem("é" * 256, "a label") is None
    assert "empty" in text_problem("", "a label")
    assert text_problem("", "a value", allow_empty=True) is None
    assert "257 characters" in text_problem("x" * 257, "a label")
    assert "surrogate" in text_problem("\ud800", "a label") or "printable" in text_problem("\ud800", "a label")
    assert "printable" in text_problem("a\nb", "a label")
    assert "text" in text_problem(3, "a label")


def test_a_malformed_report_is_dropped_not_the_site() -> None:
    good = {"excluded": [{"column": "id", "reason": "identifier"}], "leak_warnings": ["w"], "notes": ["n"],
            "extra": {"ignored": True}}
    assert clean_report(good) == ({"excluded": [{"column": "id", "reason": "identifier"}], "leak_warnings": ["w"],
                                   "notes": ["n"]}, None)
    for bad in ({"notes": 1}, {"notes": [1]}, {"excluded": ["id"]}, {"leak_warnings": ["\x1b[31m"]},
                {"notes": ["n"] * 1_000}, {"notes": ["x" * 5_000]}, [1, 2]):
        report, why = clean_report(bad)
        assert report == {} and why, bad
    # Through the builder: the site is kept, its report dropped, and the data report says so.
    builder = TaskBuilder(SummaryPlan(target="y"), Task(model="logreg", model_params={}, n_features=1,
                                                        classes=[0, 1], local_test_size=0.2))
    s = honest()
    data, refused = builder.validate(Summary(rows=s["rows"], labels=s["labels"], columns=s["columns"],
                                             report={"notes": 1}), n_samples=40)
    assert refused is None and data["report"] == {} and "notes" in data["report_dropped"]
    merged = merge_summaries({"A": data, "B": honest(seed=1)}, 5)
    assert any("report was left out" in n for n in merged.report["sites"][0]["notes"])


# ------------------------------------------------------------------ the merge: each site sways only its own rows


def test_a_site_that_disagrees_on_a_column_does_not_drop_it_for_the_others() -> None:
    # Prepare: two honest sites and a smaller third that marks x dropped, sends z as text, names 1,000 towns
    a, b = honest(60, 0), honest(60, 1)
    clean = merge_summaries({"A": a, "B": b}, 5)
    evil = copy.deepcopy(honest(100, 2))
    evil["columns"] = [{"name": "x", "kind": "dropped", "missing": 0, "reason": "no values"},
                       {"name": "z", "kind": "category", "missing": 0, "values": {"lots": 80}, "other": 0},
                       {"name": "town", "kind": "category", "missing": 0,
                        "values": {f"v{i}": 1 for i in range(80)}, "other": 0}]
    # Execute
    merged = merge_summaries({"A": a, "B": b, "E": evil}, 1)
    # Assert: every column stays, with the honest sites' statistics alone; the report names who disagreed
    assert merged.feature_names == clean.feature_names and merged.left_out == {}
    assert merged.mean == pytest.approx(clean.mean, rel=1e-12) and merged.scale == pytest.approx(clean.scale)
    said = {(d["site"], d["column"]) for d in merged.report["disagreements"]}
    assert said == {("E", "x"), ("E", "z"), ("E", "town")}
    assert "E disagreed" in " ".join(r["reason"] for r in merged.report["columns"])
    assert any("disagreed on column x (sent dropped (no values); the others: numeric)" in line
               for line in report_lines(merged.report))


def test_a_column_needs_the_sites_holding_more_than_half_of_the_rows() -> None:
    a, b = honest(60, 0), honest(60, 1)
    for c in b["columns"]:
        if c["name"] == "z":
            c.clear(), c.update(name="z", kind="dropped", missing=0, reason="identifier")
    # A tie (60 vs 60 rows): z is left out, saying who held what.
    merged = merge_summaries({"A": a, "B": b}, 5)
    row = next(r for r in merged.report["columns"] if r["column"] == "z")
    assert not row["used"] and "more than half" in row["reason"]
    # A third site that holds it numeric gives it the majority.
    assert "z" in merge_summaries({"A": a, "B": b, "C": honest(20, 3)}, 5).feature_names


def test_a_site_lacking_a_feature_column_is_left_out_and_the_rest_merged_without_it() -> None:
    a, b = honest(60, 0), honest(60, 1)
    small = honest(30, 2, labels=("a", "b", "c"))
    small["columns"] = [c for c in small["columns"] if c["name"] != "x"]
    merged = merge_summaries({"A": a, "B": b, "S": small}, 5)
    clean = merge_summaries({"A": a, "B": b}, 5)
    assert merged.left_out == {"S": ("shape", merged.left_out["S"][1])} and "x" in merged.left_out["S"][1]
    assert merged.feature_names == clean.feature_names and merged.mean == clean.mean
    assert merged.classes == ["a", "b"]  # its label 'c' went with it
    assert [s["client_id"] for s in merged.report["sites"]] == ["A", "B"]
    # Three sites that each lack another's column: the smallest goes first and the rest is weighed again
    # (r's 32 rows are more than half of q's and r's 63), never all.
    cols = {"p": honest(30, 0), "q": honest(31, 1), "r": honest(32, 2)}
    for drop, s in cols.items():
        for c in s["columns"]:
            c["name"] = {"x": "p", "z": "q", "town": "r"}[c["name"]]
        s["columns"] = [c for c in s["columns"] if c["name"] != drop]
    merged = merge_summaries(cols, 1)
    assert set(merged.left_out) == {"p", "q"} and merged.feature_names == ["p", "q"]


def test_labels_beyond_a_task_leave_out_the_smaller_site() -> None:
    big = honest(200, 0)
    many = honest(99, 1)
    many["labels"] = [[f"class{i:03d}", 1] for i in range(99)]
    merged = merge_summaries({"big": big, "many": many}, 5)
    assert merged.left_out["many"][0] == "labels" and merged.classes == ["a", "b"]


def test_the_scaler_pools_means_and_variances_exactly() -> None:
    a, b = honest(60, 0), honest(50, 1, shift=5.0)
    merged = merge_summaries({"A": a, "B": b}, 5)
    fa, ya = site(60, 0)
    fb, yb = site(50, 1, shift=5.0)
    ta, _ = local_holdout(60, 0.2, 0)
    tb, _ = local_holdout(50, 0.2, 1)
    pooled = np.concatenate([fa["x"].to_numpy()[ta], fb["x"].to_numpy()[tb]])
    assert merged.mean[0] == pytest.approx(pooled.mean(), rel=1e-12)
    assert merged.scale[0] == pytest.approx(pooled.std(), rel=1e-12)


# ------------------------------------------------------------------ the builder keeps nothing it does not need


def test_the_builder_frees_summaries_and_keeps_none_of_late_or_departed_clients() -> None:
    builder = TaskBuilder(SummaryPlan(target="y"), Task(model="logreg", model_params={}, n_features=1,
                                                        classes=[0, 1], local_test_size=0.2))

    def data(seed: int) -> dict:
        s = honest(40, seed)
        return builder.validate(Summary(rows=40, labels=s["labels"], columns=s["columns"]), 40)[0]

    assert builder.keep("A", data(0), {"A"}) and builder.keep("gone", data(1), {"A", "gone"})
    assert builder.keep("B", data(2), {"A", "B"})  # 'gone' left: its summary goes
    assert set(builder.summaries) == {"A", "B"}
    task, report, left_out = builder.build({"A", "B"})
    assert builder.summaries == {} and builder.merged.report == {} and left_out == {}
    assert task.feature_names == report["feature_names"]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        late = data(3)
        for i in range(200):
            assert builder.check(late, task) is None and not builder.keep(f"late{i}", late, {"A", "B"})
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert builder.summaries == {} and grown < 200_000


# ------------------------------------------------------------------ labels: never a fixed-width array


def test_labels_cost_a_pointer_a_row_whatever_the_longest() -> None:
    # Prepare: 2,000 short labels and one of 50,000 characters (the bomb), then 1,000 rows of them
    raw = [f"l{i}" for i in range(2_000)] + ["x" * 50_000]
    tracemalloc.start()
    try:
        normal = normalize_labels(np.array(raw, dtype=object))
        rows = normalize_labels(pd.Series(np.resize(np.array(raw, dtype=object), 100_000)))
        classes = Task(model="logreg", model_params={}, n_features=1, classes=raw).classes_array
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # Assert: a fixed-width array would take 2,001 × 50,000 × 4 bytes = 400 MB (and 20 GB for the rows)
    assert normal.dtype == object and rows.dtype == object and classes.dtype == object
    assert peak < 20 * 2**20, peak


def test_text_classes_are_found_and_scored_as_objects() -> None:
    from sklearn.linear_model import LogisticRegression

    long = ["é" * 256, "b" * 256, "c"]
    task = Task(model="logreg", model_params={}, n_features=2, classes=sorted(long))
    classes = task.classes_array
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 2))
    local = np.array([long[i] for i in (X[:, 0] > 0).astype(int) + (X[:, 1] > 1)], dtype=object)
    y, unknown = task_labels(local, classes)
    assert unknown == [] and y.dtype == object and all(v is classes[list(classes).index(v)] for v in y[:20])
    model = LogisticRegression().fit(X, y)
    scores = score_classifier(model, X, y, classes, with_confusion=True)
    assert scores["accuracy"] > 0.8 and scores["confusion"].sum() == 300
    # Integer labels meet text classes as text ("1" and 1 are one label), unknown ones are named.
    assert task_labels(np.array([1, 2]), np.array(["1", "2", "x"], dtype=object))[1] == []
    assert task_labels(np.array(["zz"], dtype=object), classes)[1] == ["zz"]


def test_an_empty_numeric_column_takes_the_tasks_mean() -> None:
    frame = pd.DataFrame({"x": [None, None], "t": ["n/a", "n/a"], "c": ["u", "v"]})
    X = features_from_frame(frame, ["x", "t", "c=u"], fill=[1.5, -2.0, 0.0])
    assert X.tolist() == [[1.5, -2.0, 1.0], [1.5, -2.0, 0.0]]
    with pytest.raises(DataError, match="no numbers"):
        features_from_frame(frame, ["t"])
