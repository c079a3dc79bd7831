"""Continuing a run that did not finish: its saved settings, its checkpoint and its run id, checked.

A run directory holds everything a resume needs (fl/runs/store.py):
config.json (the settings it started with), summary.json (its run id and how
it ended) and checkpoint.npz (the server's state after its last finished
round). ``open_resume`` reads and checks them and says in one sentence why a
directory cannot be resumed; the caller then starts the run as usual with
``resume=`` (fl/runs/simulation.py, fl/runs/hosting.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from fl.federation.checkpoint import Checkpoint, CheckpointError
from fl.runs.config import ConfigError, RunConfig
from fl.runs.store import load_checkpoint


@dataclass(frozen=True)
class Resumable:
    """A run directory ready to continue: settings, checkpoint, run id."""

    config: RunConfig
    checkpoint: Checkpoint
    run_id: str
    directory: Path


def open_resume(directory: str | Path) -> Resumable:
    """Read and check ``directory``; CheckpointError with one sentence when it cannot be resumed."""
    directory = Path(directory)
    try:
        config = RunConfig.from_json((directory / "config.json").read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{directory} is not a run directory (it has no config.json)") from None
    except (OSError, ConfigError) as exc:
        raise CheckpointError(f"cannot read {directory / 'config.json'}: {exc}") from None
    try:
        summary = json.loads((directory / "summary.json").read_text())
    except (OSError, json.JSONDecodeError):
        summary = {}
    if summary.get("status") == "completed":
        raise CheckpointError(f"the run in {directory} completed: there is nothing to resume")
    checkpoint = load_checkpoint(directory)
    if checkpoint.round >= config.effective_rounds and summary.get("status") not in (None, "running"):
        raise CheckpointError(f"the run in {directory} ended after its last round: there is nothing to resume")
    run_id = summary.get("run_id") or checkpoint.run_id or directory.name
    return Resumable(config, checkpoint, run_id, directory)
