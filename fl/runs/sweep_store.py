"""Where sweeps are kept: ``<runs>/sweeps/<sweep_id>/`` beside the runs they made.

    sweep.json    the base config, the grid, the seeds, every run's id, cell, seed
                  and status, and the sweep's own status and dates
    summary.csv   one row per run (fl/runs/sweep_stats.py says the columns)
    cells.csv     one row per grid cell: mean, std and 95% interval over its seeds
    stop          present once Stop was asked: the worker processes read it

Each run is an ordinary run directory of the RunStore (``<runs>/<run_id>/``),
so the Runs page lists it; ``sweeps/`` holds no config.json, so RunStore.list()
skips it. Files are replaced atomically (written aside, then renamed), so a
reader never sees half a CSV while the sweep writes the next row.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from fl.runs.files import write_atomically
from fl.runs.store import RUN_ID_PATTERN, RunStore

SWEEPS_DIR = "sweeps"
SWEEP_FILES = ("sweep.json", "summary.csv", "cells.csv")
RUN_FILES = ("config.json", "summary.json", "metrics.csv", "clients.csv", "events.jsonl", "model.joblib",
             "partition.json")
SWEEP_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,60}$")


def write_csv(path: Path, frame: pd.DataFrame) -> None:
    write_atomically(path, frame.to_csv(index=False))


def write_json(path: Path, data: Any) -> None:
    write_atomically(path, json.dumps(data, indent=2, default=str))


@dataclass
class StoredSweep:
    """A sweep on disk, finished or still being written."""

    sweep_id: str
    path: Path
    meta: dict[str, Any]

    @property
    def status(self) -> str:
        return self.meta.get("status") or "unknown"

    @property
    def grid(self) -> dict[str, list]:
        return self.meta.get("grid") or {}

    @property
    def run_ids(self) -> list[str]:
        return [r["run_id"] for r in self.meta.get("runs", [])]

    def summary(self) -> pd.DataFrame:
        return _read(self.path / "summary.csv")

    def cells(self) -> pd.DataFrame:
        return _read(self.path / "cells.csv")

    def run_metrics(self, run_store: RunStore, run_ids: list[str] | None = None) -> dict[str, pd.DataFrame]:
        """run id -> its metrics.csv, for the runs that have one (cancelled runs never made a directory)."""
        out = {}
        for run_id in self.run_ids if run_ids is None else run_ids:
            path = run_store.root / run_id / "metrics.csv"
            if path.exists():
                try:
                    out[run_id] = pd.read_csv(path)
                except (OSError, ValueError, pd.errors.ParserError):
                    continue  # a run still writing its header: it draws nothing this time
        return out

    def zip(self, run_store: RunStore) -> bytes:
        """The sweep's files and every run it made, in one zip under a folder named after the sweep."""
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name in SWEEP_FILES:
                if (self.path / name).is_file():
                    zf.write(self.path / name, arcname=f"{self.sweep_id}/{name}")
            for run_id in self.run_ids:
                for name in RUN_FILES:
                    path = run_store.root / run_id / name
                    if RUN_ID_PATTERN.match(run_id) and path.is_file():
                        zf.write(path, arcname=f"{self.sweep_id}/runs/{run_id}/{name}")
        return buf.getvalue()


def _read(path: Path) -> pd.DataFrame:
    if not path.exists():
        return pd.DataFrame()
    try:
        return pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError):
        return pd.DataFrame()


class SweepStore:
    """Every sweep under ``<root>/sweeps``; ``root`` is the RunStore's root, where the runs go."""

    def __init__(self, root: str | Path = "runs"):
        self.root = Path(root)
        self.dir = self.root / SWEEPS_DIR

    @property
    def run_store(self) -> RunStore:
        return RunStore(self.root)

    def path(self, sweep_id: str) -> Path:
        if not SWEEP_ID_PATTERN.match(sweep_id):
            raise ValueError(f"invalid sweep id {sweep_id!r}")
        return self.dir / sweep_id

    def create(self, sweep_id: str) -> Path:
        path = self.path(sweep_id)
        path.mkdir(parents=True, exist_ok=False)
        return path

    def load(self, sweep_id: str) -> StoredSweep:
        path = self.path(sweep_id)
        return StoredSweep(sweep_id, path, json.loads((path / "sweep.json").read_text()))

    def list(self) -> list[StoredSweep]:
        """Every readable sweep, newest first."""
        if not self.dir.is_dir():
            return []
        out = []
        for path in self.dir.iterdir():
            try:
                out.append(self.load(path.name))
            except (OSError, ValueError):
                continue  # not a sweep, or one being created this instant
        return sorted(out, key=lambda s: s.meta.get("created_at") or 0, reverse=True)
