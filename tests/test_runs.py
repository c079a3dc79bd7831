"""The run store: files, listing, loading, deleting."""

import json

import joblib
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from fl.runs.store import RunStore


def _events():
    yield {"type": "join", "t": 1.0, "client_id": "a", "n_samples": 10}
    for r in (1, 2):
        yield {"type": "client_result", "t": 2.0, "round": r, "client_id": "a", "n_samples": 10,
               "train_time_s": 0.1, "train_loss": float("nan"), "train_accuracy": 0.5, "status": "ok"}
        yield {"type": "round", "t": 3.0, "round": r, "accuracy": 0.5 + r / 10, "loss": 1.0 / r, "f1_macro": 0.4,
               "n_fit_clients": 1, "n_failures": 0, "n_stragglers": 0, "duration_s": 0.2, "bytes_sent": 100,
               "bytes_received": 90}


def test_store_writes_lists_loads_and_deletes(tmp_path):
    # Prepare
    store = RunStore(tmp_path)
    writer = store.create("run-1", {"dataset": "iris"})
    model = LogisticRegression().fit(np.eye(3), [0, 1, 2])
    # Execute
    for event in _events():
        writer.on_event(event)
    writer.finish("completed", model=model)
    runs = store.list()
    run = store.load("run-1")
    # Assert
    assert [r.run_id for r in runs] == ["run-1"]
    assert run.config == {"dataset": "iris"}
    assert run.summary["status"] == "completed" and run.summary["final_metrics"]["accuracy"] == pytest.approx(0.7)
    assert list(run.metrics()["accuracy"]) == pytest.approx([0.6, 0.7])
    assert run.clients()["train_loss"].isna().all()  # NaN is stored as an empty cell, never as "nan"
    assert [e["type"] for e in run.events()][:2] == ["join", "client_result"]
    assert joblib.load(run.model_path).predict(np.eye(3)).tolist() == [0, 1, 2]
    store.delete("run-1")
    assert store.list() == []


def test_bad_ids_and_broken_runs_are_handled(tmp_path):
    # Prepare
    store = RunStore(tmp_path)
    (tmp_path / "junk").mkdir()
    (tmp_path / "torn").mkdir()
    (tmp_path / "torn" / "config.json").write_text("{")
    writer = store.create("ok", {})
    with open(writer.dir / "events.jsonl", "a") as fh:
        fh.write('{"type": "round"')  # a torn last line
    # Execute / Assert
    assert [r.run_id for r in store.list()] == ["ok"]
    assert store.load("ok").events() == []
    with pytest.raises(ValueError):
        store.load("../etc")
    with pytest.raises(FileNotFoundError):
        store.delete("missing")
    assert json.loads((writer.dir / "summary.json").read_text())["status"] == "running"
