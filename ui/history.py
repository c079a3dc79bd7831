"""Pieces of the Runs page: the table of stored runs, selection, zip, delete.

Pure functions of ``StoredRun`` objects (no ``st.*``), so the page stays a
thin layout and the logic is testable without a browser.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import pandas as pd

from fl.runs.control import liveness
from fl.runs.manage import RUN_FILES, zip_run  # noqa: F401 - the page's download is the engine's zip
from fl.runs.run_registry import RunRegistry
from fl.runs.store import RunStore, StoredRun
from ui.format import is_number, when
TABLE_COLUMNS = ["Started", "Dataset", "Model", "Aggregation", "Clients", "Rounds done", "Final accuracy",
                 "Status", "Run id"]


def status_of(run: StoredRun, live_ids: set[str]) -> str:
    """The summary's status, except a 'running' run no live worker owns: it was interrupted.

    summary.json says 'running' until the run ends; if this process holds no
    live handle for it, the process that ran it is gone.
    """
    status = run.summary.get("status") or "unknown"
    if status == "running" and run.run_id not in live_ids:
        return "interrupted"
    return status


def runs_frame(runs: list[StoredRun], live_ids: set[str]) -> pd.DataFrame:
    """One row per run, in the order given (the store lists newest first)."""
    rows = []
    for run in runs:
        cfg, summary = run.config, run.summary
        accuracy = (summary.get("final_metrics") or {}).get("accuracy")
        rows.append({
            "Started": when(summary.get("started_at")),
            "Dataset": cfg.get("dataset"),
            "Model": cfg.get("model"),
            "Aggregation": cfg.get("aggregation"),
            "Clients": summary.get("n_clients") or cfg.get("clients"),  # those that took part, when known
            "Rounds done": summary.get("rounds_done") or 0,
            # a number (sortable in the table), shown as a percentage by the column config
            "Final accuracy": round(100 * accuracy, 1) if is_number(accuracy) else None,
            "Status": status_of(run, live_ids),
            "Run id": run.run_id,
        })
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def table_key(runs: list[StoredRun]) -> str:
    """A widget key that changes whenever the set of runs changes.

    The table's selection is a list of row positions; when a run is added or
    deleted those positions would point at other runs, so a new key starts
    with a clean selection instead.
    """
    digest = hashlib.sha1("|".join(r.run_id for r in runs).encode()).hexdigest()[:10]
    return f"runs_table_{digest}"


def selected(runs: list[StoredRun], rows: Iterable[int]) -> list[StoredRun]:
    """The runs at the selected row positions, ignoring any out of range."""
    return [runs[i] for i in sorted(set(rows)) if isinstance(i, int) and 0 <= i < len(runs)]


def run_label(run: StoredRun, differing: list[str] | None = None) -> str:
    """What tells this run from the others it is drawn with: the settings in which they differ, else when it
    started and its model and rule."""
    cfg = run.config
    if differing:
        return " · ".join(f"{name} {_shown(cfg.get(name))}" for name in differing[:4])
    return f"{when(run.summary.get('started_at'))} · {cfg.get('model')}/{cfg.get('aggregation')}"


def _shown(value: object) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "{}"
    return "–" if value in (None, "") else str(value)


# Settings that do not change a run's numbers: never what a legend says two runs differ in.
NOT_DIFFERENCES = ("workers", "cluster", "join_timeout", "mlflow_uri", "archive_weights", "round_timeout")


def differing_settings(runs: list[StoredRun]) -> list[str]:
    """The settings whose values differ between these runs (the model and the rule first)."""
    if len(runs) < 2:
        return []
    keys = sorted({k for run in runs for k in run.config} - set(NOT_DIFFERENCES),
                  key=lambda k: (k not in ("model", "aggregation", "dataset"), k))
    return [k for k in keys if len({repr(run.config.get(k)) for run in runs}) > 1]


def curves(runs: list[StoredRun]) -> dict[str, pd.DataFrame]:
    """label -> metrics frame; each label names what differs between the runs (made unique when nothing does)."""
    out: dict[str, pd.DataFrame] = {}
    differing = differing_settings(runs)
    for run in runs:
        label = run_label(run, differing)
        if label in out:
            label = f"{label} · {run.run_id[-6:]}"
        try:
            out[label] = run.metrics()
        except (OSError, ValueError, pd.errors.ParserError):
            out[label] = pd.DataFrame(columns=["round"])  # an unreadable metrics.csv draws no line
    return out


def delete_run(store: RunStore, registry: RunRegistry, run_id: str) -> str | None:
    """Delete a finished run from disk and memory; an error sentence if it must not or cannot be."""
    handle = registry.get(run_id)
    if handle is not None and not handle.done:
        where = "Deploy" if handle.kind == "hosted" else "Run"
        return (f"Run {run_id} is still running. Stop it first (Stop button on the {where} page), "
                "then delete it.")
    elsewhere = liveness(store.root / run_id)
    if elsewhere.live:  # a run of another process (the command line, a sweep)
        return (f"Run {run_id} is running in another process ({elsewhere.where}). Stop it first "
                f"(python -m fl runs stop {run_id}), then delete it.")
    try:
        store.delete(run_id)
    except FileNotFoundError:
        return f"Run {run_id} is no longer in the store (deleted from another tab?). Reload the page."
    except (OSError, ValueError) as exc:
        return f"Could not delete run {run_id} ({exc}). Check the folder's permissions and try again."
    registry.forget(run_id)
    return None



def resume_note(run: StoredRun) -> str:
    """What Resume does for a run that ended before its last round (a hosted run: how to resume it)."""
    done = run.summary.get("rounds_done") or 0
    total = run.config.get("rounds")
    if run.kind != "simulation":
        return (f"This hosted run stopped after round {done} of {total}. Resume it here on the Deploy page, or "
                f"with `python server_new.py --out {run.path} --resume` and the network flags it had (--host, "
                "--port, --token, TLS); clients started with `--reconnect SECONDS` rejoin on their own.")
    return (f"This run stopped after round {done} of {total}; its checkpoint keeps the global model and the "
            f"server's state, so it can go on from round {done + 1}. Its clients start afresh: a model whose "
            "clients keep state between rounds (the MLP's optimiser) may end slightly differently from a run "
            "that never stopped.")
