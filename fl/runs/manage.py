"""Managing the stored runs of this machine: list, show, follow, stop, resume, delete, export.

The same operations whoever asks: ``python -m fl runs ...`` (fl/cli/runs.py)
and the Runs page. They read only the run store (``FL_RUNS_DIR``, default
``runs/``) and a run's own files, so they work on runs of any process:
liveness and stop requests go through the files of fl/runs/control.py.
Refusals are ``RunsError``, one sentence that says what to do instead.
"""

from __future__ import annotations

import io
import json
import os
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from fl.errors import FLError
from fl.runs.config import ConfigError, RunConfig
from fl.runs.control import POLL_S, Liveness, liveness, request_stop, wait_until_ended
from fl.runs.store import RunStore, StoredRun

# What a run directory may hold that its zip takes (those present, nothing else: no temp or live files).
RUN_FILES = ("config.json", "summary.json", "metrics.csv", "clients.csv", "events.jsonl", "model.joblib",
             "best_model.joblib", "baselines.json", "partition.json", "weights.npz", "weights.csv")
FOLLOW_CHUNK = 8 << 20  # bytes of events.jsonl read at once
SHOWN_EVENTS = ('"type": "round"', '"type": "resumed"', '"type": "done"')  # what following a run prints


class RunsError(FLError):
    """One sentence: why the run cannot be found or this cannot be done to it."""


@dataclass(frozen=True)
class RunView:
    """A stored run and what its files say of it now."""

    run: StoredRun
    state: Liveness

    @property
    def status(self) -> str:
        return self.state.status

    @property
    def total_rounds(self) -> int | None:
        return total_rounds(self.run.config)


def total_rounds(config: dict) -> int | None:
    """The rounds a run's config asks for (one for ensembles and one-shot models)."""
    try:
        return RunConfig.from_dict(dict(config)).effective_rounds
    except (ConfigError, ValueError, TypeError, KeyError):
        rounds = config.get("rounds")
        return rounds if isinstance(rounds, int) else None


def view(run: StoredRun) -> RunView:
    return RunView(run, liveness(run.path, run.summary.get("status") or "unknown"))


def list_runs(store: RunStore) -> list[RunView]:
    """Every readable run of the store, newest first, each with its liveness."""
    return [view(run) for run in store.list()]


def live_ids(runs: list[StoredRun]) -> set[str]:
    """The runs that some process of this machine is running now (any process: the CLI's, a sweep's, this
    dashboard's)."""
    return {run.run_id for run in runs if view(run).state.live}


def find_run(store: RunStore, ref: str) -> StoredRun:
    """The run whose id is ``ref``, or the only one whose id starts or ends with it; a path with a slash
    names a run directory anywhere (``--out DIR``)."""
    if "/" in ref or (os.sep in ref):
        path = Path(ref)
        if not (path / "config.json").is_file():
            raise RunsError(f"{ref} is not a run directory (it has no config.json)")
        try:
            return RunStore(path.resolve().parent).load(path.resolve().name)
        except (OSError, ValueError) as exc:
            raise RunsError(f"the run in {ref} cannot be read ({exc})") from None
    try:
        return store.load(ref)
    except (FileNotFoundError, NotADirectoryError):
        pass
    except ValueError:
        raise RunsError(f"{ref!r} is not a run id (letters, digits, _ . - only)") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise RunsError(f"run {ref} cannot be read ({exc})") from None
    if not store.root.is_dir():
        raise RunsError(f"no runs in {store.root} (it does not exist; FL_RUNS_DIR or --runs-dir names the store)")
    names = sorted(p.name for p in store.root.iterdir() if (p / "config.json").is_file())
    matches = [n for n in names if n.startswith(ref) or n.endswith(ref)] if ref else []
    if len(matches) == 1:
        return store.load(matches[0])
    if len(matches) > 1:
        raise RunsError(f"{ref!r} names {len(matches)} runs ({', '.join(matches[:3])}"
                        f"{', ...' if len(matches) > 3 else ''}): give more of the id")
    raise RunsError(f"no run {ref!r} in {store.root} (python -m fl runs list shows them)")


def row(item: RunView) -> dict[str, Any]:
    """One run as ``runs list`` gives it (its JSON form): id, kind, status, dataset, model, rounds, accuracy,
    started."""
    run, summary = item.run, item.run.summary
    accuracy = (summary.get("final_metrics") or {}).get("accuracy")
    started = summary.get("started_at")
    return {"run_id": run.run_id, "kind": run.kind, "status": item.status, "dataset": run.config.get("dataset"),
            "model": run.config.get("model"), "aggregation": run.config.get("aggregation"),
            "rounds_done": summary.get("rounds_done") or 0, "rounds": item.total_rounds,
            "accuracy": accuracy if isinstance(accuracy, (int, float)) else None,
            "started_at": started if isinstance(started, (int, float)) else None,
            "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started))
            if isinstance(started, (int, float)) else None,
            "pid": item.state.pid if item.state.live else None, "path": str(run.path)}


def last_rounds(run: StoredRun, n: int) -> list[dict]:
    """The last ``n`` rows of metrics.csv (empty when it cannot be read)."""
    try:
        frame = run.metrics()
    except (OSError, ValueError):
        return []
    frame = frame.tail(n) if n > 0 else frame.iloc[0:0]
    return [{k: (None if v != v else v) for k, v in rec.items()}  # NaN (an empty cell) as None
            for rec in frame.to_dict("records")]


def follow(directory: str | Path, poll_s: float = POLL_S,
           should_stop: Callable[[], bool] = lambda: False) -> Iterator[dict]:
    """The run's round, resumed and done events as they are written to events.jsonl: those already there
    first, then new ones every ``poll_s`` until the run is no longer live (or ``should_stop()``)."""
    path = Path(directory) / "events.jsonl"
    offset, partial = 0, b""
    while True:
        ended = not liveness(directory).live  # read before the file: nothing written before the end is missed
        try:
            with open(path, "rb") as fh:
                if fh.seek(0, 2) < offset:  # shorter than what was read: replaced, start again
                    offset, partial = 0, b""
                fh.seek(offset)
                chunk = fh.read(FOLLOW_CHUNK)
        except FileNotFoundError:
            chunk = b""
        more = len(chunk) == FOLLOW_CHUNK  # a long file (thousands of clients): read on before sleeping
        offset += len(chunk)
        *lines, partial = (partial + chunk).split(b"\n")
        for line in lines:
            text = line.decode("utf-8", "replace")
            if not any(kind in text for kind in SHOWN_EVENTS):
                continue
            try:
                event = json.loads(text)
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict) and event.get("type") in ("round", "resumed", "done"):
                yield event
        if more:
            continue
        if ended or should_stop():
            return
        time.sleep(poll_s)


def stop(directory: str | Path, wait_s: float) -> tuple[Liveness, Liveness]:
    """Ask the run to stop and wait up to ``wait_s`` seconds for it to end: (before, after). ``before`` not
    live: it had already ended, nothing was asked."""
    before = request_stop(directory)
    if not before.live:
        return before, before
    return before, wait_until_ended(directory, wait_s) if wait_s > 0 else before


def delete(store: RunStore, run: StoredRun) -> None:
    """Remove a run that is not live from the store."""
    state = liveness(run.path, run.summary.get("status"))
    if state.live:
        raise RunsError(f"run {run.run_id} is running ({state.where}): stop it first "
                        f"(python -m fl runs stop {run.run_id})")
    try:
        store.delete(run.run_id)
    except FileNotFoundError:
        raise RunsError(f"run {run.run_id} is no longer in {store.root}") from None
    except (OSError, ValueError) as exc:
        raise RunsError(f"cannot delete run {run.run_id} ({exc})") from None


def zip_run(run: StoredRun) -> bytes:
    """The run directory's files (RUN_FILES) in one zip, built in memory, under a folder named after the run:
    the Runs page's download."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in RUN_FILES:
            path = run.path / name
            if path.is_file():
                zf.write(path, arcname=f"{run.run_id}/{name}")
    return buf.getvalue()


def resume(store: RunStore, run: StoredRun, on_event: Callable[[dict], None] | None = None) -> Any:
    """Continue a simulated run after its last finished round, in its directory under its id, with fresh
    clients and baselines: what the Runs page's Resume does (RunRegistry.resume). Returns the RunHandle.

    A hosted run needs its network settings (and its clients to rejoin): it is resumed by ``python -m fl
    server --out DIR --resume`` or on the Deploy page, and refused here with that sentence.
    """
    # here, not at the top: listing and showing runs need not load the data and learning layers
    from fl.runs import simulation
    from fl.runs.resume import open_resume

    state = liveness(run.path, run.summary.get("status"))
    if state.live:
        raise RunsError(f"run {run.run_id} is still running ({state.where})")
    if run.kind != "simulation":
        raise RunsError(f"run {run.run_id} is a hosted run: resume it with python -m fl server --out {run.path} "
                        "--resume and the network flags it had (or on the Deploy page); its clients rejoin with "
                        "--reconnect")
    try:
        resumable = open_resume(run.path)
        return simulation.start(resumable.config, store=store, run_id=resumable.run_id,
                                resume=resumable.checkpoint, with_baselines=True, on_event=on_event)
    except FLError as exc:
        raise RunsError(f"cannot resume run {run.run_id}: {exc}") from None
    except OSError as exc:
        raise RunsError(f"cannot resume run {run.run_id}: {exc.strerror or exc}") from None
