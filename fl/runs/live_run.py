"""A run's live state and its handle, shared by simulated and hosted runs.

RunState is fed by events from any thread (server, clients, baselines) and
hands out cheap, consistent snapshots, so a page can read it while workers
write. ``open_run`` and ``launch_rounds`` are the wiring every run shares:
state, run store, server, handle, the thread that drives the rounds.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from fl.data import FederatedData
from fl.federation.checkpoint import Checkpoint, CheckpointError
from fl.federation.events import ClientStatus, EventType, RunStatus, make_event
from fl.federation.rounds import RoundRunner, RunResult
from fl.federation.secure_sum import SECAGG_FEATURE
from fl.federation.server import FederatedServer, ServerSettings
from fl.federation.summary_exchange import TaskBuilder
from fl.federation.task import Task
from fl.runs.build import RunPlan
from fl.runs.archive import WeightsArchive
from fl.runs.config import ConfigError, RunConfig
from fl.runs.control import RunWatcher, mark_live
from fl.runs.store import RunStore, RunWriter, new_run_id
from fl.runs.tracking import MlflowTracker, open_tracker

MAX_EVENTS_KEPT = 2000
MAX_CONFUSION_CELLS = 2_000_000  # clients' confusion counts kept for the page; older rounds go first


class RunState:
    """The live state of one run, fed by events from any thread."""

    def __init__(self, run_id: str, config: RunConfig, client_ids: list[str], n_samples: dict[str, int]):
        self._lock = threading.Lock()
        self._ended_round = threading.Condition(self._lock)  # a round recorded, or the run over
        self.run_id = run_id
        self.config = config
        self.status = RunStatus.STARTING
        self.started_at = time.time()
        self.finished_at: float | None = None
        self.rounds_started_at: float | None = None
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
        self.clients: dict[str, dict] = {cid: self._new_client(cid, n_samples.get(cid)) for cid in client_ids}
        self.joined: set[str] = set()  # every client that joined at some point: those that took part
        self._handlers: dict[str, Callable[[dict, dict | None], None]] = {
            EventType.LISTENING: self._on_listening, EventType.JOIN: self._on_join, EventType.LEAVE: self._on_leave,
            EventType.ROUND_START: self._on_round_start, EventType.CLIENT_STATUS: self._on_client_status,
            EventType.CLIENT_RESULT: self._on_client_result, EventType.FAILURE: self._on_failure,
            EventType.ROUND: self._on_round, EventType.ERROR: self._on_error, EventType.DONE: self._on_done,
            EventType.DATA_REPORT: self._on_data_report,
        }
        self.data_report: dict | None = None  # rows and classes per site, columns used or dropped (data_report.json)
        # round -> client id -> its confusion counts of that round's global model (bounded: MAX_CONFUSION_CELLS)
        self.client_confusion: dict[int, dict[str, list]] = {}
        self._confusion_cells = 0

    @staticmethod
    def _new_client(cid: str, n_samples: int | None = None) -> dict:
        return {"client_id": cid, "status": ClientStatus.WAITING, "n_samples": n_samples, "rounds_trained": 0,
                "failures": 0, "bytes_sent": 0, "bytes_received": 0, "last_accuracy": None, "last_loss": None,
                "flagged_rounds": 0, "converged": None}

    def apply(self, event: dict) -> None:
        """Fold one event into the state. Events are kept as they are (never mutated afterwards)."""
        with self._lock:
            self.events.append(event)
            if len(self.events) > MAX_EVENTS_KEPT:
                del self.events[: len(self.events) - MAX_EVENTS_KEPT]
            cid = event.get("client_id")
            client = self.clients.setdefault(cid, self._new_client(cid)) if cid else None
            handler = self._handlers.get(event.get("type"))  # type: ignore[arg-type]
            if handler is not None:
                handler(event, client)

    # ------------------------------------------------------------------ one handler per event type
    def _on_listening(self, event: dict, client: dict | None) -> None:
        self.address = (event["host"], event["port"])
        self.status = RunStatus.WAITING

    def _on_join(self, event: dict, client: dict | None) -> None:
        if client is not None:
            self.joined.add(client["client_id"])
            client.update(status=ClientStatus.CONNECTED, n_samples=event.get("n_samples"), reason=None)
            if event.get("n_classes") is not None:  # from its data summary: a site may hold a single class
                client["n_classes"] = event["n_classes"]

    def _on_leave(self, event: dict, client: dict | None) -> None:
        if client is not None:
            client.update(status=ClientStatus.GONE, reason=event.get("reason"))

    def _on_round_start(self, event: dict, client: dict | None) -> None:
        self.status = RunStatus.RUNNING
        self.current_round = event["round"]
        if self.rounds_started_at is None:  # the rounds' own time starts here (a hosted run waits for clients first)
            self.rounds_started_at = event.get("t") or time.time()

    def _on_client_status(self, event: dict, client: dict | None) -> None:
        for cid in event.get("clients", []):
            if cid in self.clients and self.clients[cid]["status"] != ClientStatus.GONE:
                self.clients[cid]["status"] = ClientStatus(event.get("status"))

    def _on_client_result(self, event: dict, client: dict | None) -> None:
        if client is None:
            return
        if event.get("eval_confusion") is not None:  # kept apart, bounded: the rows stay small
            self._keep_confusion(event["round"], event["client_id"], event["eval_confusion"])
            event = {k: v for k, v in event.items() if k != "eval_confusion"}
        self.client_rows.append(event)
        client.update(bytes_sent=event.get("bytes_sent"), bytes_received=event.get("bytes_received"))
        if event.get("status") == "ok":
            client.update(last_accuracy=event.get("train_accuracy"), last_loss=event.get("train_loss"))
            client["rounds_trained"] = client.get("rounds_trained", 0) + 1
        if event.get("eval_accuracy") is not None:
            client["eval_accuracy"] = event.get("eval_accuracy")
        if event.get("converged") is not None:
            client["converged"] = event.get("converged")
        if event.get("flagged"):
            client["flagged_rounds"] = client.get("flagged_rounds", 0) + 1

    def _keep_confusion(self, round_no: int, client_id: str, counts: list) -> None:
        self.client_confusion.setdefault(round_no, {})[client_id] = counts
        self._confusion_cells += len(counts) ** 2
        while self._confusion_cells > MAX_CONFUSION_CELLS and len(self.client_confusion) > 1:
            oldest = self.client_confusion.pop(min(self.client_confusion))
            self._confusion_cells -= sum(len(c) ** 2 for c in oldest.values())

    def _on_failure(self, event: dict, client: dict | None) -> None:
        if client is not None:
            client["failures"] = client.get("failures", 0) + 1

    def _on_data_report(self, event: dict, client: dict | None) -> None:
        self.data_report = event.get("report")
        self.n_classes = len((self.data_report or {}).get("classes") or []) or self.n_classes
        for site in (self.data_report or {}).get("sites") or []:  # each client's classes, as the report says
            known = self.clients.get(str(site.get("client_id")))
            if known is not None and site.get("n_classes") is not None:
                known["n_classes"] = site["n_classes"]

    def _on_round(self, event: dict, client: dict | None) -> None:
        self.rounds.append(event)
        self._ended_round.notify_all()

    def _on_error(self, event: dict, client: dict | None) -> None:
        self.error = event.get("message")

    def _on_done(self, event: dict, client: dict | None) -> None:
        self.status = RunStatus(event.get("status", RunStatus.COMPLETED))
        self.error = event.get("error") or self.error
        self.final_metrics = event.get("final_metrics") or {}
        self.finished_at = time.time()
        self._ended_round.notify_all()
        for c in self.clients.values():
            if c.get("status") not in (ClientStatus.GONE, ClientStatus.WAITING):
                c["status"] = ClientStatus.FINISHED  # left after bye; "gone" means lost mid-run, "waiting" never came

    def wait_for_rounds(self, count: int, timeout: float) -> bool:
        """Wait until ``count`` rounds are recorded or the run is over, at most ``timeout`` seconds (a page
        draws round 1 the moment it ends with this, not at its next poll); False if the time ran out."""
        with self._ended_round:
            return self._ended_round.wait_for(lambda: len(self.rounds) >= count or self.finished_at is not None,
                                              max(0.0, timeout))

    # ------------------------------------------------------------------ set from outside the event stream
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

    def snapshot(self, client_rows: bool = True) -> dict[str, Any]:
        """A consistent copy, cheap enough to take every second.

        Event dicts are never mutated once applied, so the lists are copied
        shallowly; only the per-client dicts, which change, are copied.
        ``client_rows=False`` leaves out the clients x rounds rows (a page
        drawing a thousand clients as a band reads the round records).
        """
        with self._lock:
            return {
                "run_id": self.run_id, "config": self.config.to_dict(), "status": self.status,
                "started_at": self.started_at, "finished_at": self.finished_at, "error": self.error,
                "rounds_started_at": self.rounds_started_at,
                "address": self.address, "round": self.current_round, "total_rounds": self.total_rounds,
                "rounds": list(self.rounds), "clients": {cid: dict(c) for cid, c in self.clients.items()},
                "client_rows": list(self.client_rows) if client_rows else [], "events": list(self.events),
                "final_metrics": dict(self.final_metrics),
                "baselines": self.baselines, "baselines_status": self.baselines_status, "kind": self.kind,
                "n_classes": self.n_classes, "data_report": self.data_report, "clients_joined": len(self.joined),
                "client_confusion": {r: dict(m) for r, m in self.client_confusion.items()} if client_rows else {},
            }


@dataclass
class RunHandle:
    """What ``start`` and ``host`` return: live state, stop, wait, and the final result."""

    run_id: str
    plan: RunPlan
    state: RunState
    server: FederatedServer
    kind: str = "simulation"  # simulation | hosted
    threads: list[threading.Thread] = field(default_factory=list)
    client_stop: threading.Event = field(default_factory=threading.Event)
    result: RunResult | None = None
    writer: RunWriter | None = None
    baselines_thread: threading.Thread | None = None
    tracker: MlflowTracker | None = None  # MLflow, when the config asks for it (fl/runs/tracking.py)
    resume: Checkpoint | None = None  # the checkpoint this run continues from
    on_end: list[Callable[[], None]] = field(default_factory=list)  # run once the run has ended, however it ended
    watcher: RunWatcher | None = None  # heartbeat and stop requests of other processes (fl/runs/control.py)

    @property
    def config(self) -> RunConfig:
        return self.plan.config

    @property
    def data(self) -> FederatedData | None:
        """The run's whole split (a simulation's partitions); None when the clients' data is theirs."""
        return self.plan.data if self.kind == "simulation" else None

    def snapshot(self, client_rows: bool = True) -> dict[str, Any]:
        return self.state.snapshot(client_rows)

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

    def wait_until_done(self, timeout: float) -> bool:
        """Until ``done`` (rounds and baselines over), at most ``timeout`` seconds: what a page waits for after
        Stop. The run's worker processes may still be ending then (a second or a few, while they start up);
        ``wait`` joins them."""
        deadline = time.monotonic() + timeout
        while not self.done and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.done

    def wait(self, timeout: float | None = None) -> RunResult | None:
        """Block until the run ends (or the timeout passes); returns the result or None."""
        deadline = None if timeout is None else time.monotonic() + timeout
        extra = [self.baselines_thread] if self.baselines_thread is not None else []
        for thread in self.threads + extra:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(remaining)
        return self.result


def open_run(plan: RunPlan, settings: ServerSettings, *, kind: str, store: RunStore | None = None,
             out_dir: str | None = None, run_id: str | None = None,
             on_event: Callable[[dict], None] | None = None, client_ids: list[str] | None = None,
             n_samples: dict[str, int] | None = None, resume: Checkpoint | None = None) -> RunHandle:
    """State, server (bound), run directory and handle: the wiring every run shares.

    The run directory is made only once the port is bound (a port in use
    leaves no empty run behind); the events before it are replayed into it.
    ``resume``: continue that checkpoint's run in its directory (same run id).
    Raises OSError when the server cannot bind, CheckpointError when the
    checkpoint does not fit this run's task.
    """
    if plan.config.archive_weights and out_dir is None and store is None:
        raise ConfigError("archive_weights keeps every round's weights in the run's directory: add --out DIR")
    if resume is not None and plan.summaries is not None:  # the sites' task was built before the crash: keep it
        plan.task, plan.summaries = Task.from_dict(resume.task), None
    if resume is not None:
        problem = resume.task_problem(plan.task.to_dict())
        if problem:
            raise CheckpointError(problem)
    run_id = run_id or new_run_id()
    state = RunState(run_id, plan.config, client_ids or [], n_samples or {})
    state.kind = kind
    state.n_classes = len(plan.task.classes)
    for record in resume.rounds if resume is not None else []:
        state.apply(make_event(EventType.ROUND, **record))  # the rounds before the crash, shown again
    early: list[dict] = []
    writer: RunWriter | None = None
    tracker = open_tracker(plan.config, run_id, kind)  # its thread starts once the server is bound

    def sink(event: dict) -> None:
        state.apply(event)
        if writer is None:
            early.append(event)
        else:
            writer.on_event(event)
        if tracker is not None:
            tracker.on_event(event)  # only queues: MLflow never slows the rounds
        if on_event is not None:
            on_event(event)

    builder = TaskBuilder(plan.summaries, plan.task) if plan.summaries is not None else None
    if plan.config.secagg and SECAGG_FEATURE not in settings.required_features:  # a client must speak it to join
        settings = dataclasses.replace(settings, required_features=(*settings.required_features, SECAGG_FEATURE))
    server = FederatedServer(plan.task, settings, on_event=sink, run_id=run_id, builder=builder)
    server.bind()
    if out_dir is not None or store is not None:
        writer = RunWriter(out_dir, plan.config.to_dict(), run_id, resume=resume) if out_dir is not None \
            else store.create(run_id, plan.config.to_dict(), resume=resume)
        writer.update_summary(kind=kind)  # a resume knows whether it needs clients of its own (simulation)
        mark_live(writer.dir, run_id)  # other processes see it live (and may ask it to stop) from now on
        for event in early:
            writer.on_event(event)
    if tracker is not None:
        tracker.start(warn=lambda message: sink(make_event(EventType.ERROR, message=message)))
    if resume is not None:
        sink(make_event(EventType.RESUMED, round=resume.round))
    return RunHandle(run_id, plan, state, server, kind=kind, writer=writer, tracker=tracker, resume=resume)


def launch_rounds(handle: RunHandle) -> None:
    """Start the thread that drives the rounds and records the result (after a checkpoint's round, when
    the handle resumes one); every round leaves a checkpoint in the run's directory."""
    runner = RoundRunner(handle.server, handle.plan.settings, handle.plan.strategy(), handle.plan.server_data)
    if handle.resume is not None:
        runner.restore(handle.resume)
    if handle.writer is not None:
        runner.on_checkpoint = handle.writer.save_checkpoint
    after = handle.resume.round if handle.resume is not None else 0
    archive = WeightsArchive(handle.writer.dir, after) if handle.config.archive_weights and handle.writer else None
    if archive is not None:
        runner.on_global = archive.add

    def drive() -> None:
        result = runner.run()
        if archive is not None:
            archive.close()
        handle.client_stop.set()  # clients still here leave; baselines of a stopped run give up
        if handle.baselines_thread is not None:
            handle.baselines_thread.join()  # summary.json of a finished run always has them
        if handle.writer is not None:
            handle.writer.finish(result.status, model=result.model, error=result.error,
                                 extra={"baselines": handle.state.baselines}, best=result.best)
        if handle.watcher is not None:  # after the end is recorded: never "running" without a live.json
            handle.watcher.close()
        for hook in handle.on_end:  # e.g. deleting a hosted server's TLS keys (fl/runs/tls_dirs.py)
            hook()
        handle.result = result  # after the hooks: a run seen done has cleaned up
        if handle.tracker is not None:  # after the writer: the run directory's files are complete
            handle.tracker.close(result.status, run_dir=handle.writer.dir if handle.writer else None,
                                 model=result.model, baselines=handle.state.baselines)

    driver = threading.Thread(target=drive, name=f"fl-run-{handle.run_id}", daemon=True)
    if handle.writer is not None:  # `python -m fl runs stop ID` from any process of this machine
        handle.watcher = RunWatcher(handle.writer.dir, handle.run_id, handle.stop, running=driver.is_alive)
    driver.start()
    handle.threads.insert(0, driver)
    if handle.watcher is not None:
        handle.watcher.start()
        handle.threads.append(handle.watcher.thread)
