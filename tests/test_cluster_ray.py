"""A simulation placed on a local Ray cluster (``--cluster ray``, started for the run on loopback and shut down
with it): the same numbers as the local run, its hosts on the Ray node, no Ray process left."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

from fl.runs import simulation
from fl.runs.config import RunConfig
from tests.cluster_helpers import ROOT

pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

FLAGS = ["--dataset", "digits", "--clients", "200", "--partition", "iid", "--model", "logreg", "--rounds", "2",
         "--seed", "3", "--no-baselines"]
RAY_PROCESSES = ("raylet", "gcs_server")


def ray_pids() -> set[int]:
    return {p.pid for p in psutil.process_iter(["name"]) if (p.info["name"] or "").startswith(RAY_PROCESSES)}


def metrics(path) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: row[k] for k in ("round", "accuracy", "loss", "f1_macro", "n_failures")}
                for row in csv.DictReader(f)]


def test_a_run_on_a_local_ray_has_the_local_numbers_and_leaves_no_ray_process(tmp_path):
    # Prepare: the same run here; Ray on loopback only, no usage report
    simulation.run(RunConfig(dataset="digits", clients=200, partition="iid", model="logreg", rounds=2, seed=3,
                             workers=0), out_dir=str(tmp_path / "local"))
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0",
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    env.pop("RAY_ADDRESS", None)
    before = ray_pids()
    # Execute
    done = subprocess.run([sys.executable, "-m", "fl", "simulate", *FLAGS, "--workers", "2", "--cluster", "ray",
                           "--out", str(tmp_path / "ray")], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=240)
    # Assert
    assert done.returncode == 0, done.stderr[-2000:]
    assert metrics(tmp_path / "ray" / "metrics.csv") == metrics(tmp_path / "local" / "metrics.csv")
    summary = json.loads((tmp_path / "ray" / "summary.json").read_text())
    assert summary["cluster"] == "ray" and summary["clients_took_part"] == 200
    assert [h["clients"] for h in summary["hosts"]] == ["clients 0-99", "clients 100-199"]
    assert all(h["name"] == "127.0.0.1" and h["pid"] for h in summary["hosts"])  # on the loopback Ray node
    assert ray_pids() <= before
