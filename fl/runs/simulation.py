"""One in-process run: a server thread and N client threads over loopback.

``start(config)`` validates everything that can be validated up front (so the
caller can show a clear message), then returns a RunHandle at once; the run
goes on in background threads. The handle's ``snapshot()`` is a consistent
copy of the live state, safe to read from any thread (a Streamlit fragment
polls it); ``stop()`` ends the run gracefully.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

import numpy as np

from fl.federation.behaviour import Behaviour, assign_behaviours
from fl.federation.client import ClientSettings, FederatedClient, LocalData
from fl.runs.config import RunConfig
from fl.data import FederatedData, load_dataset, make_federated_data
from fl.data.resources import check_config_size
from fl.federation.rounds import RunResult, ServerData
from fl.runs.store import RunStore, RunWriter, new_run_id
from fl.runs.state import RunHandle, RunState, event_sink, launch_rounds
from fl.federation.server import FederatedServer, ServerSettings
from fl.federation.task import Task, make_preprocess


def client_id_for(i: int) -> str:
    return f"client_{i:03d}"


def prepare_data(config: RunConfig) -> FederatedData:
    """Load and split the data a config describes (DataError on bad data, ResourceError when too big)."""
    check_config_size(config)
    dataset = load_dataset(config.dataset, csv_path=config.csv_path, target=config.target,
                           n_samples=config.n_samples, n_features=config.n_features,
                           n_classes=config.n_classes, seed=config.seed, target_bins=config.target_bins)
    return make_federated_data(
        dataset, n_clients=config.clients, partition_method=config.partition, alpha=config.alpha,
        shards_per_client=config.shards_per_client, quantity_skew=config.quantity_skew,
        min_samples=config.min_samples, test_size=config.test_size, val_size=config.effective_val_size,
        seed=config.seed,
    )


def make_task(config: RunConfig, data: FederatedData) -> Task:
    return Task(model=config.model, model_params=dict(config.model_params),
                n_features=int(data.split.X_train.shape[1]), classes=list(data.dataset.classes),
                feature_names=list(data.dataset.feature_names),
                preprocess=make_preprocess(data.stats if config.standardize else None, data.dataset.target_edges),
                local_test_size=config.local_test_size)


def server_data(data: FederatedData) -> ServerData:
    split = data.split
    has_val = split.X_val is not None and len(split.X_val) > 0
    return ServerData(split.X_test, split.y_test, split.X_val if has_val else None, split.y_val if has_val else None)


def start(config: RunConfig, *, store: RunStore | None = None, out_dir: str | None = None,
          run_id: str | None = None, on_event: Callable[[dict], None] | None = None,
          with_baselines: bool = False) -> RunHandle:
    """Validate, prepare data, bind a loopback server, start N client threads.

    Raises ConfigError / DataError / OSError before any thread starts, so
    the caller can report them; after that, faults show up in the state.
    """
    config.validate()
    data = prepare_data(config)
    task = make_task(config, data)
    run_id = run_id or new_run_id()
    client_ids = [client_id_for(i) for i in range(config.clients)]
    n_samples = {cid: int(len(part)) for cid, part in zip(client_ids, data.parts)}
    behaviours = assign_behaviours(client_ids, seed=config.seed, dropout_prob=config.dropout_prob,
                                   slow_clients=config.slow_clients, slow_delay=config.slow_delay,
                                   malicious_clients=config.malicious_clients, attack=config.attack,
                                   attack_scale=config.attack_scale)
    state = RunState(run_id, config, client_ids, n_samples)
    state.n_classes = len(data.dataset.classes)
    state.set_roles({cid: _role(b) for cid, b in behaviours.items() if _role(b)})
    writer = None
    if out_dir is not None:
        writer = RunWriter(out_dir, config.to_dict(), run_id)
    elif store is not None:
        writer = store.create(run_id, config.to_dict())
    if writer is not None:
        writer.save_json("partition.json", partition_summary(data, client_ids))
    sink = event_sink(state, writer, on_event)
    settings = ServerSettings(host="127.0.0.1", port=0, max_clients=config.clients,
                              wait_for_clients=config.clients, join_timeout_s=60.0)
    server = FederatedServer(task, settings, on_event=sink, run_id=run_id)
    server.bind()
    handle = RunHandle(run_id, config, state, data, server, writer=writer)
    host, port = server.address
    for i, cid in enumerate(client_ids):
        X, y = data.client_data(i)
        local = LocalData(X=X, y=y, feature_names=list(data.dataset.feature_names))
        client = FederatedClient(cid, local, ClientSettings(host=host, port=port, connect_timeout_s=30.0),
                                 stop=handle.client_stop, seed=config.seed, behaviour=behaviours[cid])
        thread = threading.Thread(target=client.run, name=f"fl-{cid}", daemon=True)
        thread.start()
        handle.threads.append(thread)

    client_threads = list(handle.threads)
    server.clients_alive = lambda: any(t.is_alive() for t in client_threads)
    if with_baselines:
        handle.state.set_baselines(None, "computing")
        handle.baselines_thread = threading.Thread(target=_baselines, args=(handle, client_ids),
                                                   name=f"fl-baselines-{run_id}", daemon=True)
        handle.baselines_thread.start()
    launch_rounds(handle, server_data(data))
    return handle


def _role(behaviour: Behaviour) -> str:
    """What the user configured this client to be (the server is never told)."""
    parts = []
    if behaviour.malicious:
        parts.append(f"malicious ({behaviour.attack})")
    if behaviour.delay_s > 0:
        parts.append(f"slow (+{behaviour.delay_s:g} s)")
    return ", ".join(parts)


def _baselines(handle: RunHandle, client_ids: list[str]) -> None:
    """Compute the reference numbers beside the run; a failure is an event, not a crash.

    A stopped run stops them too (between two fits): Stop must not wait for
    a hundred local-only fits.
    """
    from fl.runs.baselines import BaselinesCancelled, compute_baselines

    try:
        baselines = compute_baselines(handle.config, handle.data, client_ids,
                                      should_stop=handle.server.stop_requested.is_set)
    except BaselinesCancelled:
        handle.state.set_baselines(None, "skipped")
        return
    except Exception as exc:  # a model that cannot fit the pooled data, say
        handle.state.set_baselines(None, "failed")
        handle.state.apply({"type": "error", "t": time.time(), "message": f"baselines failed: {exc}"})
        return
    handle.state.set_baselines(baselines)
    if handle.writer is not None:
        handle.writer.save_json("baselines.json", baselines)
        handle.writer.update_summary(baselines=baselines)


def run(config: RunConfig, **kwargs: Any) -> RunResult:
    """Start and wait: the blocking form, for scripts and tests."""
    handle = start(config, **kwargs)
    handle.wait()
    assert handle.result is not None
    return handle.result


def partition_summary(data: FederatedData, client_ids: list[str]) -> dict[str, Any]:
    """Who holds how many rows of which class: the clients x classes heatmap."""
    return {"clients": client_ids, "classes": list(data.dataset.classes),
            "counts": class_presence(data).astype(int).tolist()}


def class_presence(data: FederatedData) -> np.ndarray:
    """(clients, classes) label counts, for the heatmap of a non-IID split."""
    from fl.data import label_distribution

    return label_distribution(data.split.y_train, data.parts, data.dataset.classes)
