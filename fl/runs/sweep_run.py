"""Running a sweep: its runs in K worker processes at a time, their numbers gathered as they finish.

Each run is an ordinary simulation (fl/runs/simulation.py) inside one worker
process, its clients in that same process (workers=0), written to the
RunStore like any run, with the sweep's id in its summary.json.

The workers are joblib's loky processes, in a pool of the sweep's own
(``joblib.externals.loky.ProcessPoolExecutor``), not joblib's process-wide
reusable one: a dashboard run with worker processes (fl/runs/workers.py)
uses that one, and loky resizes it only once every job in it has ended, and
shutting it down would kill the other run's workers. The sweep's pool is
shut down with its workers killed once every run has ended, so a finished
or stopped sweep leaves no process behind.

Stop reaches the workers through a file (``sweeps/<id>/stop``): a run not
yet started sees it and does not start (cancelled), a running one stops
within its round in progress (stopped), as any run does.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import Future, as_completed
from pathlib import Path
from typing import Any, Callable

from fl.errors import FLError
from fl.runs.store import RunStore, new_run_id
from fl.runs.sweep_spec import SweepRun, SweepSpec
from fl.runs.sweep_stats import audit_outcome, cells_frame, run_outcome, summary_frame
from fl.runs.sweep_store import SweepStore, write_csv, write_json

POLL_SECONDS = 0.2
STOP_GRACE_SECONDS = 60.0
FINISHED = ("completed", "stopped", "failed", "cancelled")
THREAD_LIMITS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def run_in_worker(task: dict[str, Any]) -> dict[str, Any]:
    """A worker process's job: one run of the sweep, unless Stop came first; returns its summary.csv numbers."""
    from fl.runs import simulation
    from fl.runs.config import RunConfig

    stop_file = Path(task["stop_file"])
    if stop_file.exists():
        return {"status": "cancelled", "worker_pid": os.getpid()}
    started = time.monotonic()
    try:
        handle = simulation.start(RunConfig.from_dict(task["config"]), store=RunStore(task["root"]),
                                  run_id=task["run_id"], **task.get("network", {}))
    except (FLError, OSError) as exc:
        return {"status": "failed", "error": str(exc), "worker_pid": os.getpid()}
    assert handle.writer is not None
    handle.writer.update_summary(sweep_id=task["sweep_id"], sweep_cell=task["cell"], sweep_seed=task["seed"])
    stop_asked: float | None = None
    while handle.wait(POLL_SECONDS) is None:
        if stop_asked is None and stop_file.exists():
            handle.stop()
            stop_asked = time.monotonic()
        if stop_asked is not None and time.monotonic() - stop_asked > STOP_GRACE_SECONDS:
            break  # a run that does not end: the pool's shutdown ends the process
    handle.wait(STOP_GRACE_SECONDS)  # its clients leave once the result is in
    result = handle.result
    if result is None:
        return {"status": "stopped", "error": "the run did not end after Stop", "worker_pid": os.getpid()}
    audited = audit_run(handle.writer.dir) if task.get("audit") and str(result.status) == "completed" else {}
    return {"status": str(result.status), "error": result.error, **run_outcome(result.rounds), **audited,
            "duration_s": round(time.monotonic() - started, 3), "worker_pid": os.getpid()}


def audit_run(run_dir: Path) -> dict[str, Any]:
    """The audit's AUCs of one finished run (audit.json written beside it); an audit that fails is said in
    ``audit_error`` and leaves the run completed."""
    from fl.runs.audit import AuditError, run_audit

    try:
        return audit_outcome(run_audit(run_dir))
    except AuditError as exc:
        return {"audit_error": str(exc)}
    except Exception as exc:  # a model the attacks cannot score: the run's numbers stand
        return {"audit_error": f"the audit failed: {type(exc).__name__}: {exc}"}


class SweepHandle:
    """A sweep going on in the background: its rows, its status, stop and wait; thread-safe."""

    def __init__(self, spec: SweepSpec, store: SweepStore, *, parallel: int | None = None,
                 sweep_id: str | None = None, on_result: Callable[[dict, int, int], None] | None = None,
                 network: dict[str, Any] | None = None):
        self.spec = spec
        self.network = {k: v for k, v in (network or {}).items() if v is not None}  # --host, --advertise-host
        self.store = store
        self.sweep_id = sweep_id or new_run_id()
        self.path = store.create(self.sweep_id)
        # On a cluster each run takes the free worker slots its hosts need: one run at a time unless asked
        on_cluster = spec.base.cluster.strip().lower() != "local"
        self.parallel = max(1, min(parallel or (1 if on_cluster else os.cpu_count() or 1), spec.n_runs))
        self.on_result = on_result
        self.status = "running"
        self.error: str | None = None
        self.created_at = time.time()
        self.finished_at: float | None = None
        self.worker_pids: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._futures: list[Future] = []
        self._runs: list[SweepRun] = list(spec.runs())
        self._grid_keys = list(spec.grid)
        self._cells = spec.cells()
        self.rows: list[dict[str, Any]] = [
            {"cell": r.cell_index, "cell_values": r.cell, "seed": r.seed, "run_id": self.run_id(r),
             "status": "pending", "error": None} for r in self._runs]
        self._write_files()
        self._thread = threading.Thread(target=self._drive, name=f"fl-sweep-{self.sweep_id}", daemon=True)
        self._thread.start()

    def run_id(self, run: SweepRun) -> str:
        return f"{self.sweep_id}-{run.index:03d}"

    @property
    def stop_file(self) -> Path:
        return self.path / "stop"

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    # ------------------------------------------------------------------ control
    def stop(self) -> None:
        """Cancel the runs not started yet; the running ones stop within their round (they end as stopped)."""
        with self._lock:
            if self.done or self._stop.is_set():
                return
            self._stop.set()
            self.stop_file.touch()
            for future in self._futures:
                future.cancel()  # only those still queued here; the workers' queue reads the stop file

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the sweep has ended (True) or the timeout passed (False)."""
        self._thread.join(timeout)
        return self.done

    # ------------------------------------------------------------------ reading
    def snapshot(self) -> dict[str, Any]:
        """A copy of the rows, with 'running' for the runs whose directory a worker has made."""
        with self._lock:
            rows = [dict(row) for row in self.rows]
            status, error = self.status, self.error
        if status == "running":
            for row in rows:
                if row["status"] == "pending" and (self.store.root / row["run_id"] / "summary.json").exists():
                    row["status"] = "running"
        finished = sum(row["status"] in FINISHED for row in rows)
        return {"sweep_id": self.sweep_id, "status": status, "error": error, "rows": rows, "n_runs": len(rows),
                "n_finished": finished, "parallel": self.parallel, "grid": self.spec.grid, "seeds": self.spec.seeds}

    # ------------------------------------------------------------------ the sweep's thread
    def _drive(self) -> None:
        from joblib.externals.loky import ProcessPoolExecutor

        threads = str(max(1, (os.cpu_count() or 1) // self.parallel))
        executor = None
        try:
            if not self._stop.is_set():
                executor = ProcessPoolExecutor(max_workers=self.parallel, env={k: threads for k in THREAD_LIMITS})
                # seed-major: every cell gets its first seed before any gets its second
                order = sorted(self._runs, key=lambda r: (r.seed, r.cell_index))
                index_of: dict[Future, int] = {}
                with self._lock:
                    for run in order:
                        future = executor.submit(run_in_worker, self._task(run))
                        index_of[future] = run.index
                        self._futures.append(future)
                        if self._stop.is_set():
                            future.cancel()
                for future in as_completed(index_of):
                    self._record(index_of[future], self._outcome(future))
        except Exception as exc:  # the pool itself broke: say so, never hang the caller
            with self._lock:
                self.error = f"{type(exc).__name__}: {exc}"
        finally:
            if executor is not None:
                executor.shutdown(wait=True, kill_workers=True)
            self._finish()

    def _task(self, run: SweepRun) -> dict[str, Any]:
        return {"config": run.config.to_dict(), "root": str(self.store.root), "run_id": self.run_id(run),
                "sweep_id": self.sweep_id, "cell": run.cell_index, "seed": run.seed,
                "stop_file": str(self.stop_file), "audit": self.spec.audit, "network": self.network}

    @staticmethod
    def _outcome(future: Future) -> dict[str, Any]:
        if future.cancelled():
            return {"status": "cancelled"}
        try:
            return future.result()
        except Exception as exc:  # the worker process died (killed, out of memory) or could not unpickle
            return {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}

    def _record(self, index: int, outcome: dict[str, Any]) -> None:
        pid = outcome.pop("worker_pid", None)
        with self._lock:
            if pid is not None:
                self.worker_pids.add(pid)
            row = self.rows[index]
            row.update(outcome)
            done = sum(r["status"] in FINISHED for r in self.rows)
            shown = dict(row)
        self._write_files()
        if self.on_result is not None:
            self.on_result(shown, done, len(self.rows))

    def _finish(self) -> None:
        with self._lock:
            for row in self.rows:
                if row["status"] == "pending":
                    row["status"] = "cancelled" if self._stop.is_set() else "failed"
            failed = sum(row["status"] == "failed" for row in self.rows)
            if self._stop.is_set():
                self.status = "stopped"
            elif self.error or failed:
                self.status = "failed"
                self.error = self.error or f"{failed} of {len(self.rows)} runs failed"
            else:
                self.status = "completed"
            self.finished_at = time.time()
        self._write_files()

    def _write_files(self) -> None:
        """sweep.json, summary.csv and cells.csv as they stand (called from the sweep's thread only)."""
        with self._lock:
            rows = [dict(row) for row in self.rows]
            meta = {"sweep_id": self.sweep_id, "status": self.status, "error": self.error,
                    "created_at": self.created_at, "finished_at": self.finished_at, "parallel": self.parallel,
                    **self.spec.to_dict(),
                    "runs": [{k: row[k] for k in ("run_id", "cell", "cell_values", "seed", "status")}
                             for row in rows]}
        write_csv(self.path / "summary.csv", summary_frame(rows, self._grid_keys, self.spec.audit))
        write_csv(self.path / "cells.csv", cells_frame(rows, self._cells, self._grid_keys, self.spec.audit))
        write_json(self.path / "sweep.json", meta)


def start_sweep(spec: SweepSpec, root: str | Path = "runs", *, parallel: int | None = None,
                sweep_id: str | None = None, on_result: Callable[[dict, int, int], None] | None = None,
                network: dict[str, Any] | None = None) -> SweepHandle:
    """Validate ``spec`` (GridError up front), then run it in the background; returns its handle at once.

    ``on_result(row, n_finished, n_runs)`` is called from the sweep's thread
    as each run ends (the command line prints a line).
    """
    spec.validate()
    return SweepHandle(spec, SweepStore(root), parallel=parallel, sweep_id=sweep_id, on_result=on_result,
                       network=network)


class SweepRegistry:
    """The sweeps of this process by id (the dashboard keeps one, as it keeps one RunRegistry)."""

    def __init__(self, root: str | Path):
        self.store = SweepStore(root)
        self._lock = threading.Lock()
        self._handles: dict[str, SweepHandle] = {}

    def start(self, spec: SweepSpec, parallel: int | None = None) -> SweepHandle:
        handle = start_sweep(spec, self.store.root, parallel=parallel)
        with self._lock:
            self._handles[handle.sweep_id] = handle
        return handle

    def get(self, sweep_id: str | None) -> SweepHandle | None:
        with self._lock:
            return self._handles.get(sweep_id) if sweep_id else None

    def active(self) -> list[SweepHandle]:
        with self._lock:
            return [h for h in self._handles.values() if not h.done]

    def live_run_ids(self) -> set[str]:
        """The run ids of sweeps still going (the Runs page must not call their runs interrupted)."""
        return {row["run_id"] for h in self.active() for row in h.rows}

    def stop_all(self, timeout: float = 60.0) -> None:
        for handle in self.active():
            handle.stop()
        for handle in list(self._handles.values()):
            handle.wait(timeout)
