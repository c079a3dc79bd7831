"""Chaos over loopback: client processes killed and frozen, the server killed with SIGKILL and resumed.

Real processes (``python -m fl server`` / ``client``), as a deployment runs
them. Every wait is bounded and every process is killed in ``finally``.
"""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEARTBEAT = ["--heartbeat", "0.3", "--heartbeat-misses", "3"]  # a silent peer is gone after ~0.9 s
DEADLINE_S = 150.0

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs POSIX signals")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rounds(out: Path) -> list[int]:
    try:
        with open(out / "metrics.csv", newline="") as fh:
            return [int(row["round"]) for row in csv.DictReader(fh) if row.get("round", "").isdigit()]
    except (OSError, ValueError, KeyError):
        return []


def _spawn(args: list[str], log: Path) -> subprocess.Popen:
    fh = open(log, "ab")
    try:
        return subprocess.Popen([sys.executable, "-m", "fl", *args], cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
    finally:
        fh.close()


def _server(port: int, out: Path, log: Path, *, resume: bool, run: list[str],
            network: tuple[str, ...] = ()) -> subprocess.Popen:
    args = ["server", "--port", str(port), "--out", str(out), *HEARTBEAT, *network]
    return _spawn(args + (["--resume"] if resume else run), log)


def _client(port: int, index: int, n: int, log: Path, data: list[str]) -> subprocess.Popen:
    return _spawn(["client", "--port", str(port), "--client-id", f"site_{index:02d}", *data,
                   "--partition-id", str(index), "--num-partitions", str(n), "--reconnect", "60"], log)


def _wait_until(condition, timeout: float, what: str, procs: list[subprocess.Popen] = ()) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def _kill_all(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGCONT)
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover - a process the kernel will not reap
            pass


def _logs(tmp_path: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}" for p in sorted(tmp_path.glob("*.log")))


def test_killed_and_frozen_clients_and_a_killed_server_still_complete_every_round_once(tmp_path):
    # Prepare: a server and 10 client processes (an MLP, so rounds last long enough for things to go wrong)
    rng = random.Random(11)
    rounds, n_clients = 14, 10
    data = ["--dataset", "digits", "--seed", "2"]
    run = [*data, "--model", "mlp", "--local-epochs", "3", "--rounds", str(rounds), "--min-clients", "5",
           "--round-timeout", "30", "--wait", "60"]
    port, out = _free_port(), tmp_path / "run"
    procs: list[subprocess.Popen] = []
    try:
        server = _server(port, out, tmp_path / "server.log", resume=False, run=run)
        procs.append(server)
        clients = [_client(port, i, n_clients, tmp_path / f"client{i}.log", data) for i in range(n_clients)]
        procs += clients
        # Execute: 3 clients killed at random rounds, one frozen, the server killed once and resumed
        victims = rng.sample(clients, 4)
        frozen, killed = victims[0], victims[1:]
        kill_at = sorted(rng.sample(range(2, 9), 3))
        for proc, at in zip(killed, kill_at):
            _wait_until(lambda: len(_rounds(out)) >= at, 90, f"round {at}\n{_logs(tmp_path)}")
            os.killpg(proc.pid, signal.SIGKILL)
            if at == kill_at[0]:
                os.killpg(frozen.pid, signal.SIGSTOP)  # silent: no pongs, no reads
        _wait_until(lambda: len(_rounds(out)) >= 10, 90, f"round 10\n{_logs(tmp_path)}")
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(10)
        # the resumed server waits for the six survivors by name (rounds would otherwise start with the first
        # five back, and a client in its reconnect backoff could miss the few rounds left)
        survivors = [f"site_{i:02d}" for i, proc in enumerate(clients) if proc not in victims]
        resumed = _server(port, out, tmp_path / "server2.log", resume=True, run=run,
                          network=("--expect-clients", ",".join(survivors)))
        procs.append(resumed)
        resumed.wait(DEADLINE_S)
        # Assert
        assert resumed.returncode == 0, _logs(tmp_path)
        assert _rounds(out) == list(range(1, rounds + 1)), _logs(tmp_path)
        summary = json.loads((out / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["resumed_after_rounds"]
        events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines() if line.strip()]
        frozen_id = f"site_{clients.index(frozen):02d}"
        assert any(e.get("type") == "leave" and e.get("client_id") == frozen_id and "heartbeat" in str(e.get("reason"))
                   for e in events), "the frozen client was not declared gone by its missed heartbeats"
        last = [e for e in events if e.get("type") == "round"][-1]
        assert last["n_fit_clients"] >= 6  # the survivors came back to the resumed server
    finally:
        _kill_all(procs)


def test_a_killed_and_resumed_server_ends_with_the_uninterrupted_runs_numbers(tmp_path):
    # Prepare: the same run twice with client processes that reconnect; logistic regression (L-BFGS) keeps no
    # client state between rounds, so the only state that matters is the server's checkpoint
    rounds, n_clients = 30, 4
    data = ["--dataset", "digits", "--seed", "5"]
    run = [*data, "--model", "logreg", "--rounds", str(rounds), "--min-clients", str(n_clients), "--wait", "60"]

    def one_run(name: str, kill_at: int | None) -> dict:
        port, out = _free_port(), tmp_path / name
        procs: list[subprocess.Popen] = []
        try:
            server = _server(port, out, tmp_path / f"{name}-server.log", resume=False, run=run)
            procs.append(server)
            procs += [_client(port, i, n_clients, tmp_path / f"{name}-client{i}.log", data) for i in range(n_clients)]
            if kill_at is not None:
                _wait_until(lambda: len(_rounds(out)) >= kill_at, 90, f"round {kill_at}\n{_logs(tmp_path)}")
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(10)
                server = _server(port, out, tmp_path / f"{name}-server2.log", resume=True, run=run)
                procs.append(server)
            server.wait(DEADLINE_S)
            assert server.returncode == 0, _logs(tmp_path)
            assert _rounds(out) == list(range(1, rounds + 1))
            return json.loads((out / "summary.json").read_text())
        finally:
            _kill_all(procs)

    # Execute
    straight = one_run("straight", None)
    resumed = one_run("resumed", kill_at=8)
    # Assert
    assert resumed["resumed_after_rounds"] and resumed["status"] == "completed"
    for key in ("accuracy", "loss", "f1_macro"):
        assert abs(straight["final_metrics"][key] - resumed["final_metrics"][key]) <= 1e-9, key
