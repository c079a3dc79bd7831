"""Sweeps: the grid read by the knobs, a 2x2 grid x 2 seeds end to end with its CSVs recomputed, Stop."""

from __future__ import annotations

import json
import math
import os
import time

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from fl.runs.config import RunConfig
from fl.runs.store import RunStore
from fl.runs.sweep_spec import GridError, SweepSpec, make_grid, make_sweep, parse_grid_arg, read_grid_file
from fl.runs.sweep_run import start_sweep
from fl.runs.sweep_stats import mean_std_ci, run_outcome
from fl.runs.sweep_store import SweepStore
from tests.test_runtime import _children

TINY = dict(dataset="iris", model="logreg", clients=3, rounds=2, partition="dirichlet", alpha=1.0)
GRID = {"aggregation": ["fedavg", "median"], "alpha": [0.5, 10.0]}


def _alive(pid: int) -> bool:
    try:
        status = open(f"/proc/{pid}/status").read()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def _no_children_within(seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while _children() and time.monotonic() < deadline:
        time.sleep(0.1)
    return _children()


# ---------------------------------------------------------------------- grid parsing
def test_grid_values_are_read_by_each_knobs_own_parser():
    # Execute
    aggregation = parse_grid_arg("aggregation=fedavg, median,krum")
    alpha = parse_grid_arg("alpha=0.1,0.5,10")
    epochs = parse_grid_arg("--local-epochs=1,2")
    optional = parse_grid_arg("learning_rate=none,0.05")
    params = parse_grid_arg('model_params=[{"C": 0.1}, {"C": 1}]')
    # Assert: choices stay text, numbers take the knob's type, flag spellings name the field
    assert aggregation == ("aggregation", ["fedavg", "median", "krum"])
    assert alpha == ("alpha", [0.1, 0.5, 10.0]) and all(isinstance(v, float) for v in alpha[1])
    assert epochs == ("local_epochs", [1, 2]) and all(type(v) is int for v in epochs[1])
    assert optional == ("learning_rate", [None, 0.05])
    assert params == ("model_params", [{"C": 0.1}, {"C": 1}])


def test_a_grid_file_in_json_or_toml_gives_the_same_grid(tmp_path):
    # Prepare
    (tmp_path / "g.json").write_text(json.dumps({"grid": {"aggregation": ["fedavg", "median"], "alpha": [1, 0.5]},
                                                 "seeds": 4}))
    (tmp_path / "g.toml").write_text('seeds = 4\n[grid]\naggregation = ["fedavg", "median"]\nalpha = [1, 0.5]\n')
    # Execute
    from_json, from_toml = read_grid_file(tmp_path / "g.json"), read_grid_file(tmp_path / "g.toml")
    # Assert: a whole number in a float knob's list is a float, as the knob wants
    assert from_json == from_toml == ({"aggregation": ["fedavg", "median"], "alpha": [1.0, 0.5]}, 4)


@pytest.mark.parametrize("text, needle", [
    ("alpah=0.1", "'alpah' is not a run setting; did you mean alpha?"),
    ("alpha=-1", "alpha=-1 is refused: alpha must be above 0"),
    ("alpha=0.1,abc", "alpha=abc is refused: alpha must be a number"),
    ("aggregation=fedavg,xgboost", "aggregation=xgboost is refused: unknown aggregation 'xgboost'"),
    ("rounds=2.5", "rounds=2.5 is refused: rounds must be a whole number"),
    ("client_eval=maybe", "client_eval=maybe is refused"),
    ("seed=1,2", "'seed' cannot be swept: the seeds are the sweep's own"),
    ("workers=2", "'workers' cannot be swept"),
    ("alpha", "a grid axis is KEY=V1,V2,..."),
])
def test_a_bad_grid_key_or_value_is_refused_in_one_sentence(text, needle):
    # Execute
    with pytest.raises(GridError) as refused:
        parse_grid_arg(text)
    # Assert
    assert needle in str(refused.value) and "\n" not in str(refused.value)


def test_values_given_twice_and_cells_that_cannot_run_are_refused_up_front():
    # Prepare
    base = RunConfig(**TINY)
    # Execute / Assert: a repeated value, a cell the config's relations refuse, a seed count out of range
    with pytest.raises(GridError, match="alpha=0.5 is given twice"):
        make_grid({"alpha": [0.5, 0.5]})
    with pytest.raises(GridError, match="the grid cell model=random_forest cannot run: .*stacking"):
        make_sweep(base, {"model": ["logreg", "random_forest"]})
    with pytest.raises(GridError, match="seeds must be a whole number from 1"):
        make_sweep(base, GRID, seeds=0)
    with pytest.raises(GridError, match="the last seed"):
        make_sweep(RunConfig(**{**TINY, "seed": 2**31 - 2}), GRID, seeds=3)


def test_the_runs_are_every_cell_times_every_seed_with_workers_in_their_own_process():
    # Execute
    spec = make_sweep(RunConfig(**TINY, seed=7), GRID, seeds=2)
    runs = list(spec.runs())
    # Assert
    assert len(spec.cells()) == 4 and spec.n_runs == len(runs) == 8
    assert [(r.config.aggregation, r.config.alpha, r.config.seed) for r in runs[:3]] == [
        ("fedavg", 0.5, 7), ("fedavg", 0.5, 8), ("fedavg", 10.0, 7)]
    assert {r.config.workers for r in runs} == {0}
    assert SweepSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_a_grid_key_without_effect_in_some_cells_is_noted():
    # Execute
    spec = make_sweep(RunConfig(**TINY), {"partition": ["iid", "dirichlet"], "alpha": [0.5, 10.0]})
    # Assert
    assert spec.warnings() == ["alpha has no effect in 2 of 4 cells (e.g. partition=iid, alpha=0.5): those cells "
                               "repeat one another"]


def test_statistics_of_one_seed_have_no_spread():
    # Execute / Assert
    mean, std, low, high = mean_std_ci([0.8])
    assert mean == 0.8 and all(math.isnan(v) for v in (std, low, high))
    assert run_outcome([])["final_accuracy"] is None


# ---------------------------------------------------------------------- a whole sweep
@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    """A 2x2 grid x 2 seeds, run once for the tests that read it."""
    root = tmp_path_factory.mktemp("runs")
    lines = []
    handle = start_sweep(make_sweep(RunConfig(**TINY), GRID, seeds=2), root, parallel=2,
                         on_result=lambda row, done, total: lines.append((row["run_id"], done, total)))
    assert handle.wait(180), "the sweep did not end"
    return root, handle, lines


def test_a_2x2_sweep_over_2_seeds_completes_every_run_as_an_ordinary_run(finished_sweep):
    # Prepare
    root, handle, lines = finished_sweep
    # Execute
    summary = pd.read_csv(handle.path / "summary.csv")
    runs = {r.run_id: r for r in RunStore(root).list()}
    # Assert: one row per run, each an ordinary stored run with the sweep's id, its cell's values and its seed
    assert handle.status == "completed" and json.loads((handle.path / "sweep.json").read_text())["status"] == "completed"
    assert len(summary) == 8 and set(summary["status"]) == {"completed"}
    assert [n for _, n, _ in lines] == list(range(1, 9)) and {t for *_, t in lines} == {8}
    assert set(summary["run_id"]) == set(runs)  # RunStore.list() skips sweeps/ and lists every run
    for row in summary.to_dict("records"):
        run = runs[row["run_id"]]
        metrics = run.metrics()
        assert run.summary["sweep_id"] == handle.sweep_id and run.summary["status"] == "completed"
        assert (run.config["aggregation"], run.config["alpha"], run.config["seed"], run.config["workers"]) == (
            row["aggregation"], row["alpha"], row["seed"], 0)
        assert row["final_accuracy"] == run.summary["final_metrics"]["accuracy"] == metrics["accuracy"].iloc[-1]
        assert row["final_loss"] == pytest.approx(metrics["loss"].iloc[-1], rel=1e-12)
        assert row["final_f1_macro"] == pytest.approx(metrics["f1_macro"].iloc[-1], rel=1e-12)
        assert row["best_accuracy"] == metrics["accuracy"].max()
        assert row["rounds_done"] == len(metrics) == 2
        assert row["bytes_total"] == (metrics["bytes_sent"] + metrics["bytes_received"]).sum() > 0
        assert row["duration_s"] > 0
    assert sorted(summary["seed"].unique()) == [0, 1]


def test_cells_csv_agrees_with_an_independent_computation_from_summary_csv(finished_sweep):
    # Prepare
    _, handle, _ = finished_sweep
    summary = pd.read_csv(handle.path / "summary.csv")
    cells = pd.read_csv(handle.path / "cells.csv")
    # Execute: mean, sample std and Student-t 95% interval, recomputed per (aggregation, alpha)
    expected = {}
    for (aggregation, alpha), group in summary.groupby(["aggregation", "alpha"]):
        for metric in ("final_accuracy", "best_accuracy", "final_loss", "final_f1_macro"):
            x = group[metric].to_numpy(dtype=float)
            mean, std = x.mean(), x.std(ddof=1)
            half = stats.t.ppf(0.975, len(x) - 1) * std / np.sqrt(len(x))
            expected[(aggregation, alpha, metric)] = (mean, std, mean - half, mean + half)
    # Assert
    assert len(cells) == 4 and list(cells["n_seeds"]) == [2, 2, 2, 2]
    for row in cells.to_dict("records"):
        for metric in ("final_accuracy", "best_accuracy", "final_loss", "final_f1_macro"):
            got = tuple(row[f"{metric}_{s}"] for s in ("mean", "std", "ci_low", "ci_high"))
            np.testing.assert_allclose(got, expected[(row["aggregation"], row["alpha"], metric)], rtol=1e-9,
                                       atol=1e-12)


def test_the_sweep_is_listed_loaded_and_zipped_from_the_store_and_leaves_no_process(finished_sweep):
    # Prepare
    root, handle, _ = finished_sweep
    import io
    import zipfile

    # Execute
    store = SweepStore(root)
    listed = store.list()
    loaded = store.load(handle.sweep_id)
    names = set(zipfile.ZipFile(io.BytesIO(loaded.zip(store.run_store))).namelist())
    # Assert
    assert [s.sweep_id for s in listed] == [handle.sweep_id]
    assert loaded.status == "completed" and loaded.grid == GRID and loaded.meta["seeds"] == 2
    assert loaded.run_ids == [row["run_id"] for row in handle.rows]
    assert f"{handle.sweep_id}/summary.csv" in names and f"{handle.sweep_id}/cells.csv" in names
    assert f"{handle.sweep_id}/runs/{loaded.run_ids[0]}/metrics.csv" in names
    assert not any(n.endswith(".tmp") for n in names)
    assert not list(handle.path.glob("*.tmp")) and not list(handle.path.glob(".*.tmp"))
    assert handle.worker_pids and not any(_alive(pid) for pid in handle.worker_pids)
    assert _no_children_within(10) == []


def test_stop_cancels_the_runs_not_started_and_stops_the_running_ones(tmp_path, no_thread_leaks):
    # Prepare: long runs, two at a time, six in all
    base = RunConfig(dataset="digits", model="mlp", clients=3, rounds=500, partition="iid")
    handle = start_sweep(make_sweep(base, {"aggregation": ["fedavg", "median"]}, seeds=3), tmp_path, parallel=2)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        rows = handle.snapshot()["rows"]
        if sum(r["status"] == "running" for r in rows) == 2:
            break
        time.sleep(0.1)
    time.sleep(1.0)  # a round or more under way
    # Execute
    asked = time.monotonic()
    handle.stop()
    ended = handle.wait(60)
    # Assert: two stopped mid-way (their own summary.json says so), four never started, nothing left behind
    assert ended and time.monotonic() - asked < 20
    statuses = [r["status"] for r in handle.rows]
    assert sorted(statuses) == ["cancelled"] * 4 + ["stopped"] * 2, statuses
    assert handle.status == "stopped"
    summary = pd.read_csv(handle.path / "summary.csv")
    assert list(summary["status"]) == statuses
    for row in handle.rows:
        run_dir = tmp_path / row["run_id"]
        if row["status"] == "cancelled":
            assert not run_dir.exists()
        else:
            saved = json.loads((run_dir / "summary.json").read_text())
            assert saved["status"] == "stopped" and 0 < row["rounds_done"] < 500
    assert pd.read_csv(handle.path / "cells.csv")["n_seeds"].tolist() == [0, 0]
    assert json.loads((handle.path / "sweep.json").read_text())["status"] == "stopped"
    assert not any(_alive(pid) for pid in handle.worker_pids)
    assert _no_children_within(10) == []
    assert os.path.exists(handle.stop_file)
