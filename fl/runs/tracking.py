"""MLflow tracking of a run: params, per-round metrics, final numbers and the run's files.

A ``MlflowTracker`` listens to a run's events (``open_run`` feeds it every
one) and does every MLflow call on one background thread of its own, fed by
a bounded queue: the round loop only ever puts an event on the queue and
never waits for MLflow. If MLflow is down or too slow, events are dropped and
the run gets one ``error`` event saying so (the rounds go on); ``close`` waits
a bounded time for the last calls. MLflow is imported only when tracking is
on; ``problem`` says, before any thread starts, when it cannot be (not
installed). The local store (``--mlflow`` alone) is MLflow's file store in
``./mlruns``: the only local store ``mlflow-skinny`` writes without
SQLAlchemy (MLflow 3.13+ wants ``MLFLOW_ALLOW_FILE_STORE=true`` for it, set
here unless the environment says otherwise).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import queue
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

LOCAL_STORE = "./mlruns"  # what --mlflow alone (and the dashboard's empty URI) means
EXPERIMENT = "fl-workbench"  # unless MLFLOW_EXPERIMENT_NAME says otherwise
QUEUE_SIZE = 1000  # round events waiting for MLflow; beyond it they are dropped
CLOSE_TIMEOUT_S = 30.0  # how long the end of a run waits for the last MLflow calls
ARTIFACTS = ("config.json", "summary.json", "metrics.csv", "clients.csv", "baselines.json", "weights.csv",
             "model.joblib", "best_model.joblib")  # those of the run directory that exist at its end
MAX_VALUE_CHARS = 500  # a param's value (older MLflow servers take no more)
PARAMS_PER_BATCH, METRICS_PER_BATCH = 100, 1000  # MLflow's log_batch limits
DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
STATUSES = {"completed": "FINISHED", "stopped": "KILLED", "failed": "FAILED"}
# MLflow's own defaults retry an unreachable server for minutes; a side channel gives up sooner
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}

log = logging.getLogger(__name__)


def problem(uri: str) -> str | None:
    """Why tracking to ``uri`` cannot start (one sentence that says what to do), or None; imports nothing."""
    if not uri:
        return None
    if importlib.util.find_spec("mlflow") is None:
        return "MLflow tracking needs the mlflow package: pip install mlflow-skinny (or turn tracking off)"
    scheme = urlparse(uri.strip()).scheme.split("+")[0]
    if scheme in DATABASE_SCHEMES and importlib.util.find_spec("sqlalchemy") is None:
        return (f"a {scheme} tracking store needs the full MLflow (pip install mlflow); mlflow-skinny logs to a "
                "tracking server (http://...) or a local folder (file:... or a path)")
    return None


def resolve_uri(uri: str) -> str:
    """A path (``./mlruns``, ``~/runs``) becomes an absolute ``file:`` URI; URIs with a scheme stay as given."""
    uri = uri.strip() or LOCAL_STORE
    scheme = urlparse(uri).scheme
    if not scheme or len(scheme) == 1:  # no scheme, or a Windows drive letter
        return Path(uri).expanduser().resolve().as_uri()
    return uri


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """A run config as MLflow params: nested dicts as dotted keys, values as text of at most 500 chars."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            out[name] = text[:MAX_VALUE_CHARS]
    return out


def numbers(record: dict[str, Any], prefix: str = "", skip: tuple[str, ...] = ()) -> dict[str, float]:
    """The finite numbers of a record (an event, final metrics, a baseline), as metric name -> value."""
    return {f"{prefix}{k}": float(v) for k, v in record.items()
            if k not in skip and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def _client(uri: str) -> Any:
    """An MlflowClient for ``uri`` (imports MLflow: call it on the tracker's thread only)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # a workbench does not report usage unasked
    if uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    if uri.startswith(("http:", "https:")):
        for name, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(name, value)
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


class MlflowTracker:
    """One run's MLflow run, written from a background thread; never raises into the run."""

    def __init__(self, uri: str, run_id: str, config: dict[str, Any], kind: str,
                 experiment: str | None = None, queue_size: int | None = None):
        self.uri = resolve_uri(uri)
        self.run_id = run_id
        self.config = config
        self.kind = kind
        self.experiment = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT
        self.mlflow_run_id: str | None = None
        self.failed = False
        self.dropped = 0
        self._queue: queue.Queue[dict] = queue.Queue(maxsize=queue_size or QUEUE_SIZE)
        self._closing = threading.Event()
        self._abandon = threading.Event()
        self._ending: dict[str, Any] = {}
        self._warn: Callable[[str], None] = log.warning
        self._client: Any = None
        self._step = 0  # the last round logged
        self._thread = threading.Thread(target=self._work, name=f"fl-mlflow-{run_id}", daemon=True)

    # ------------------------------------------------------------------ the run's side: never blocks
    def start(self, warn: Callable[[str], None] | None = None) -> None:
        """Begin logging; ``warn`` gets one sentence if tracking stops (default: a log line)."""
        if warn is not None:
            self._warn = warn
        self._thread.start()

    def on_event(self, event: dict) -> None:
        """Every event of the run; round and done events are queued for MLflow, the rest ignored."""
        if event.get("type") not in ("round", "done") or self.failed or self._closing.is_set():
            return
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1:
                self._say(f"MLflow is too slow for this run ({self.uri}); round metrics it cannot take are "
                          "dropped, the run goes on")

    def close(self, status: str, run_dir: str | Path | None = None, model: Any = None,
              baselines: dict | None = None, timeout: float | None = None) -> bool:
        """End the MLflow run once the run's files are written: artifacts, baselines, status.

        Waits at most ``timeout`` seconds (CLOSE_TIMEOUT_S); returns whether
        MLflow took everything in time. The thread ends after its call in
        flight when the wait runs out.
        """
        self._ending = {"status": str(status), "run_dir": run_dir, "model": model, "baselines": baselines}
        self._closing.set()
        if not self._thread.is_alive():
            return not self.failed
        timeout = CLOSE_TIMEOUT_S if timeout is None else timeout
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._abandon.set()
            self._say(f"MLflow did not finish logging this run within {timeout:g} s ({self.uri}); what it has not "
                      "taken yet is dropped")
            return False
        return not self.failed

    def _say(self, message: str) -> None:
        try:
            self._warn(message)
        except Exception:  # a warning must never break the run either
            log.warning(message)

    # ------------------------------------------------------------------ the tracker's thread
    def _work(self) -> None:
        try:
            self._open()
            while not self._abandon.is_set():
                batch = self._take()
                if batch:
                    self._log_events(batch)
                elif self._closing.is_set():
                    self._finish()
                    return
        except Exception as exc:  # MLflow down, refused, misconfigured: the run goes on without it
            self.failed = True
            if not self._abandon.is_set():
                said = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                said = said if len(said) <= 200 else said[:200] + "..."
                self._say(f"MLflow tracking stopped ({self.uri}): {type(exc).__name__}: {said}; "
                          "the run goes on without it")

    def _take(self) -> list[dict]:
        """The events waiting (at least one, unless 0.1 s pass), so that MLflow gets few, larger batches."""
        try:
            batch = [self._queue.get(timeout=0.1)]
        except queue.Empty:
            return []
        while len(batch) < 100:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _open(self) -> None:
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException

        self._client = client = _client(self.uri)
        experiment = client.get_experiment_by_name(self.experiment)
        if experiment is None:
            try:
                experiment_id = client.create_experiment(self.experiment)
            except MlflowException:  # made by another run in the meantime
                experiment_id = client.get_experiment_by_name(self.experiment).experiment_id
        else:
            experiment_id = experiment.experiment_id
        tags = {"fl.run_id": self.run_id, "fl.kind": self.kind, **{f"fl.{k}": str(self.config.get(k))
                                                                   for k in ("dataset", "model", "aggregation")}}
        run = client.create_run(experiment_id, run_name=self.run_id, tags=tags)
        self.mlflow_run_id = run.info.run_id
        params = [Param(k, v) for k, v in flatten(self.config).items()]
        for i in range(0, len(params), PARAMS_PER_BATCH):
            client.log_batch(self.mlflow_run_id, params=params[i:i + PARAMS_PER_BATCH])

    def _log_metrics(self, rows: list[tuple[str, float, float, int]]) -> None:
        """(name, value, time in s, step) rows, in batches MLflow takes."""
        from mlflow.entities import Metric

        metrics = [Metric(name, value, int(t * 1000), step) for name, value, t, step in rows]
        for i in range(0, len(metrics), METRICS_PER_BATCH):
            self._client.log_batch(self.mlflow_run_id, metrics=metrics[i:i + METRICS_PER_BATCH])

    def _log_events(self, events: list[dict]) -> None:
        rows: list[tuple[str, float, float, int]] = []
        for event in events:
            t = event.get("t") or time.time()
            if event.get("type") == "round":
                self._step = int(event.get("round") or 0)
                rows += [(k, v, t, self._step) for k, v in numbers(event, skip=("round", "t")).items()]
            else:  # done: the final numbers, at the last round
                final = numbers(event.get("final_metrics") or {}, "final_")
                rows += [(k, v, t, self._step) for k, v in final.items()]
        if rows:
            self._log_metrics(rows)

    def _finish(self) -> None:
        """Baselines, best-round numbers, the run's files, and the status."""
        from mlflow.entities import RunTag

        ending, now = self._ending, time.time()
        rows: list[tuple[str, float, float, int]] = []
        for name, values in (ending.get("baselines") or {}).items():
            if isinstance(values, dict):
                rows += [(k, v, now, 0) for k, v in numbers(values, f"baseline_{name}_", skip=("class",)).items()]
        run_dir = Path(ending["run_dir"]) if ending.get("run_dir") else None
        summary = _read_json(run_dir / "summary.json") if run_dir else {}
        rows += [(k, v, now, 0) for k, v in numbers(summary).items() if k.startswith("best_")]
        rows += [(k, v, now, 0) for k, v in numbers(summary.get("best_metrics") or {}, "best_").items()]
        if rows:
            self._log_metrics(rows)
        self._log_files(run_dir, ending.get("model"))
        if self._abandon.is_set():
            return
        self._client.log_batch(self.mlflow_run_id, tags=[RunTag("fl.status", ending["status"])])
        self._client.set_terminated(self.mlflow_run_id, STATUSES.get(ending["status"], "FINISHED"))

    def _log_files(self, run_dir: Path | None, model: Any) -> None:
        """The run directory's files; with no directory (simulate without --out), the config and final model."""
        if run_dir is not None:
            for name in ARTIFACTS:
                if (run_dir / name).is_file() and not self._abandon.is_set():
                    self._client.log_artifact(self.mlflow_run_id, str(run_dir / name))
            return
        with tempfile.TemporaryDirectory(prefix="fl-mlflow-") as tmp:
            (Path(tmp) / "config.json").write_text(json.dumps(self.config, indent=2, sort_keys=True, default=str))
            if model is not None:
                import joblib

                joblib.dump(model, Path(tmp) / "model.joblib")
            for path in sorted(Path(tmp).iterdir()):
                self._client.log_artifact(self.mlflow_run_id, str(path))


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def open_tracker(config: Any, run_id: str, kind: str) -> MlflowTracker | None:
    """The run's tracker when its config asks for one (``mlflow_uri``), not started yet; None otherwise."""
    uri = getattr(config, "mlflow_uri", "")
    if not uri:
        return None
    return MlflowTracker(uri, run_id, config.to_dict(), kind)
