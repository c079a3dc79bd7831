"""Global metrics from summed counts (issue 17): a federated macro F1 is the F1 of the pooled predictions.

A mean of per-site macro F1s is not a macro F1: a site holding one class
scores its absent classes 0. Sites now send their confusion counts
(``evaluate_result.confusion``), the server sums them, and every metric
that is not a per-row mean comes from the sum. The done-when test checks
every round of a real hosted run (three penguin islands, one with a single
species, a server without data) against scikit-learn on the pooled
held-out predictions of that round's global model.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, precision_recall_fscore_support

from fl.federation.round_stats import federated_metrics
from fl.learning.metrics import confusion_matrix, metrics_from_confusion, per_class
from fl.learning.models import get_model
from fl.runs.config import RunConfig
from fl.wire import EvaluateResult, ProtocolError, decode_frame, frame_to_bytes, parse_message
from tests.site_helpers import host_sites, pooled_rows

labels = st.lists(st.integers(0, 4), min_size=1, max_size=60)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_metrics_from_counts_equal_scikit_learn(data) -> None:
    # Prepare: true and predicted labels over 5 classes, some absent from both
    y = np.array(data.draw(labels))
    pred = np.array(data.draw(st.lists(st.integers(0, 4), min_size=len(y), max_size=len(y))))
    # Execute
    got = metrics_from_confusion(confusion_matrix(y, pred, 5))
    # Assert: scikit-learn's own definitions (macro over the labels present in either)
    assert got["accuracy"] == pytest.approx(accuracy_score(y, pred), abs=1e-12)
    assert got["f1_macro"] == pytest.approx(f1_score(y, pred, average="macro", zero_division=0), abs=1e-12)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected_balanced = balanced_accuracy_score(y, pred)
    assert got["balanced_accuracy"] == pytest.approx(expected_balanced, abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_summed_site_counts_give_the_pooled_metrics(data) -> None:
    # Prepare: three sites, each with its own predictions
    sites = []
    for _ in range(3):
        y = np.array(data.draw(labels))
        pred = np.array(data.draw(st.lists(st.integers(0, 4), min_size=len(y), max_size=len(y))))
        sites.append((y, pred))
    per_client = {f"s{i}": {"n_samples": len(y), "loss": 0.5, "confusion": confusion_matrix(y, p, 5)}
                  for i, (y, p) in enumerate(sites)}
    # Execute
    got = federated_metrics(per_client, 5)
    # Assert
    y_all, p_all = np.concatenate([y for y, _ in sites]), np.concatenate([p for _, p in sites])
    assert got["f1_macro"] == pytest.approx(f1_score(y_all, p_all, average="macro", zero_division=0), abs=1e-12)
    assert got["accuracy"] == pytest.approx(accuracy_score(y_all, p_all), abs=1e-12)
    assert np.array_equal(got["confusion"], confusion_matrix(y_all, p_all, 5))


def test_a_site_without_counts_makes_f1_not_available_not_averaged() -> None:
    # Prepare: one old client that sends ratios only
    per_client = {"new": {"n_samples": 10, "accuracy": 0.5, "loss": 1.0, "f1_macro": 0.4,
                          "confusion": np.array([[5, 0], [5, 0]])},
                  "old": {"n_samples": 30, "accuracy": 0.9, "loss": 0.2, "f1_macro": 0.9, "confusion": None}}
    # Execute
    got = federated_metrics(per_client, 2)
    # Assert: accuracy and loss are per-row means (exact), F1 is not available
    assert got["accuracy"] == pytest.approx((0.5 * 10 + 0.9 * 30) / 40)
    assert got["loss"] == pytest.approx((1.0 * 10 + 0.2 * 30) / 40)
    assert got["f1_macro"] is None and got["balanced_accuracy"] is None and got["confusion"] is None


def test_per_class_marks_an_absent_class_absent() -> None:
    # Prepare: class 2 has no true rows and is never predicted; class 1 is never predicted
    matrix = np.array([[3, 0, 0], [2, 0, 0], [0, 0, 0]])
    # Execute
    got = per_class(matrix)
    # Assert
    assert got["recall"] == [1.0, 0.0, None]
    assert got["precision"] == [0.6, None, None]
    assert got["f1"][2] is None and got["f1"][1] == 0.0
    p, r, f, _ = precision_recall_fscore_support([0, 0, 0, 1, 1], [0, 0, 0, 0, 0], labels=[0, 1], zero_division=0)
    assert got["f1"][0] == pytest.approx(f[0]) and got["recall"][:2] == pytest.approx(list(r))


def roundtrip(msg):
    return parse_message(decode_frame(frame_to_bytes(*msg.to_frame())))


def test_evaluate_result_carries_counts_and_old_results_still_parse() -> None:
    # Prepare / Execute
    new = roundtrip(EvaluateResult(round=1, n_samples=5, metrics={"accuracy": 0.6}, confusion=[[2, 1], [1, 1]]))
    old = roundtrip(EvaluateResult(round=1, n_samples=5, metrics={"accuracy": 0.6}))
    # Assert
    assert new.confusion == [[2, 1], [1, 1]]
    assert old.confusion is None


@pytest.mark.parametrize("confusion, why", [
    ([[2, 1], [1]], "square"),
    ([[2, 1], [1, 2]], "add up"),
    ([[-1, 3], [1, 2]], "whole counts"),
    ([[2, True], [1, 1]], "whole counts"),
    ([[2, 1.0], [1, 1]], "whole counts"),
    ([[10**400, 0], [0, 0]], "whole counts"),
    ([[]], "square"),
    ("2,1,1,1", "list"),
])
def test_bad_confusion_counts_are_refused(confusion, why: str) -> None:
    # Prepare
    frame = decode_frame(frame_to_bytes(*EvaluateResult(round=1, n_samples=5, metrics={}).to_frame()))
    frame.header["confusion"] = confusion
    # Execute / Assert
    with pytest.raises(ProtocolError, match=why):
        parse_message(frame)


# ---------------------------------------------------------------- the done-when test, end to end

penguins = pytest.importorskip("palmerpenguins")


def penguin_sites(directory: Path) -> dict[str, Path]:
    """One CSV per island as the public table has it (missing values kept): Torgersen holds only Adelie."""
    frame = penguins.load_penguins()
    paths = {}
    for island, rows in frame.groupby("island"):
        path = directory / f"{island.lower()}.csv"
        rows.drop(columns="island").to_csv(path, index=False)
        paths[island.lower()] = path
    return paths


def test_federated_macro_f1_is_the_f1_of_the_pooled_predictions_every_round(tmp_path: Path) -> None:
    # Prepare: a server without data, three island sites (class subsets {A,G}, {A,C}, {A})
    sites = penguin_sites(tmp_path)
    config = RunConfig(dataset="csv", target="species", model="logreg", rounds=6, min_clients=3, clients=3,
                       archive_weights=True)
    # Execute
    handle, result, _ = host_sites(config, sites, out_dir=str(tmp_path / "run"))
    # Assert: every round's F1 is scikit-learn's F1 of that round's global model on the pooled held-out rows
    assert result is not None and result.status == "completed", result and result.error
    task = handle.server.task
    classes = task.classes_array
    _, (X_pool, y_pool) = pooled_rows(task, sites, "species")
    weights = np.load(tmp_path / "run" / "weights.npz")
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    adapter = get_model("logreg")
    checked = 0
    for _, row in metrics.iterrows():
        r = int(row["round"])
        arrays = [(name, weights[f"round_{r:04d}/{name}"]) for name in ("coef_", "intercept_")]
        pred = adapter.global_estimator(task.model_params, arrays, classes, task.n_features).predict(X_pool)
        assert row["f1_macro"] == pytest.approx(f1_score(y_pool, pred, average="macro"), abs=1e-9)
        assert row["accuracy"] == pytest.approx(accuracy_score(y_pool, pred), abs=1e-9)
        assert row["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y_pool, pred), abs=1e-9)
        checked += 1
    assert checked == 6
    # confusion.csv holds every cell of every round; client_confusion.csv the sites' own (Torgersen: Adelie only)
    with open(tmp_path / "run" / "confusion.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6 * len(classes) ** 2
    last = {(r["true"], r["predicted"]): int(r["count"]) for r in rows if r["round"] == "6"}
    assert sum(last.values()) == len(y_pool)
    sites_counts = pd.read_csv(tmp_path / "run" / "client_confusion.csv")
    torgersen = sites_counts[(sites_counts["client_id"] == "torgersen") & (sites_counts["round"] == 6)]
    assert set(torgersen["true"]) == {"Adelie"}
