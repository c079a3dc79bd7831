"""The run store: every run's config, metrics, client numbers, events and model.

Layout of one run directory (``runs/<run_id>/`` in the store, or any ``--out``
directory):

    config.json    the RunConfig
    summary.json   status, dates, final metrics, ε spent with DP (written at start, after each round and at end)
    metrics.csv    one row per round (ε "inf" when DP adds no noise: no privacy)
    clients.csv    one row per client per round
    events.jsonl   every event, one JSON object per line
    model.joblib   the final global model (joblib: our own local files only;
                   never used for anything that came from the network)
    best_model.joblib  the global model of the round that scored best (summary.json:
                   best_round, best_selected_on, best_score, best_metrics)
    weights.npz, weights.csv  every round's global parameters and per-layer statistics
                   (with --archive-weights)
    checkpoint.npz what the server needs to continue after its last finished round
                   (fl/federation/checkpoint.py; no pickle), replaced after every round
    data_report.json  what the run's data is: rows and class balance per site, missing values and
                   columns used or dropped (and why), leak warnings (the ``data_report`` event)
    confusion.csv  per round, the global model's confusion counts: round, true, predicted, count (every
                   cell); the counts accuracy, macro F1 and balanced accuracy of metrics.csv come from
    client_confusion.csv  per round and client, its own held-out rows' counts: round, client_id, true,
                   predicted, count (non-zero cells only: a thousand clients stay small)
    audit.json, audit_roc.csv  a privacy audit of the final model, when one was asked for
                   (``python -m fl audit DIR``, the Run page's Privacy section: fl/runs/audit.py)
    live.json      while the run goes on: the pid and host running it, its mtime a heartbeat
    stop.request   another process asks the live run to stop (``python -m fl runs stop``):
                   both fl/runs/control.py, both removed when the run ends

CSV and event lines are appended in batches: the per-client events of a round
(``BULK_EVENTS``: a result, a join, a status per client; 10,000 of each at
10,000 clients) wait in memory until the next other event (the round's
record, a failure, the end), at most ``FLUSH_S`` or ``MAX_PENDING`` lines, and
are then written with one call per file. A crash loses at most the round in
flight, which a resumed run does again. Config, summary, models and the
checkpoint are written aside and renamed over (fl/runs/files.py), so a crash
never leaves one truncated. summary.json and the checkpoint change every round
and are renamed over at most every REWRITE_S seconds while the run goes on,
and once more when it ends: a rename over an existing file costs 1 to 4 ms
here, as much as a tenth of a 10-client round, and a crashed process resumes
from a checkpoint at most REWRITE_S old, doing those rounds again with the same
numbers. The rewrites skip the fsync (about 10 ms each): the checkpoint is fsynced at most every
CHECKPOINT_SYNC_S seconds and both at the end, so a crash of the machine (not of the process) may lose
that much more. A
resumed run (``RunWriter(..., resume=checkpoint)``) keeps the directory and
rewrites metrics.csv and clients.csv up to the checkpoint's round, so every
round appears exactly once.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import pandas as pd

from fl.federation.checkpoint import Checkpoint, CheckpointError
from fl.runs.files import dump_atomically, sync_file, write_atomically, write_json_atomically
from fl.wire.text import MAX_TEXT, capped

CHECKPOINT_FILE = "checkpoint.npz"
DATA_REPORT_FILE = "data_report.json"

METRICS_COLUMNS = ("round", "accuracy", "loss", "f1_macro", "worst_client_accuracy", "client_accuracy_p10",
                   "client_accuracy_median", "client_accuracy_p90", "client_accuracy_std",
                   "n_fit_clients", "n_failures", "n_stragglers", "duration_s", "bytes_sent", "bytes_received",
                   "epsilon", "learning_rate", "balanced_accuracy")
FINAL_KEYS = ("accuracy", "loss", "f1_macro", "balanced_accuracy")  # summary.json's final_metrics
# eval_*: the global model of that round scored by the client on its own data;
# epoch_losses .. reported_update_norm: the client's own account (fit_result metadata, ";"-separated losses);
# update_norm .. flagged: the server's scrutiny of the update it received (fl/federation/scrutiny.py;
# z_threshold: the z above which it is flagged, for the number of updates it was judged among)
CLIENTS_COLUMNS = ("round", "client_id", "n_samples", "status", "reason", "train_time_s", "train_loss",
                   "train_accuracy", "eval_accuracy", "eval_loss", "bytes_sent", "bytes_received",
                   "epoch_losses", "converged", "samples_used", "reported_update_norm",
                   "update_norm", "update_cosine", "update_z", "z_threshold", "flagged", "eval_f1_macro")
CONFUSION_COLUMNS = ("round", "true", "predicted", "count")
CLIENT_CONFUSION_COLUMNS = ("round", "client_id", "true", "predicted", "count")
CSV_FILES = {"metrics.csv": METRICS_COLUMNS, "clients.csv": CLIENTS_COLUMNS, "confusion.csv": CONFUSION_COLUMNS,
             "client_confusion.csv": CLIENT_CONFUSION_COLUMNS}
RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,80}$")
# A list cell (a client's epoch losses: up to 1,000 local epochs, ~14 KB) is cut at this many characters; a text
# cell at MAX_TEXT (1,000). Either way far below the csv module's field limit (128 KiB), so --resume can read
# back every clients.csv this store writes, whatever a peer sent.
MAX_LIST_CELL = 16_000
CSV_FIELD_LIMIT = 1 << 28  # what the reader accepts: a cell of an older file, written before cells were capped
# Events that come one per client, in bursts: written with the next other event (at least every FLUSH_S seconds or
# MAX_PENDING lines), not one open-write-close per line (175 us an event; 1.75 s a round at 10,000 clients).
BULK_EVENTS = frozenset({"client_result", "join", "client_status"})
FLUSH_S = 1.0
MAX_PENDING = 20_000
CHECKPOINT_SYNC_S = 2.0  # the checkpoint is fsynced at most this often
REWRITE_S = 0.5  # the checkpoint and summary.json of a running run are renamed over at most this often
_ENCODER = json.JSONEncoder(default=str)  # one encoder: json.dumps(default=...) builds a new one per call


def default_root() -> str:
    """Where the runs of this machine are kept: FL_RUNS_DIR, else ``runs`` (the dashboard's store too)."""
    return os.environ.get("FL_RUNS_DIR") or "runs"


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


def _cell(value: Any, column: str = "") -> Any:
    """A CSV cell: empty for None or a non-finite number (but ``inf`` for an infinite ε: no noise, no privacy),
    a list as its items joined by ";" (cut at MAX_LIST_CELL characters), text cut at MAX_TEXT: many cells hold
    what a client sent, and a cell must stay small enough to be read back (``_rows_up_to``, --resume)."""
    if column == "epsilon" and value == math.inf:
        return "inf"
    if isinstance(value, (list, tuple)):
        return _joined(["" if _clean(v) is None else f"{v:.6g}" if isinstance(v, float) else capped(str(v))
                        for v in value])
    if value is None or isinstance(value, (bool, int, float)):
        return "" if _clean(value) is None else value
    return capped(value if isinstance(value, str) else str(value), MAX_TEXT)


def _joined(items: list[str]) -> str:
    """Items joined by ";", as many whole ones as fit in MAX_LIST_CELL characters, then "…" and how many in all."""
    text = ";".join(items)
    if len(text) <= MAX_LIST_CELL:
        return text
    size, kept = 0, 0
    for item in items:
        if size + len(item) + 1 > MAX_LIST_CELL - 40:
            break
        size, kept = size + len(item) + 1, kept + 1
    return ";".join(items[:kept]) + f";… ({len(items):,} values)"


class RunWriter:
    """Writes one run directory as events arrive; thread-safe."""

    def __init__(self, directory: str | Path, config: dict[str, Any], run_id: str,
                 resume: Checkpoint | None = None):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.run_id = run_id
        self._lock = threading.Lock()
        self._client_confusion: list[dict] = []  # this round's client counts, until its round names the classes
        self._joined: set[str] = set()  # the clients that joined: how many took part, whatever the config said
        self._lines: list[str] = []  # events.jsonl lines not yet written (BULK_EVENTS)
        self._client_rows: list[list[Any]] = []  # clients.csv rows not yet written
        self._last_flush = time.monotonic()
        self._checkpoint_synced = -math.inf  # the first checkpoint is fsynced
        self._checkpoint_unsynced = False
        self._checkpoint_written = -math.inf  # the first checkpoint is written at once
        self._checkpoint_pending: bytes | None = None  # the newest checkpoint, when it waits for REWRITE_S
        self._summary_written = -math.inf
        self.summary: dict[str, Any] = {"run_id": run_id, "status": "running", "started_at": time.time(),
                                        "finished_at": None, "final_metrics": {}, "rounds_done": 0,
                                        "baselines": None}
        if resume is not None:
            self._resume(resume)
            return
        write_json_atomically(self.dir / "config.json", config, sort_keys=True)
        for name, columns in CSV_FILES.items():
            with open(self.dir / name, "w", newline="") as fh:
                csv.writer(fh).writerow(columns)
        (self.dir / "events.jsonl").write_text("")
        self._write_summary()

    def _resume(self, ckpt: Checkpoint) -> None:
        """Continue this directory after ``ckpt.round``: metrics.csv is the checkpoint's rounds, clients.csv
        loses the rows of any round after it (that round runs again), events.jsonl goes on."""
        try:
            self.summary.update(json.loads((self.dir / "summary.json").read_text()))
        except (OSError, json.JSONDecodeError):
            pass  # a summary lost with the crash: the one above stands in
        resumed = list(self.summary.get("resumed_after_rounds") or []) + [ckpt.round]
        self.summary.update(status="running", finished_at=None, error=None, rounds_done=ckpt.round,
                            resumed_after_rounds=resumed)
        if ckpt.rounds:
            self.summary["final_metrics"] = {k: _clean(ckpt.rounds[-1].get(k)) for k in FINAL_KEYS}
        write_atomically(self.dir / "metrics.csv", _csv_text(METRICS_COLUMNS, ckpt.rounds))
        for name, columns in CSV_FILES.items():
            if name != "metrics.csv":
                write_atomically(self.dir / name, _csv_text(columns, _rows_up_to(self.dir / name, ckpt.round)))
        self._write_summary()

    def save_checkpoint(self, ckpt: Checkpoint) -> None:
        """Take the checkpoint of the round just finished (called by the round loop after every round), packed
        now; checkpoint.npz is renamed over with it at once when the last rename is REWRITE_S old, else at the
        next round that is, or at the end (``finish``). fsynced at most every CHECKPOINT_SYNC_S seconds (and at
        the end), so a crashed machine loses at most that much more. An fsync is ~10 ms: a tenth of a round
        of 10 clients."""
        data = ckpt.to_bytes()
        with self._lock:
            self._checkpoint_pending = data
            if time.monotonic() - self._checkpoint_written >= REWRITE_S:
                self._write_checkpoint()

    def _write_checkpoint(self, sync: bool = False) -> None:
        data, self._checkpoint_pending = self._checkpoint_pending, None
        if data is None:
            return
        sync = sync or time.monotonic() - self._checkpoint_synced >= CHECKPOINT_SYNC_S
        write_atomically(self.dir / CHECKPOINT_FILE, data, sync=sync)
        self._checkpoint_written = time.monotonic()
        if sync:
            self._checkpoint_synced = self._checkpoint_written
        self._checkpoint_unsynced = not sync

    def _write_summary(self, sync: bool = False) -> None:
        """summary.json, renamed over; fsynced only when the run ends (it changes every round)."""
        write_atomically(self.dir / "summary.json", json.dumps(self.summary, indent=2, default=str), sync=sync)
        self._summary_written = time.monotonic()

    def _append_row(self, name: str, columns: tuple[str, ...], event: dict) -> None:
        with open(self.dir / name, "a", newline="") as fh:
            csv.writer(fh).writerow([_cell(event.get(c), c) for c in columns])

    def _flush(self) -> None:
        """Write the pending event lines and clients.csv rows, one call per file (under the lock)."""
        if self._lines:
            with open(self.dir / "events.jsonl", "a") as fh:
                fh.write("".join(self._lines))
            self._lines = []
        if self._client_rows:
            with open(self.dir / "clients.csv", "a", newline="") as fh:
                csv.writer(fh).writerows(self._client_rows)
            self._client_rows = []
        self._last_flush = time.monotonic()

    def flush(self) -> None:
        """Write whatever per-client events are still pending (``finish`` does it too)."""
        with self._lock:
            self._flush()

    def on_event(self, event: dict) -> None:
        """Feed every server event here."""
        with self._lock:
            kind = event.get("type")
            self._lines.append(_ENCODER.encode({k: _clean(v) for k, v in event.items()}) + "\n")
            if kind == "client_result":
                self._client_rows.append([_cell(event.get(c), c) for c in CLIENTS_COLUMNS])
            if (kind not in BULK_EVENTS or len(self._lines) >= MAX_PENDING
                    or time.monotonic() - self._last_flush >= FLUSH_S):
                self._flush()
            if kind == "join" and event.get("client_id") is not None:  # who took part (summary.json n_clients)
                self._joined.add(event["client_id"])
            if kind == "round":
                self._append_row("metrics.csv", METRICS_COLUMNS, event)
                self._write_confusion(event)
                self.summary["rounds_done"] = event.get("round")
                self.summary["n_clients"] = max(len(self._joined), self.summary.get("n_clients") or 0)
                self.summary["final_metrics"] = {k: _clean(event.get(k)) for k in FINAL_KEYS}
                if event.get("epsilon") is not None:  # privacy spent so far; "inf" without noise (JSON has no inf)
                    self.summary["epsilon"] = "inf" if event["epsilon"] == math.inf else _clean(event["epsilon"])
                if time.monotonic() - self._summary_written >= REWRITE_S:  # else at a later round, or the end
                    self._write_summary()
            elif kind == "client_result":
                if event.get("eval_confusion") is not None:  # written with its round, which names the classes
                    self._client_confusion.append(event)
            elif kind == "data_report":
                write_json_atomically(self.dir / DATA_REPORT_FILE, event.get("report") or {},
                                      default=_json_default)

    def _write_confusion(self, record: dict) -> None:
        """confusion.csv (every cell of the round's global counts) and the round's buffered client counts."""
        pending, self._client_confusion = self._client_confusion, []
        confusion = record.get("confusion")
        if not confusion:
            return
        classes, round_no = confusion["classes"], record.get("round")
        with open(self.dir / "confusion.csv", "a", newline="") as fh:
            writer = csv.writer(fh)
            for i, row in enumerate(confusion["counts"]):
                writer.writerows([round_no, classes[i], classes[j], n] for j, n in enumerate(row))
        with open(self.dir / "client_confusion.csv", "a", newline="") as fh:
            writer = csv.writer(fh)
            for event in pending:
                for i, row in enumerate(event["eval_confusion"]):
                    writer.writerows([event.get("round"), event.get("client_id"), classes[i], classes[j], n]
                                     for j, n in enumerate(row) if n)

    def save_json(self, name: str, data: Any) -> None:
        """A side file of the run (e.g. baselines.json, partition.json)."""
        with self._lock:
            write_json_atomically(self.dir / name, data, default=_json_default)

    def update_summary(self, **fields: Any) -> None:
        """Add fields to summary.json (e.g. baselines that arrive after the rounds)."""
        with self._lock:
            self.summary.update(fields)
            self._write_summary()

    def finish(self, status: str, model: Any = None, error: str | None = None, extra: dict | None = None,
               best: Any = None) -> None:
        """Record the end of the run; save the final model and the best round's (``best``: a BestRound)."""
        with self._lock:
            self._flush()
            if model is not None:
                dump_atomically(self.dir / "model.joblib", lambda path: joblib.dump(model, path))
            if best is not None:
                dump_atomically(self.dir / "best_model.joblib", lambda path: joblib.dump(best.model, path))
                self.summary.update(best_round=best.round, best_selected_on=best.selected_on,
                                    best_score=_clean(best.score),
                                    best_metrics={k: _clean(v) for k, v in best.metrics.items()})
            if self._joined:
                self.summary["n_clients"] = max(len(self._joined), self.summary.get("n_clients") or 0)
            self.summary.update(status=status, finished_at=time.time(), error=error, **(extra or {}))
            self._write_checkpoint(sync=True)  # the newest, if a later round's rename was still due
            if self._checkpoint_unsynced:
                sync_file(self.dir / CHECKPOINT_FILE)
                self._checkpoint_unsynced = False
            self._write_summary(sync=True)


def _csv_text(columns: tuple[str, ...], rows: list[dict]) -> str:
    import io

    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c), c) for c in columns])
    return buf.getvalue()


def _rows_up_to(path: Path, last_round: int) -> list[dict]:
    """The rows of a CSV with a ``round`` column up to ``last_round`` (a torn last line is dropped)."""
    if not path.exists():
        return []
    if csv.field_size_limit() < CSV_FIELD_LIMIT:  # a file written before cells were capped may hold a long one
        csv.field_size_limit(CSV_FIELD_LIMIT)
    with open(path, newline="") as fh:
        out = []
        for row in csv.DictReader(fh):
            try:
                if int(row.get("round") or 0) <= last_round:
                    out.append(row)
            except ValueError:
                continue
        return out


def load_checkpoint(directory: str | Path) -> Checkpoint:
    """The checkpoint of the run in ``directory``; CheckpointError saying why not."""
    path = Path(directory) / CHECKPOINT_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{directory} has no checkpoint: it finished no round, or was made before runs "
                              "kept one") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read {path} ({exc.strerror or exc})") from None
    return Checkpoint.from_bytes(data)


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

    def confusion(self) -> pd.DataFrame:
        """The global model's confusion counts per round (empty for runs before they were kept)."""
        return _read_csv(self.path / "confusion.csv", CONFUSION_COLUMNS)

    def client_confusion(self) -> pd.DataFrame:
        """Each client's confusion counts per round, non-zero cells only."""
        return _read_csv(self.path / "client_confusion.csv", CLIENT_CONFUSION_COLUMNS)

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

    def data_report(self) -> dict | None:
        """data_report.json, when the run wrote one (None for runs before it, or unreadable)."""
        try:
            return json.loads((self.path / DATA_REPORT_FILE).read_text())
        except (OSError, json.JSONDecodeError):
            return None

    @property
    def model_path(self) -> Path | None:
        """The final model (joblib, our own file: load it with joblib.load yourself, never a file from a peer)."""
        path = self.path / "model.joblib"
        return path if path.exists() else None

    @property
    def kind(self) -> str:
        """simulation or hosted (runs from before the field was kept: simulation)."""
        return self.summary.get("kind") or "simulation"

    @property
    def resumable(self) -> bool:
        """Whether it ended before its last round with a checkpoint to continue from."""
        return self.summary.get("status") != "completed" and (self.path / CHECKPOINT_FILE).exists()

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

    def create(self, run_id: str, config: dict[str, Any], resume: Checkpoint | None = None) -> RunWriter:
        self._check_id(run_id)
        return RunWriter(self.root / run_id, config, run_id, resume=resume)

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
