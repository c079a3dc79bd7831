"""The process-wide run registry and hosted runs (engine side of the dashboard)."""

from __future__ import annotations

import socket
import threading

import pytest

from fl.federation.client import ClientSettings, FederatedClient, LocalData
from fl.runs.config import RunConfig
from fl.data import load_dataset, make_federated_data
from fl.runs.run_registry import RunRegistry
from fl.runs.store import RunStore
from fl.federation.server import ServerSettings


def test_simulated_run_gets_baselines_and_is_found_again(tmp_path):
    # Prepare
    registry = RunRegistry(RunStore(tmp_path))
    # Execute
    handle = registry.start(RunConfig(model="logreg", partition="iid", dataset="wine", clients=3, rounds=3))
    handle.wait(60)
    snap = handle.snapshot()
    # Assert: once done, the baselines are in the state and in summary.json (no waiting, no race)
    assert handle.done and registry.get(handle.run_id) is handle and registry.active() == []
    assert snap["baselines"]["centralized"]["accuracy"] > 0.9
    assert set(snap["baselines"]["local_only"]["per_client"]) == {"client_000", "client_001", "client_002"}
    summary = RunStore(tmp_path).load(handle.run_id).summary
    assert summary["status"] == "completed" and summary["baselines"] == snap["baselines"]
    assert (tmp_path / handle.run_id / "partition.json").exists()


@pytest.mark.parametrize("model, aggregation", [("random_forest", "voting"), ("gaussian_nb", "fedavg")])
def test_baselines_are_in_summary_even_when_the_rounds_end_first(tmp_path, model, aggregation):
    # Prepare: one-shot runs end in a fraction of the time the baselines take
    registry = RunRegistry(RunStore(tmp_path))
    params = {"n_estimators": 20} if model == "random_forest" else {}
    config = RunConfig(dataset="digits", clients=8, model=model, model_params=params, aggregation=aggregation,
                       partition="iid")
    # Execute
    handle = registry.start(config)
    handle.wait(120)
    # Assert
    summary = RunStore(tmp_path).load(handle.run_id).summary
    assert summary["status"] == "completed"
    assert summary["baselines"]["centralized"]["accuracy"] > 0.7
    assert len(summary["baselines"]["local_only"]["per_client"]) == 8


def test_stopped_run_gives_up_its_baselines_at_once(tmp_path):
    # Prepare: 60 clients make 61 baseline fits
    registry = RunRegistry(RunStore(tmp_path))
    handle = registry.start(RunConfig(dataset="digits", clients=60, model="mlp", rounds=500, partition="iid"))
    # Execute
    handle.stop()
    result = handle.wait(15)
    # Assert
    assert result is not None and result.status == "stopped" and handle.done
    assert handle.snapshot()["baselines_status"] == "skipped"


def test_hosted_run_waits_for_remote_clients_then_runs(tmp_path):
    # Prepare
    registry = RunRegistry(RunStore(tmp_path))
    config = RunConfig(model="logreg", partition="iid", dataset="iris", clients=2, rounds=2, min_clients=2)
    handle = registry.host(config, ServerSettings(host="127.0.0.1", port=0, token="t", wait_for_clients=2,
                                                  join_timeout_s=30))
    host, port = handle.server.address
    data = make_federated_data(load_dataset("iris"), n_clients=2, seed=0)
    threads = []
    for i in range(2):
        X, y = data.client_data(i)
        client = FederatedClient(f"remote-{i}", LocalData(X, y, list(data.dataset.feature_names)),
                                 ClientSettings(host, port, token="t"))
        threads.append(threading.Thread(target=client.run, name=f"fl-test-remote-{i}", daemon=True))
        threads[-1].start()
    # Execute
    result = handle.wait(60)
    for t in threads:
        t.join(10)
    # Assert
    assert result.status == "completed" and len(result.rounds) == 2
    assert handle.kind == "hosted" and handle.data is None
    assert set(handle.snapshot()["clients"]) == {"remote-0", "remote-1"}
    assert RunStore(tmp_path).load(handle.run_id).summary["status"] == "completed"


def test_port_in_use_is_an_oserror_and_leaves_no_run(tmp_path):
    # Prepare
    registry = RunRegistry(RunStore(tmp_path))
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    port = blocker.getsockname()[1]
    # Execute / Assert
    try:
        with pytest.raises(OSError):
            registry.host(RunConfig(model="logreg", partition="iid", dataset="iris"), ServerSettings(host="127.0.0.1", port=port))
    finally:
        blocker.close()
    assert registry.handles() == [] and RunStore(tmp_path).list() == []


def test_a_stopped_run_leaves_no_worker_process_behind(tmp_path):
    # Prepare: 60 clients in worker processes, stopped before they have all joined
    import time

    from tests.test_runtime import _children, _described

    registry = RunRegistry(RunStore(tmp_path))
    handle = registry.start(RunConfig(dataset="digits", clients=60, model="logreg", rounds=500, partition="iid"))
    # Execute
    handle.stop()
    assert handle.wait(15) is not None
    # Assert: the workers' clients find the server gone and end (they used to retry for a minute)
    deadline = time.monotonic() + 10
    while _children() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _children() == [], _described(_children())
