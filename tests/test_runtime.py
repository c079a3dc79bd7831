"""The runtime that scales: one event loop for the server, hosts of many clients, worker processes."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pandas as pd

from fl.runs import simulation
from fl.runs.config import RunConfig
from tests.test_cli import ENV, ROOT, Processes, _listening_port  # noqa: F401 - procs fixture helpers
from tests.test_cli import procs  # noqa: F401 - the fixture


def _children() -> list[int]:
    """Live worker processes of this test process (from /proc; zombies excluded): its children, and the
    children of its forkserver, which starts a run's workers when this process runs threads.

    multiprocessing's (and loky's) resource tracker and the forkserver itself
    (fl/runs/processes.py) live once per parent process, for its lifetime,
    whatever the runs: not workers, not counted.
    """
    mine = os.getpid()
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        if fields.get("State", "").startswith("Z"):
            continue
        parents[int(entry.name)] = int(fields.get("PPid", "0").strip() or 0)
    out = []
    for pid, parent in parents.items():
        if parent != mine:
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_text()
        except OSError:
            continue
        if "resource_tracker" in cmdline:
            continue
        if "forkserver" in cmdline:  # not a worker; its children are
            out += [child for child, grand in parents.items() if grand == pid]
            continue
        out.append(pid)
    return out


def _described(pids: list[int]) -> list[str]:
    """What each leftover process is, for an assertion's message: pid, parent, threads, start time, command."""
    out = []
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
            cmd = Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")[:120]
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            out.append(f"{pid} ppid {fields.get('PPid', '?').strip()} threads {fields.get('Threads', '?').strip()} "
                       f"state {fields.get('State', '?').strip()} started {stat[19]} ticks: {cmd}")
        except OSError:
            out.append(f"{pid}: gone")
    return out


def _peak_threads(config: RunConfig) -> tuple[int, object]:
    """Run a simulation and sample this process's thread count at every round."""
    peak = [0]

    def listen(event: dict) -> None:
        if event["type"] == "round":
            peak[0] = max(peak[0], threading.active_count())

    handle = simulation.start(config, on_event=listen)
    result = handle.wait(120)
    return peak[0], result


def test_threads_do_not_grow_with_clients(no_thread_leaks):
    # Prepare / Execute: 5 clients, then 60, both in one host in this process
    small, a = _peak_threads(RunConfig(dataset="digits", clients=5, rounds=2, model="logreg", partition="iid",
                                       workers=0))
    large, b = _peak_threads(RunConfig(dataset="digits", clients=60, rounds=2, model="logreg", partition="iid",
                                       workers=0))
    # Assert: the same threads (server loop, round loop, host loop, its compute thread) whatever the clients
    assert a.status == b.status == "completed"
    assert large == small, (small, large)


def test_worker_processes_give_the_same_numbers_and_leave_nothing_behind(tmp_path, no_thread_leaks):
    # Prepare
    config = dict(dataset="digits", clients=12, rounds=3, model="logreg", partition="dirichlet", alpha=0.5,
                  fraction=0.5, seed=4)
    # Execute: the clients in this process, then in two worker processes
    here = simulation.run(RunConfig(**config, workers=0), out_dir=str(tmp_path / "here"))
    there = simulation.run(RunConfig(**config, workers=2), out_dir=str(tmp_path / "there"))
    # Assert: identical metrics, every client result identical, no worker process left
    assert here.status == there.status == "completed"
    assert [r["accuracy"] for r in here.rounds] == [r["accuracy"] for r in there.rounds]
    a, b = (pd.read_csv(tmp_path / d / "clients.csv") for d in ("here", "there"))
    assert a[["round", "client_id", "train_loss", "eval_accuracy"]].equals(
        b[["round", "client_id", "train_loss", "eval_accuracy"]])
    deadline = time.monotonic() + 10
    while _children() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _children() == []


def test_stop_ends_a_run_with_worker_processes_within_seconds(no_thread_leaks):
    # Prepare: a long run in two worker processes
    handle = simulation.start(RunConfig(dataset="digits", clients=20, rounds=1000, model="mlp", partition="iid",
                                        workers=2))
    deadline = time.monotonic() + 60
    while handle.snapshot()["round"] < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    # Execute
    asked = time.monotonic()
    handle.stop()
    done = handle.wait_until_done(10)  # what the Run page waits for before it says "Stopped"
    result = handle.wait(30)
    # Assert: stopped promptly; no thread (fixture) and no process (below) left
    assert done is True
    assert result is not None and result.status == "stopped"
    assert time.monotonic() - asked < 10
    deadline = time.monotonic() + 10
    while _children() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _children() == []


def test_one_client_process_hosts_a_range_of_partitions(procs, tmp_path):  # noqa: F811
    # Prepare: a server expecting 6 clients, and one client process hosting partitions 0 to 5
    out = tmp_path / "run"
    server = procs.spawn("server_new.py", "--dataset", "digits", "--port", "0", "--min-clients", "6",
                         "--rounds", "3", "--model", "logreg", "--partition", "iid", "--wait", "60", "--out", str(out))
    port = _listening_port(server)
    host = procs.spawn("client_new.py", "--port", str(port), "--dataset", "digits", "--partition", "iid",
                       "--partition-id", "0-5", "--num-partitions", "6")
    # Execute
    stdout, stderr = server.communicate(timeout=120)
    host_out, _ = host.communicate(timeout=30)
    # Assert: six clients from one process trained every round, with the simulation's partitions
    assert server.returncode == 0, stderr
    assert host.returncode == 0, host_out
    metrics = pd.read_csv(out / "metrics.csv")
    assert metrics["n_fit_clients"].tolist() == [6, 6, 6] and metrics["n_failures"].sum() == 0
    clients = pd.read_csv(out / "clients.csv")
    assert sorted(clients["client_id"].unique()) == [f"client_{i:03d}" for i in range(6)]
    assert "hosting 6 clients (client_000 to client_005)" in host_out
    assert "6 clients left after 3 rounds: 6 run finished" in host_out
    simulated = simulation.run(RunConfig(dataset="digits", clients=6, rounds=3, model="logreg", partition="iid"))
    assert metrics["accuracy"].tolist() == [r["accuracy"] for r in simulated.rounds]
