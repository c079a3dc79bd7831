"""A run's live state and its handle, shared by simulated and hosted runs.

RunState is fed by events from any thread (server, clients, baselines) and
hands out deep-copied snapshots, so a page can read it while workers write.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from fl.runs.config import RunConfig
from fl.data import FederatedData
from fl.federation.rounds import RoundRunner, RunResult, ServerData
from fl.runs.store import RunWriter
from fl.federation.server import FederatedServer

MAX_EVENTS_KEPT = 2000


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
        self.baselines: dict | None = None
        self.baselines_status = "none"  # none | computing | ready | failed | skipped
        self.n_classes: int | None = None  # of the task, for "did the model learn at all" (1/classes)
        self.kind = "simulation"  # or "hosted": remote clients, no baselines
        self.clients: dict[str, dict] = {
            cid: {"client_id": cid, "status": "waiting", "n_samples": n_samples.get(cid), "rounds_trained": 0,
                  "failures": 0, "bytes_sent": 0, "bytes_received": 0, "last_accuracy": None, "last_loss": None}
            for cid in client_ids
        }

    def apply(self, event: dict) -> None:
        """Fold one event into the state. Events are kept as they are (never mutated afterwards)."""
        kind = event.get("type")
        with self._lock:
            self.events.append(event)
            if len(self.events) > MAX_EVENTS_KEPT:
                del self.events[: len(self.events) - MAX_EVENTS_KEPT]
            cid = event.get("client_id")
            client = self._client(cid) if cid else None
            if kind == "listening":
                self.address = (event["host"], event["port"])
                self.status = "waiting for clients"
            elif kind == "join" and client is not None:
                client.update(status="connected", n_samples=event.get("n_samples"), reason=None)
            elif kind == "leave" and client is not None:
                client.update(status="gone", reason=event.get("reason"))
            elif kind == "round_start":
                self.status = "running"
                self.current_round = event["round"]
            elif kind == "client_status":
                for c in event.get("clients", []):
                    if c in self.clients and self.clients[c]["status"] != "gone":
                        self.clients[c]["status"] = event.get("status")
            elif kind == "client_result" and client is not None:
                self.client_rows.append(event)
                client.update(bytes_sent=event.get("bytes_sent"), bytes_received=event.get("bytes_received"))
                if event.get("status") == "ok":
                    client.update(last_accuracy=event.get("train_accuracy"), last_loss=event.get("train_loss"))
                    client["rounds_trained"] = client.get("rounds_trained", 0) + 1
                if event.get("eval_accuracy") is not None:
                    client["eval_accuracy"] = event.get("eval_accuracy")
            elif kind == "failure" and client is not None:
                client["failures"] = client.get("failures", 0) + 1
            elif kind == "round":
                self.rounds.append(event)
            elif kind == "error":
                self.error = event.get("message")
            elif kind == "done":
                self.status = event.get("status", "completed")
                self.error = event.get("error") or self.error
                self.final_metrics = event.get("final_metrics") or {}
                self.finished_at = time.time()
                for c in self.clients.values():
                    if c.get("status") != "gone":
                        c["status"] = "finished"  # left after bye; "gone" means lost mid-run

    def _client(self, cid: str) -> dict:
        return self.clients.setdefault(cid, {"client_id": cid, "status": "waiting", "rounds_trained": 0,
                                             "failures": 0})

    def set_roles(self, roles: dict[str, str]) -> None:
        """Mark clients the user made malicious or slow (for display only)."""
        with self._lock:
            for cid, role in roles.items():
                if cid in self.clients:
                    self.clients[cid]["role"] = role

    def set_baselines(self, baselines: dict | None, status: str = "ready") -> None:
        with self._lock:
            self.baselines = baselines
            self.baselines_status = status

    def snapshot(self) -> dict[str, Any]:
        """A consistent copy, cheap enough to take every second.

        Event dicts are never mutated once applied, so the lists are copied
        shallowly; only the per-client dicts, which change, are copied.
        """
        with self._lock:
            return {
                "run_id": self.run_id, "config": self.config.to_dict(), "status": self.status,
                "started_at": self.started_at, "finished_at": self.finished_at, "error": self.error,
                "address": self.address, "round": self.current_round, "total_rounds": self.total_rounds,
                "rounds": list(self.rounds), "clients": {cid: dict(c) for cid, c in self.clients.items()},
                "client_rows": list(self.client_rows), "events": list(self.events),
                "final_metrics": dict(self.final_metrics),
                "baselines": self.baselines, "baselines_status": self.baselines_status, "kind": self.kind,
                "n_classes": self.n_classes,
            }


@dataclass
class RunHandle:
    """What ``start`` returns: live state, stop, wait, and the final result."""

    run_id: str
    config: RunConfig
    state: RunState
    data: FederatedData | None  # None for a hosted run: the clients' data is theirs
    server: FederatedServer
    kind: str = "simulation"  # simulation | hosted
    threads: list[threading.Thread] = field(default_factory=list)
    client_stop: threading.Event = field(default_factory=threading.Event)
    result: RunResult | None = None
    writer: RunWriter | None = None
    baselines_thread: threading.Thread | None = None

    def snapshot(self) -> dict[str, Any]:
        return self.state.snapshot()

    @property
    def done(self) -> bool:
        """The rounds are over and nothing of the run is still being computed (baselines included)."""
        return self.result is not None and not (self.baselines_thread is not None
                                                and self.baselines_thread.is_alive())

    def start_rounds_now(self) -> None:
        """Hosted runs: begin with the clients already here (at least min_clients)."""
        self.server.start_now.set()

    def stop(self) -> None:
        """Graceful: the round in flight is abandoned, clients get bye, sockets close."""
        self.server.stop()
        self.client_stop.set()

    def wait(self, timeout: float | None = None) -> RunResult | None:
        """Block until the run ends (or the timeout passes); returns the result or None."""
        deadline = None if timeout is None else time.monotonic() + timeout
        extra = [self.baselines_thread] if self.baselines_thread is not None else []
        for thread in self.threads + extra:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(remaining)
        return self.result


def event_sink(state: RunState, writer: RunWriter | None,
               extra: Callable[[dict], None] | None = None) -> Callable[[dict], None]:
    """One callback that feeds the live state, the run store and an optional listener."""

    def sink(event: dict) -> None:
        state.apply(event)
        if writer is not None:
            writer.on_event(event)
        if extra is not None:
            extra(event)

    return sink


def launch_rounds(handle: RunHandle, server_data: ServerData | None) -> None:
    """Start the thread that drives the rounds and records the result."""

    def drive() -> None:
        result = RoundRunner(handle.server, handle.config, server_data).run()
        handle.client_stop.set()  # clients still here leave; baselines of a stopped run give up
        if handle.baselines_thread is not None:
            handle.baselines_thread.join()  # summary.json of a finished run always has them
        if handle.writer is not None:
            handle.writer.finish(result.status, model=result.model, error=result.error,
                                 extra={"baselines": handle.state.baselines})
        handle.result = result

    driver = threading.Thread(target=drive, name=f"fl-run-{handle.run_id}", daemon=True)
    driver.start()
    handle.threads.insert(0, driver)
