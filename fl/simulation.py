"""One in-process run: a server thread and N client threads over loopback.

``start(config)`` validates everything that can be validated up front (so the
caller can show a clear message), then returns a RunHandle at once; the run
goes on in background threads. The handle's ``snapshot()`` is a consistent
copy of the live state, safe to read from any thread (a Streamlit fragment
polls it); ``stop()`` ends the run gracefully.
"""

from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from fl.client import ClientSettings, FederatedClient, LocalData
from fl.config import RunConfig
from fl.data import FederatedData, load_dataset, make_federated_data
from fl.rounds import RoundRunner, RunResult, ServerData
from fl.runs import RunStore, RunWriter, new_run_id
from fl.server import FederatedServer, ServerSettings
from fl.task import Task

MAX_EVENTS_KEPT = 2000


def client_id_for(i: int) -> str:
    return f"client_{i:03d}"


def prepare_data(config: RunConfig) -> FederatedData:
    """Load and split the data a config describes (DataError on bad data)."""
    dataset = load_dataset(config.dataset, csv_path=config.csv_path, target=config.target,
                           n_samples=config.n_samples, n_features=config.n_features,
                           n_classes=config.n_classes, seed=config.seed)
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
                preprocess={"standardize": data.stats} if config.standardize else None)


def server_data(data: FederatedData) -> ServerData:
    split = data.split
    has_val = split.X_val is not None and len(split.X_val) > 0
    return ServerData(split.X_test, split.y_test, split.X_val if has_val else None, split.y_val if has_val else None)


class RunState:
    """The live state of one run, fed by events from any thread."""

    def __init__(self, run_id: str, config: RunConfig, client_ids: list[str], n_samples: dict[str, int]):
        self._lock = threading.Lock()
        self.run_id = run_id
        self.config = config
        self.status = "starting"
        self.started_at = time.time()
        self.finished_at: float | None = None
        self.error: str | None = None
        self.address: tuple[str, int] | None = None
        self.current_round = 0
        self.total_rounds = config.effective_rounds
        self.rounds: list[dict] = []
        self.client_rows: list[dict] = []
        self.events: list[dict] = []
        self.final_metrics: dict = {}
        self.clients: dict[str, dict] = {
            cid: {"client_id": cid, "status": "waiting", "n_samples": n_samples.get(cid), "rounds_trained": 0,
                  "failures": 0, "bytes_sent": 0, "bytes_received": 0, "last_accuracy": None, "last_loss": None}
            for cid in client_ids
        }

    def apply(self, event: dict) -> None:
        kind = event.get("type")
        with self._lock:
            self.events.append(event)
            if len(self.events) > MAX_EVENTS_KEPT:
                del self.events[: len(self.events) - MAX_EVENTS_KEPT]
            cid = event.get("client_id")
            client = self.clients.setdefault(cid, {"client_id": cid, "status": "waiting", "rounds_trained": 0,
                                                   "failures": 0}) if cid else None
            if kind == "listening":
                self.address = (event["host"], event["port"])
                self.status = "waiting for clients"
            elif kind == "join" and client is not None:
                client.update(status="connected", n_samples=event.get("n_samples"))
            elif kind == "leave" and client is not None:
                client.update(status="gone", reason=event.get("reason"))
            elif kind == "round_start":
                self.status = "running"
                self.current_round = event["round"]
                for c in event.get("clients", []):
                    if c in self.clients and self.clients[c]["status"] != "gone":
                        self.clients[c]["status"] = "training"
            elif kind == "client_result" and client is not None:
                self.client_rows.append(event)
                client.update(status="idle", last_accuracy=event.get("train_accuracy"),
                              last_loss=event.get("train_loss"), bytes_sent=event.get("bytes_sent"),
                              bytes_received=event.get("bytes_received"))
                client["rounds_trained"] = client.get("rounds_trained", 0) + 1
            elif kind == "failure" and client is not None:
                client["failures"] = client.get("failures", 0) + 1
                if client.get("status") == "training":
                    client["status"] = "idle"
            elif kind == "round":
                self.rounds.append(event)
                for c in self.clients.values():
                    if c.get("status") == "training":
                        c["status"] = "idle"
            elif kind == "error":
                self.error = event.get("message")
            elif kind == "done":
                self.status = event.get("status", "completed")
                self.error = event.get("error") or self.error
                self.final_metrics = event.get("final_metrics") or {}
                self.finished_at = time.time()
                for c in self.clients.values():
                    c["status"] = "gone"

    def snapshot(self) -> dict[str, Any]:
        """A deep copy: the caller may keep and mutate it freely."""
        with self._lock:
            return copy.deepcopy({
                "run_id": self.run_id, "config": self.config.to_dict(), "status": self.status,
                "started_at": self.started_at, "finished_at": self.finished_at, "error": self.error,
                "address": self.address, "round": self.current_round, "total_rounds": self.total_rounds,
                "rounds": self.rounds, "clients": self.clients, "client_rows": self.client_rows,
                "events": self.events, "final_metrics": self.final_metrics,
            })


@dataclass
class RunHandle:
    """What ``start`` returns: live state, stop, wait, and the final result."""

    run_id: str
    config: RunConfig
    state: RunState
    data: FederatedData
    server: FederatedServer
    threads: list[threading.Thread] = field(default_factory=list)
    client_stop: threading.Event = field(default_factory=threading.Event)
    result: RunResult | None = None
    writer: RunWriter | None = None

    def snapshot(self) -> dict[str, Any]:
        return self.state.snapshot()

    @property
    def done(self) -> bool:
        return self.result is not None

    def stop(self) -> None:
        """Graceful: the round in flight is abandoned, clients get bye, sockets close."""
        self.server.stop()
        self.client_stop.set()

    def wait(self, timeout: float | None = None) -> RunResult | None:
        """Block until the run ends (or the timeout passes); returns the result or None."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self.threads:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(remaining)
        return self.result


def start(config: RunConfig, *, store: RunStore | None = None, out_dir: str | None = None,
          run_id: str | None = None, on_event: Callable[[dict], None] | None = None,
          round_hook: Callable[[str], Any] | None = None) -> RunHandle:
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
    state = RunState(run_id, config, client_ids, n_samples)
    writer = None
    if out_dir is not None:
        writer = RunWriter(out_dir, config.to_dict(), run_id)
    elif store is not None:
        writer = store.create(run_id, config.to_dict())

    def sink(event: dict) -> None:
        state.apply(event)
        if writer is not None:
            writer.on_event(event)
        if on_event is not None:
            on_event(event)

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
                                 stop=handle.client_stop, seed=config.seed)
        thread = threading.Thread(target=client.run, name=f"fl-{cid}", daemon=True)
        thread.start()
        handle.threads.append(thread)

    def drive() -> None:
        runner = RoundRunner(server, config, server_data(data))
        result = runner.run()
        if writer is not None:
            writer.finish(result.status, model=result.model, error=result.error)
        handle.result = result
        handle.client_stop.set()

    driver = threading.Thread(target=drive, name=f"fl-run-{run_id}", daemon=True)
    driver.start()
    handle.threads.insert(0, driver)
    return handle


def run(config: RunConfig, **kwargs: Any) -> RunResult:
    """Start and wait: the blocking form, for scripts and tests."""
    handle = start(config, **kwargs)
    handle.wait()
    assert handle.result is not None
    return handle.result


def class_presence(data: FederatedData) -> np.ndarray:
    """(clients, classes) label counts, for the heatmap of a non-IID split."""
    from fl.data import label_distribution

    return label_distribution(data.split.y_train, data.parts, data.dataset.classes)
