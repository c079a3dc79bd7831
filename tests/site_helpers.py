"""Cross-silo runs in tests: one CSV per site, each a FederatedClient thread joining a hosted server on loopback."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from fl.data import apply_standardization, features_from_frame, load_client_frame, local_holdout
from fl.federation.client import ClientSettings, FederatedClient, LocalData
from fl.federation.server import ServerSettings
from fl.federation.task import client_seed
from fl.runs import hosting
from fl.runs.config import RunConfig


def site_client(path: Path, cid: str, port: int, target: str, token: str | None = None) -> FederatedClient:
    """A site's client over its own CSV, as ``client_new.py --csv`` builds it."""
    own = load_client_frame(str(path), target)
    data = LocalData(X=own.X, y=own.y, feature_names=own.names, frame=own.frame, target_values=own.target_values)
    return FederatedClient(cid, data, ClientSettings(port=port, token=token, connect_timeout_s=10))


def run_sites(clients: list[FederatedClient]) -> tuple[list[threading.Thread], dict]:
    """Each client in a thread of its own; the dict fills with their ClientResults as they leave."""
    results: dict = {}
    threads = [threading.Thread(target=lambda c=c: results.__setitem__(c.client_id, c.run()), daemon=True)
               for c in clients]
    for t in threads:
        t.start()
    return threads, results


def host_sites(config: RunConfig, sites: dict[str, Path], out_dir: str | None = None, timeout: float = 120):
    """A server without data and one client per site (id: its key) to the end; (handle, result, clients)."""
    handle = hosting.host(config, ServerSettings(port=0, wait_for_clients=len(sites), join_timeout_s=30),
                          out_dir=out_dir, data_at_clients=True)
    clients = [site_client(path, cid, handle.server.address[1], config.target) for cid, path in sites.items()]
    threads, _ = run_sites(clients)
    try:
        result = handle.wait(timeout)
    finally:
        handle.stop()
        for t in threads:
            t.join(15)
    return handle, result, clients


def pooled_rows(task, sites: dict[str, Path], target: str, seed: int = 0):
    """Every site's (training X, y) and (held-out X, y), built as its client builds them: the task's columns and
    scaler, the client's own held-out share."""
    train_X, train_y, test_X, test_y = [], [], [], []
    for cid, path in sites.items():
        own = load_client_frame(str(path), target)
        X = apply_standardization(features_from_frame(own.frame, task.feature_names), task.standardize)
        train, held = local_holdout(len(own.y), task.local_test_size, client_seed(seed, cid))
        train_X.append(X[train]), train_y.append(own.y[train]), test_X.append(X[held]), test_y.append(own.y[held])
    return (np.vstack(train_X), np.concatenate(train_y)), (np.vstack(test_X), np.concatenate(test_y))
