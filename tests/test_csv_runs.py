"""CSV data through whole runs: a binned continuous label, on the server and on a remote CSV client."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd

from fl.runs import simulation
from fl.federation.client import ClientSettings, FederatedClient, LocalData
from fl.runs.config import RunConfig
from fl.data import load_client_frame, local_holdout
from fl.runs.build import build_run
from fl.federation.rounds import RoundRunner
from fl.federation.server import FederatedServer, ServerSettings
from fl.federation.task import client_seed


def _ages_csv(path, n: int, shift: float, seed: int) -> str:
    """A continuous label (age) that two features predict."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=n), rng.normal(size=n)
    age = 40 + shift + 12 * a + 6 * b + rng.normal(scale=2, size=n)
    pd.DataFrame({"a": a, "b": b, "age": age.round(1)}).to_csv(path, index=False)
    return str(path)


def test_a_continuous_label_binned_into_quantile_classes_trains(tmp_path):
    # Prepare
    csv = _ages_csv(tmp_path / "ages.csv", 400, 0.0, 0)
    config = RunConfig(dataset="csv", csv_path=csv, target="age", target_bins=4, clients=4, model="logreg",
                       partition="iid", rounds=5)
    # Execute
    handle = simulation.start(config)
    result = handle.wait(60)
    # Assert: four balanced classes, learnt far above chance (25 %)
    assert result.status == "completed"
    assert handle.data.dataset.classes == [0, 1, 2, 3]
    assert np.bincount(handle.data.dataset.y).min() >= 95  # ties at an edge move a row or two
    assert result.final_metrics["accuracy"] > 0.6


def test_a_remote_csv_client_bins_its_labels_with_the_servers_edges(tmp_path):
    # Prepare: the server's file and a client's file with older people (its own quartiles would differ)
    server_csv = _ages_csv(tmp_path / "server.csv", 400, 0.0, 0)
    client_csv = _ages_csv(tmp_path / "site.csv", 200, 15.0, 1)
    config = RunConfig(dataset="csv", csv_path=server_csv, target="age", target_bins=4, model="logreg",
                       partition="iid", rounds=2, min_clients=1)
    plan = build_run(config)
    task = plan.task
    server = FederatedServer(task, ServerSettings(wait_for_clients=1, join_timeout_s=20))
    host, port = server.bind()
    own = load_client_frame(client_csv, "age")
    client = FederatedClient("site", LocalData(own.X, own.y, own.names, own.frame, own.target_values),
                             ClientSettings(host, port, connect_timeout_s=10))
    thread = threading.Thread(target=client.run, name="fl-test-site", daemon=True)
    thread.start()
    try:
        # Execute
        result = RoundRunner(server, plan.settings, plan.strategy(), plan.server_data).run()
    finally:
        server.stop()
        thread.join(10)
    # Assert: the client's labels are the server's classes of its ages, not its own quartiles
    edges = np.asarray(task.target_edges)
    expected = np.searchsorted(edges, pd.read_csv(client_csv)["age"].to_numpy(), side="left")
    train, held = local_holdout(len(expected), config.local_test_size, client_seed(config.seed, "site"))
    assert result.status == "completed"
    assert np.array_equal(client.y, expected[train]) and np.array_equal(client.y_eval, expected[held])
    assert np.bincount(expected, minlength=4)[3] > 80  # older people: mostly the top class
