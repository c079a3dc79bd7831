"""Resumable runs: the checkpoint file, the strategies' state, and a run that stops and goes on.

A resumed run must end with the numbers of a run that never stopped (same
seed, same clients): the server's random choices come from the saved RNG
states, the clients' training seeds from the round number. Simulated
clients restart with a resume, so these runs use L-BFGS logistic regression,
whose clients keep no state between rounds.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fl.federation.checkpoint import Checkpoint, CheckpointError
from fl.learning.server_opt import make_server_optimizer
from fl.learning.strategies import FedAvg
from fl.learning.wrappers import WithDifferentialPrivacy, WithServerOptimizer
from fl.runs import simulation
from fl.cli.main import main
from fl.runs.config import RunConfig
from fl.runs.resume import open_resume
from fl.runs.store import CHECKPOINT_FILE

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("accuracy", "loss", "f1_macro", "worst_client_accuracy", "epsilon")


def _config(**over) -> RunConfig:
    base = dict(dataset="digits", model="logreg", clients=5, rounds=6, seed=3, alpha=0.5, workers=0)
    return RunConfig.from_dict({**base, **over}).validate()


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# ---------------------------------------------------------------------- the file
def test_a_checkpoint_round_trips_arrays_bytes_and_json_without_pickle():
    # Prepare
    arrays = [["coef", np.arange(6, dtype=np.float64).reshape(2, 3)], ["intercept", np.array([0.5, -1.0])]]
    ckpt = Checkpoint(round=4, rounds=[{"round": r, "accuracy": 0.1 * r} for r in range(1, 5)],
                      rng_state=np.random.default_rng(7).bit_generator.state, model={"arrays": arrays},
                      strategy={"inner": {}, "optimizer": {"m": [np.ones(3)], "v": None}},
                      best={"round": 2, "score": 0.9, "selected_on": "test", "metrics": {}, "model": {"blob": b"\x00ab"}},
                      task={"model": "logreg", "classes": [0, 1]}, run_id="r1")
    # Execute
    back = Checkpoint.from_bytes(ckpt.to_bytes())
    # Assert
    assert back.round == 4 and back.run_id == "r1" and back.rounds == ckpt.rounds
    assert np.array_equal(back.model["arrays"][0][1], arrays[0][1]) and back.model["arrays"][1][0] == "intercept"
    assert np.array_equal(back.strategy["optimizer"]["m"][0], np.ones(3)) and back.strategy["optimizer"]["v"] is None
    assert back.best["model"]["blob"] == b"\x00ab"
    rng = np.random.default_rng(0)
    rng.bit_generator.state = back.rng_state
    assert rng.random() == np.random.default_rng(7).random()
    with np.load(io.BytesIO(ckpt.to_bytes()), allow_pickle=False) as npz:  # numpy's own format, no objects
        assert all(npz[key].dtype != object for key in npz.files)


@pytest.mark.parametrize("data", [b"", b"not a zip", b"PK\x03\x04garbage"])
def test_a_damaged_checkpoint_is_refused_in_one_sentence(data):
    with pytest.raises(CheckpointError, match="cannot be read"):
        Checkpoint.from_bytes(data)


def test_a_checkpoint_of_another_task_says_what_differs():
    ckpt = Checkpoint(round=1, rounds=[], rng_state={}, model={}, strategy={}, task={"model": "logreg", "n_features": 64})
    assert ckpt.task_problem({"model": "logreg", "n_features": 64}) is None
    assert "n_features" in ckpt.task_problem({"model": "logreg", "n_features": 8})


# ---------------------------------------------------------------------- strategy state
def test_server_optimiser_and_privacy_state_continue_exactly():
    # Prepare: two identical strategies; one is checkpointed after two rounds and restored into a third
    def make():
        return WithDifferentialPrivacy(WithServerOptimizer(FedAvg(), make_server_optimizer("fedadam")),
                                       "server", clip_norm=1.0, noise_multiplier=0.8, delta=1e-5, seed=5)
    rng = np.random.default_rng(0)
    rounds = [[([rng.normal(size=(3, 2)), rng.normal(size=2)], 10) for _ in range(4)] for _ in range(3)]
    current = [np.zeros((3, 2)), np.zeros(2)]
    straight, stopped = make(), make()
    x_straight = x_stopped = current
    for results in rounds[:2]:
        x_straight = straight.aggregate(results, x_straight)
        straight.end_round(4, 4)
        x_stopped = stopped.aggregate(results, x_stopped)
        stopped.end_round(4, 4)
    state = Checkpoint.from_bytes(Checkpoint(2, [], {}, {}, stopped.state()).to_bytes()).strategy
    resumed = make()
    resumed.load_state(state)
    # Execute
    x_straight = straight.aggregate(rounds[2], x_straight)
    straight.end_round(4, 4)
    x_resumed = resumed.aggregate(rounds[2], x_stopped)
    resumed.end_round(4, 4)
    # Assert: the same noise, the same moments, the same privacy spent
    assert all(np.array_equal(a, b) for a, b in zip(x_straight, x_resumed))
    assert resumed.round_metrics()["epsilon"] == straight.round_metrics()["epsilon"]


# ---------------------------------------------------------------------- runs
def _stop_after(handle, round_no: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while handle.state.current_round < round_no + 1 and time.monotonic() < deadline and handle.result is None:
        time.sleep(0.01)
    handle.stop()
    handle.wait(30)


@pytest.mark.parametrize("over", [{}, {"server_opt": "fedadam", "dp": "server", "noise_multiplier": 0.5, "fraction": 0.6}])
def test_a_stopped_run_resumed_ends_with_the_uninterrupted_runs_numbers(tmp_path, over, no_thread_leaks):
    # Prepare: the run straight through, and the same run stopped during round 4
    config = _config(**over)
    straight = simulation.run(config, out_dir=str(tmp_path / "straight"))
    handle = simulation.start(config, out_dir=str(tmp_path / "cut"))
    _stop_after(handle, 3)
    assert handle.result is not None and handle.result.status == "stopped"
    # Execute
    resumable = open_resume(tmp_path / "cut")
    assert 3 <= resumable.checkpoint.round < config.rounds
    resumed = simulation.start(resumable.config, out_dir=str(tmp_path / "cut"), run_id=resumable.run_id,
                               resume=resumable.checkpoint)
    resumed.wait(120)
    # Assert
    result = resumed.result
    assert result is not None and result.status == "completed"
    for key in METRICS:
        a, b = straight.final_metrics.get(key), result.final_metrics.get(key)
        assert (a is None and b is None) or abs(a - b) <= 1e-9, key
    rows = _rows(tmp_path / "cut" / "metrics.csv")
    assert [int(r["round"]) for r in rows] == list(range(1, config.rounds + 1))
    for mine, theirs in zip(rows, _rows(tmp_path / "straight" / "metrics.csv")):
        assert abs(float(mine["accuracy"]) - float(theirs["accuracy"])) <= 1e-9
    summary = json.loads((tmp_path / "cut" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["run_id"] == handle.run_id
    assert summary["resumed_after_rounds"] == [resumable.checkpoint.round]
    assert summary["best_round"] == json.loads((tmp_path / "straight" / "summary.json").read_text())["best_round"]
    assert {int(r["round"]) for r in _rows(tmp_path / "cut" / "clients.csv")} == set(range(1, config.rounds + 1))
    assert "resumed from the checkpoint" in (tmp_path / "cut" / "events.jsonl").read_text().replace('"', "") or \
        any(json.loads(line).get("type") == "resumed" for line in (tmp_path / "cut" / "events.jsonl").open())


def test_a_killed_simulation_resumes_from_the_command_line_and_every_round_appears_once(tmp_path):
    # Prepare: a simulate process killed with SIGKILL once it has reported two rounds
    out = tmp_path / "run"
    args = ["--dataset", "digits", "--model", "logreg", "--clients", "4", "--rounds", "8", "--seed", "1",
            "--workers", "0", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "fl", "simulate", *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "metrics.csv").exists() and len(_rows(out / "metrics.csv")) >= 2:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(10)
    if not (out / CHECKPOINT_FILE).exists():
        pytest.skip("the run finished before it could be killed")
    # Execute
    done = subprocess.run([sys.executable, "-m", "fl", "simulate", "--out", str(out), "--resume"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    # Assert
    assert done.returncode == 0, done.stderr
    assert "resumed from the checkpoint of round" in done.stderr
    assert [int(r["round"]) for r in _rows(out / "metrics.csv")] == list(range(1, 9))
    assert json.loads((out / "summary.json").read_text())["status"] == "completed"
    assert (out / "model.joblib").exists()
    straight = subprocess.run([sys.executable, "-m", "fl", "simulate", *args[:-1], str(tmp_path / "straight")],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip().splitlines()[-1] == straight.stdout.strip().splitlines()[-1]


# ---------------------------------------------------------------------- refusals
def test_resume_refusals_are_one_line(tmp_path, capsys):
    finished = tmp_path / "finished"
    simulation.run(_config(rounds=2), out_dir=str(finished))
    cases = [
        (["simulate", "--resume"], "add --out"),
        (["simulate", "--resume", "--out", str(tmp_path / "nothing")], "not a run directory"),
        (["simulate", "--resume", "--out", str(finished)], "completed: there is nothing to resume"),
        (["server", "--resume", "--out", str(finished), "--port", "0"], "completed: there is nothing to resume"),
    ]
    for argv, needle in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and len(err.splitlines()) == 1, (argv, err)
    os.remove(finished / "summary.json")
    (finished / CHECKPOINT_FILE).write_bytes(b"garbage")
    assert main(["simulate", "--resume", "--out", str(finished)]) == 2
    assert "cannot be read" in capsys.readouterr().err


def test_resume_accepts_the_saved_settings_and_names_each_changed_one(tmp_path, capsys, no_thread_leaks):
    # Prepare: a run stopped after its first round, and a config that differs from it in one setting
    config = _config(rounds=3)
    out = tmp_path / "cut"
    handle = simulation.start(config, out_dir=str(out))
    _stop_after(handle, 1)
    assert handle.result is not None and handle.result.status == "stopped"
    same = ["--dataset", "digits", "--model", "logreg", "--clients", "5", "--rounds", "3", "--seed", "3",
            "--alpha", "0.5", "--workers", "0"]
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**config.to_dict(), "rounds": 9}))
    refused = [
        (["simulate", "--resume", "--out", str(out), "--rounds", "30"],
         "--resume goes on with the run's saved settings; --rounds 30 differs from the saved 3: drop it"),
        (["simulate", "--resume", "--out", str(out), *same[:-2], "--seed", "1", "--no-standardize", "--workers", "0"],
         "--standardize off differs from the saved on, --seed 1 differs from the saved 3: drop them"),
        (["simulate", "--resume", "--out", str(out), "--config", str(other)],
         f"--config {other} sets --rounds 9, the saved 3: drop it"),
        (["server", "--resume", "--out", str(out), "--port", "0", "--learning-rate", "0.5"],
         "--learning-rate 0.5 differs from the saved default: drop it"),
    ]
    # Execute / Assert: each changed setting named with both values, in one line; nothing was run
    for argv, needle in refused:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and len(err.splitlines()) == 1, (argv, err)
    assert [int(r["round"]) for r in _rows(out / "metrics.csv")] == [1]
    # Execute: the command that started it, repeated with --resume (and its own config.json beside it)
    code = main(["simulate", "--resume", "--out", str(out), "--config", str(out / "config.json"), *same])
    # Assert
    assert code == 0, capsys.readouterr().err
    assert [int(r["round"]) for r in _rows(out / "metrics.csv")] == [1, 2, 3]
    assert json.loads((out / "summary.json").read_text())["status"] == "completed"
