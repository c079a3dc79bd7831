"""MLflow tracking (--mlflow): what a run logs, read back with MLflow's own client; failures stay outside the run."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import joblib
import pandas as pd
import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # before MLflow is imported, as the tracker does
import mlflow  # noqa: E402  (in requirements.txt: CI tests tracking; imported once, it takes a second)
from mlflow import MlflowClient  # noqa: E402

from fl.data import load_dataset, make_federated_data  # noqa: E402
from fl.federation.client import ClientSettings, FederatedClient, LocalData  # noqa: E402
from fl.federation.server import ServerSettings  # noqa: E402
from fl.runs import hosting, simulation, tracking  # noqa: E402
from fl.cli.main import build_parser, main  # noqa: E402
from fl.runs.config import ConfigError, RunConfig  # noqa: E402
from fl.runs.run_registry import RunRegistry  # noqa: E402
from fl.runs.store import RunStore  # noqa: E402

SMALL = dict(dataset="iris", clients=3, rounds=3, model="logreg", partition="iid")
SMALL_FLAGS = ["--dataset", "iris", "--clients", "3", "--rounds", "3", "--model", "logreg", "--partition", "iid"]


@pytest.fixture(autouse=True)
def file_store(monkeypatch):
    """MLflow 3.13+ refuses its file store unless told (the tracker says so too; the reading client needs it)."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")


def _only_run(store: Path) -> tuple[MlflowClient, object]:
    client = MlflowClient(tracking_uri=store.resolve().as_uri())
    experiment = client.get_experiment_by_name(tracking.EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    return client, runs[0]


def _tracking_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("fl-mlflow-")]


def test_a_run_is_logged_and_reads_back_from_mlflow(tmp_path, no_thread_leaks):
    # Prepare: a dashboard-style run (store, baselines) tracked to a local store
    store = tmp_path / "mlruns"
    config = RunConfig(**SMALL, mlflow_uri=str(store))
    # Execute
    handle = RunRegistry(RunStore(tmp_path / "runs")).start(config)
    handle.wait(60)
    # Assert: params are the config, one accuracy per round as in metrics.csv, final numbers, files, status
    client, run = _only_run(store)
    run_dir = tmp_path / "runs" / handle.run_id
    metrics = pd.read_csv(run_dir / "metrics.csv")
    summary = RunStore(tmp_path / "runs").load(handle.run_id).summary
    assert run.info.run_name == handle.run_id and run.info.status == "FINISHED"
    assert run.data.params == tracking.flatten(config.to_dict())
    assert run.data.params["dataset"] == "iris" and run.data.params["rounds"] == "3"
    history = client.get_metric_history(run.info.run_id, "accuracy")
    assert [m.step for m in history] == [1, 2, 3]
    assert [m.value for m in history] == pytest.approx(metrics["accuracy"].tolist())
    assert run.data.metrics["final_accuracy"] == pytest.approx(summary["final_metrics"]["accuracy"])
    assert run.data.metrics["final_loss"] == pytest.approx(summary["final_metrics"]["loss"])
    assert run.data.metrics["baseline_centralized_accuracy"] == pytest.approx(
        summary["baselines"]["centralized"]["accuracy"])
    assert {"fl.run_id": handle.run_id, "fl.kind": "simulation", "fl.model": "logreg",
            "fl.status": "completed"}.items() <= run.data.tags.items()
    logged = {f.path for f in client.list_artifacts(run.info.run_id)}
    present = {name for name in tracking.ARTIFACTS if (run_dir / name).exists()}
    assert {"config.json", "summary.json", "metrics.csv", "clients.csv", "model.joblib"} <= present == logged
    model = joblib.load(client.download_artifacts(run.info.run_id, "model.joblib", str(tmp_path)))
    X = load_dataset("iris").X[:20]
    assert (model.predict(X) == joblib.load(run_dir / "model.joblib").predict(X)).all()
    if "best_round" in summary:  # the best-round checkpoint, when the run keeps one
        assert run.data.metrics["best_round"] == summary["best_round"]


def test_the_flag_alone_logs_to_mlruns_here_and_a_value_logs_there(tmp_path, monkeypatch, capsys, no_thread_leaks):
    # Prepare
    monkeypatch.chdir(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    # Execute: --mlflow before another flag, and --mlflow PATH
    parsed = build_parser().parse_args(["simulate", "--mlflow", "--rounds", "2"])
    alone = main(["simulate", *SMALL_FLAGS, "--mlflow"])
    given = main(["simulate", *SMALL_FLAGS, "--seed", "1", "--mlflow", str(elsewhere)])
    # Assert: ./mlruns of the working directory, and the given store, each hold one finished run
    assert parsed.mlflow_uri == tracking.LOCAL_STORE and parsed.rounds == 2
    assert alone == 0 and given == 0, capsys.readouterr().err
    for store, seed in ((tmp_path / "mlruns", "0"), (elsewhere, "1")):
        client, run = _only_run(store)
        assert run.info.status == "FINISHED" and run.data.params["seed"] == seed
        assert {"config.json", "model.joblib"} <= {f.path for f in client.list_artifacts(run.info.run_id)}
        assert len(client.get_metric_history(run.info.run_id, "loss")) == 3


def test_a_hosted_run_is_tracked_too(tmp_path, no_thread_leaks):
    # Prepare: a server for two remote clients (threads here), tracked
    store = tmp_path / "mlruns"
    config = RunConfig(**{**SMALL, "clients": 2, "rounds": 2}, min_clients=2, mlflow_uri=store.as_uri())
    handle = hosting.host(config, ServerSettings(host="127.0.0.1", port=0, wait_for_clients=2, join_timeout_s=30),
                          out_dir=str(tmp_path / "run"))
    host, port = handle.server.address
    data = make_federated_data(load_dataset("iris"), n_clients=2, seed=0)
    clients = [FederatedClient(f"remote-{i}", LocalData(*data.client_data(i), list(data.dataset.feature_names)),
                               ClientSettings(host, port)) for i in range(2)]
    threads = [threading.Thread(target=c.run, name=f"fl-test-remote-{i}", daemon=True) for i, c in enumerate(clients)]
    for t in threads:
        t.start()
    # Execute
    result = handle.wait(60)
    for t in threads:
        t.join(10)
    # Assert
    client, run = _only_run(store)
    assert result.status == "completed" and run.info.status == "FINISHED"
    assert run.data.tags["fl.kind"] == "hosted"
    assert len(client.get_metric_history(run.info.run_id, "accuracy")) == 2


def test_an_unreachable_server_neither_fails_nor_holds_the_run(monkeypatch, no_thread_leaks):
    # Prepare: a port nobody listens on; MLflow told not to retry
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    config = RunConfig(**SMALL, mlflow_uri=f"http://127.0.0.1:{port}")
    # Execute
    started = time.monotonic()
    handle = simulation.start(config)
    result = handle.wait(30)
    took = time.monotonic() - started
    # Assert: the run completes, says once that tracking stopped, and ends promptly
    errors = [e["message"] for e in handle.snapshot()["events"] if e["type"] == "error"]
    assert result is not None and result.status == "completed" and len(result.rounds) == 3
    assert len(errors) == 1 and errors[0].startswith("MLflow tracking stopped") and "goes on" in errors[0]
    assert took < 15 and handle.tracker.failed


class SlowClient:
    """An MLflow client whose metric logging takes a second: a store that cannot keep up."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def get_experiment_by_name(self, name: str) -> SimpleNamespace:
        return SimpleNamespace(experiment_id="1")

    def create_run(self, experiment_id: str, run_name: str, tags: dict) -> SimpleNamespace:
        return SimpleNamespace(info=SimpleNamespace(run_id="r1"))

    def log_batch(self, run_id: str, metrics=(), params=(), tags=()) -> None:
        self.calls.append("log_batch")
        if metrics:
            time.sleep(1.0)

    def log_artifact(self, run_id: str, path: str) -> None:
        self.calls.append("log_artifact")

    def set_terminated(self, run_id: str, status: str) -> None:
        self.calls.append("set_terminated")


def test_a_slow_store_drops_what_it_cannot_take_and_the_end_waits_a_bounded_time(monkeypatch, no_thread_leaks):
    # Prepare: a slow client, a queue of one event, half a second for the end
    slow = SlowClient()
    monkeypatch.setattr(tracking, "_client", lambda uri: slow)
    monkeypatch.setattr(tracking, "QUEUE_SIZE", 1)
    monkeypatch.setattr(tracking, "CLOSE_TIMEOUT_S", 0.5)
    config = RunConfig(**{**SMALL, "rounds": 6}, mlflow_uri="http://127.0.0.1:1")
    # Execute
    started = time.monotonic()
    handle = simulation.start(config)
    result = handle.wait(30)
    took = time.monotonic() - started
    # Assert: the rounds did not wait for MLflow (6 s of logging), the run ended within its bound, saying so
    errors = [e["message"] for e in handle.snapshot()["events"] if e["type"] == "error"]
    assert result is not None and result.status == "completed" and len(result.rounds) == 6
    assert took < 5
    assert len(errors) == 2 and "too slow" in errors[0] and "did not finish" in errors[1]
    assert handle.tracker.dropped > 0 and "set_terminated" not in slow.calls  # given up, not waited for


def test_missing_mlflow_is_refused_up_front_with_the_install_command(monkeypatch, capsys):
    # Prepare: MLflow not importable
    monkeypatch.setitem(sys.modules, "mlflow", None)
    before = set(threading.enumerate())
    # Execute / Assert: validation, a simulation and the command line all refuse, before any thread starts
    with pytest.raises(ConfigError, match="pip install mlflow-skinny"):
        RunConfig(**SMALL, mlflow_uri="./mlruns").validate()
    with pytest.raises(ConfigError, match="pip install mlflow-skinny"):
        simulation.start(RunConfig(**SMALL, mlflow_uri="./mlruns"))
    assert set(threading.enumerate()) <= before
    assert main(["simulate", *SMALL_FLAGS, "--mlflow"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install mlflow-skinny" in err
    assert RunConfig(**SMALL).validate()  # tracking off: MLflow is never needed


def test_params_fit_mlflow_and_paths_become_file_uris(tmp_path):
    # Prepare
    config = {"model_params": {"hidden_layer_sizes": [64, 32], "alpha": 1e-4}, "csv_path": None,
              "note": "x" * 900, "rounds": 3, "standardize": True}
    # Execute
    params = tracking.flatten(config)
    # Assert
    assert params == {"model_params.hidden_layer_sizes": "[64, 32]", "model_params.alpha": "0.0001",
                      "csv_path": "null", "note": "x" * tracking.MAX_VALUE_CHARS, "rounds": "3",
                      "standardize": "true"}
    assert tracking.resolve_uri(str(tmp_path / "m")) == (tmp_path / "m").as_uri()
    assert tracking.resolve_uri("") == Path("mlruns").resolve().as_uri()
    assert tracking.resolve_uri("http://mlflow:5000") == "http://mlflow:5000"
    assert tracking.numbers({"a": 1, "b": float("nan"), "c": None, "d": True, "e": "x"}) == {"a": 1.0}
    assert mlflow.__version__  # the pinned package is what CI tests


def test_the_dashboard_switch_tracks_a_run_and_a_reload_keeps_it(app_env, tmp_path):
    # Prepare: a small run on the Run page, "Track in MLflow" ticked with a store of this test
    from tests.apptest_helpers import new_app, new_app_with_url, run_until

    store = tmp_path / "dashboard-mlruns"
    at = new_app()
    at.sidebar.selectbox(key="cfg_dataset").set_value("iris").run()
    at.sidebar.slider(key="cfg_clients").set_value(3).run()
    at.sidebar.slider(key="cfg_rounds").set_value(2).run()
    at.sidebar.checkbox(key="cfg_mlflow_uri_on").check().run()
    at.sidebar.text_input(key="cfg_mlflow_uri").input(str(store)).run()
    # Execute
    at.sidebar.button(key="start_run").click().run()
    at = run_until(at, lambda a: len(a.success) > 0)
    reload = new_app_with_url(run=at.query_params["run"])
    # Assert: the run is in the store, and the reloaded page shows the switch on with the URI
    assert not at.exception and not at.error
    client, run = _only_run(store)
    assert run.data.params["mlflow_uri"] == str(store)
    assert reload.sidebar.checkbox(key="cfg_mlflow_uri_on").value is True
    assert reload.sidebar.text_input(key="cfg_mlflow_uri").value == str(store)


def test_the_readmes_command_opens_the_store_from_a_fresh_process(tmp_path, no_thread_leaks):
    """README: ``MLFLOW_ALLOW_FILE_STORE=true mlflow ui --backend-store-uri ./mlruns``. The UI needs the full
    mlflow; what it does first, opening the file store, is checked here from a process of its own (the
    workbench sets the variable only for itself)."""
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    # Prepare: a tracked run in ./mlruns; the README's command, read from the README
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    command = re.search(r"^(\S+=\S+) mlflow ui --backend-store-uri \./mlruns$", readme, re.M)
    assert command is not None, "the README lost its command to open the runs"
    name, value = command.group(1).split("=")
    handle = RunRegistry(RunStore(tmp_path / "runs")).start(RunConfig(**SMALL, mlflow_uri=str(tmp_path / "mlruns")))
    handle.wait(60)
    read = ("from mlflow.tracking import MlflowClient; c = MlflowClient('./mlruns'); "
            "print(sum(len(c.search_runs([e.experiment_id])) for e in c.search_experiments()))")
    env = {k: v for k, v in os.environ.items() if k != name}
    # Execute: with the README's variable, and without it
    opened = subprocess.run([sys.executable, "-c", read], cwd=tmp_path, env={**env, name: value},
                            capture_output=True, text=True, timeout=120)
    refused = subprocess.run([sys.executable, "-c", read], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=120)
    # Assert
    assert opened.returncode == 0 and opened.stdout.strip() == "1", opened.stderr
    assert refused.returncode != 0 and "MLFLOW_ALLOW_FILE_STORE" in refused.stderr
