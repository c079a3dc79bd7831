"""The run store: every run's config, metrics, client numbers, events and model.

Layout of one run directory (``runs/<run_id>/`` in the store, or any ``--out``
directory):

    config.json    the RunConfig
    summary.json   status, dates, final metrics (written at start and at end)
    metrics.csv    one row per round
    clients.csv    one row per client per round
    events.jsonl   every event, one JSON object per line
    model.joblib   the final global model (joblib: our own local files only;
                   never used for anything that came from the network)
    best_model.joblib  the global model of the round that scored best (summary.json:
                   best_round, best_selected_on, best_score, best_metrics)
    weights.npz, weights.csv  every round's global parameters and per-layer statistics
                   (with --archive-weights)

Files are appended as events arrive, so a crash loses at most the last line.
"""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import pandas as pd

METRICS_COLUMNS = ("round", "accuracy", "loss", "f1_macro", "worst_client_accuracy", "client_accuracy_p10",
                   "client_accuracy_median", "client_accuracy_p90", "client_accuracy_std",
                   "n_fit_clients", "n_failures", "n_stragglers", "duration_s", "bytes_sent", "bytes_received",
                   "epsilon", "learning_rate")
# eval_*: the global model of that round scored by the client on its own data;
# epoch_losses .. reported_update_norm: the client's own account (fit_result metadata, ";"-separated losses);
# update_norm .. flagged: the server's scrutiny of the update it received (fl/federation/scrutiny.py)
CLIENTS_COLUMNS = ("round", "client_id", "n_samples", "status", "reason", "train_time_s", "train_loss",
                   "train_accuracy", "eval_accuracy", "eval_loss", "bytes_sent", "bytes_received",
                   "epoch_losses", "converged", "samples_used", "reported_update_norm",
                   "update_norm", "update_cosine", "update_z", "flagged")
RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,80}$")


def new_run_id() -> str:
    """Sortable by time, unique enough for one machine."""
    import secrets

    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def _json_default(value: Any) -> Any:
    """numpy scalars and arrays in side files; NaN stays JSON-valid as null upstream."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _cell(value: Any) -> Any:
    """A CSV cell: empty for None or a non-finite number, a list as its items joined by ";"."""
    if isinstance(value, (list, tuple)):
        return ";".join("" if _clean(v) is None else f"{v:.6g}" if isinstance(v, float) else str(v) for v in value)
    return "" if _clean(value) is None else value


class RunWriter:
    """Writes one run directory as events arrive; thread-safe."""

    def __init__(self, directory: str | Path, config: dict[str, Any], run_id: str):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.run_id = run_id
        self._lock = threading.Lock()
        self.summary: dict[str, Any] = {"run_id": run_id, "status": "running", "started_at": time.time(),
                                        "finished_at": None, "final_metrics": {}, "rounds_done": 0,
                                        "baselines": None}
        (self.dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True, default=str))
        for name, columns in (("metrics.csv", METRICS_COLUMNS), ("clients.csv", CLIENTS_COLUMNS)):
            with open(self.dir / name, "w", newline="") as fh:
                csv.writer(fh).writerow(columns)
        (self.dir / "events.jsonl").write_text("")
        self._write_summary()

    def _write_summary(self) -> None:
        tmp = self.dir / "summary.json.tmp"
        tmp.write_text(json.dumps(self.summary, indent=2, default=str))
        tmp.replace(self.dir / "summary.json")

    def _append_row(self, name: str, columns: tuple[str, ...], event: dict) -> None:
        with open(self.dir / name, "a", newline="") as fh:
            csv.writer(fh).writerow([_cell(event.get(c)) for c in columns])

    def on_event(self, event: dict) -> None:
        """Feed every server event here."""
        with self._lock:
            with open(self.dir / "events.jsonl", "a") as fh:
                fh.write(json.dumps({k: _clean(v) for k, v in event.items()}, default=str) + "\n")
            kind = event.get("type")
            if kind == "round":
                self._append_row("metrics.csv", METRICS_COLUMNS, event)
                self.summary["rounds_done"] = event.get("round")
                self.summary["final_metrics"] = {k: _clean(event.get(k)) for k in ("accuracy", "loss", "f1_macro")}
                self._write_summary()
            elif kind == "client_result":
                self._append_row("clients.csv", CLIENTS_COLUMNS, event)

    def save_json(self, name: str, data: Any) -> None:
        """A side file of the run (e.g. baselines.json, partition.json)."""
        with self._lock:
            (self.dir / name).write_text(json.dumps(data, indent=2, default=_json_default))

    def update_summary(self, **fields: Any) -> None:
        """Add fields to summary.json (e.g. baselines that arrive after the rounds)."""
        with self._lock:
            self.summary.update(fields)
            self._write_summary()

    def finish(self, status: str, model: Any = None, error: str | None = None, extra: dict | None = None,
               best: Any = None) -> None:
        """Record the end of the run; save the final model and the best round's (``best``: a BestRound)."""
        with self._lock:
            if model is not None:
                joblib.dump(model, self.dir / "model.joblib")
            if best is not None:
                joblib.dump(best.model, self.dir / "best_model.joblib")
                self.summary.update(best_round=best.round, best_selected_on=best.selected_on,
                                    best_score=_clean(best.score),
                                    best_metrics={k: _clean(v) for k, v in best.metrics.items()})
            self.summary.update(status=status, finished_at=time.time(), error=error, **(extra or {}))
            self._write_summary()


@dataclass
class StoredRun:
    run_id: str
    path: Path
    config: dict[str, Any]
    summary: dict[str, Any]

    def metrics(self) -> pd.DataFrame:
        return _read_csv(self.path / "metrics.csv", METRICS_COLUMNS)

    def clients(self) -> pd.DataFrame:
        return _read_csv(self.path / "clients.csv", CLIENTS_COLUMNS)

    def events(self) -> list[dict]:
        out = []
        path = self.path / "events.jsonl"
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a torn last line after a crash
        return out

    @property
    def model_path(self) -> Path | None:
        """The final model (joblib, our own file: load it with joblib.load yourself, never a file from a peer)."""
        path = self.path / "model.joblib"
        return path if path.exists() else None

    @property
    def best_model_path(self) -> Path | None:
        """The global model of the best round (``summary["best_round"]``), beside the final one."""
        path = self.path / "best_model.joblib"
        return path if path.exists() else None


def _read_csv(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    if not path.exists():
        return pd.DataFrame(columns=list(columns))
    return pd.read_csv(path)


class RunStore:
    """All runs under one root directory (default ``runs/``)."""

    def __init__(self, root: str | Path = "runs"):
        self.root = Path(root)

    def create(self, run_id: str, config: dict[str, Any]) -> RunWriter:
        self._check_id(run_id)
        return RunWriter(self.root / run_id, config, run_id)

    def _check_id(self, run_id: str) -> None:
        if not RUN_ID_PATTERN.match(run_id):
            raise ValueError(f"invalid run id {run_id!r}")

    def list(self) -> list[StoredRun]:
        """Every readable run, newest first; unreadable directories are skipped."""
        if not self.root.exists():
            return []
        runs = []
        for path in self.root.iterdir():
            try:
                runs.append(self.load(path.name))
            except (FileNotFoundError, ValueError, json.JSONDecodeError, NotADirectoryError):
                continue
        return sorted(runs, key=lambda r: r.summary.get("started_at") or 0, reverse=True)

    def load(self, run_id: str) -> StoredRun:
        self._check_id(run_id)
        path = self.root / run_id
        config = json.loads((path / "config.json").read_text())
        summary_path = path / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.exists() else {"run_id": run_id}
        return StoredRun(run_id, path, config, summary)

    def delete(self, run_id: str) -> None:
        self._check_id(run_id)
        path = self.root / run_id
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"no run {run_id!r} in {self.root}")
        shutil.rmtree(path)
