"""Worker processes started warm: forked or from the forkserver, waiting for their job, never left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from fl.runs import processes
from fl.runs.baselines import compute_baselines
from fl.runs.baselines_aside import AsideChild, compute_aside
from fl.runs.build import build_run
from fl.runs.config import RunConfig
from fl.runs.workers import HostProcesses, HostSpec
from tests.test_cli import ENV, ROOT


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as status:
            return "State:\tZ" not in status.read()
    except OSError:
        return False


def test_children_come_from_the_forkserver_warmed_once():
    # Prepare / Execute: a thread or none, the same way (forking this process itself is never safe: a thread
    # that `threading` does not list, or scikit-learn's OpenMP pool, may hold a lock)
    method = processes.context().get_start_method()
    # Assert
    assert method == "forkserver"
    assert processes.start_seconds() == processes.WARM_START_S  # started once: warm from now on


def test_host_processes_the_run_did_not_need_end_when_closed():
    # Prepare
    hosts = HostProcesses(2)
    pids = [proc.pid for proc in hosts.procs]
    # Execute: the run ended before it gave them a host (its server could not start)
    started = time.monotonic()
    hosts.close()
    # Assert: they read the end of their pipe and left by themselves, at once
    assert time.monotonic() - started < 5
    assert [proc.exitcode for proc in hosts.procs] == [0, 0]
    assert not any(_alive(pid) for pid in pids)


def test_a_host_that_fails_says_why_and_one_that_died_says_its_exit_code():
    # Prepare: a host whose config cannot be read, and one killed before it was given its host
    failing, dead = HostProcesses(1), HostProcesses(1)
    spec = HostSpec(config={"dataset": "no such dataset"}, host="127.0.0.1", port=9, indices=[0])
    dead.procs[0].kill()
    dead.procs[0].join(5)
    # Execute / Assert: errors, not a wait for results that never come
    with pytest.raises(RuntimeError, match="worker process fl-host-0: "):
        failing.run([spec])
    with pytest.raises(RuntimeError, match=r"ended \(exit code -9\) without its clients' results"):
        dead.run([spec])
    assert not any(proc.is_alive() for proc in failing.procs + dead.procs)


def test_the_baselines_child_gives_the_numbers_of_this_process():
    # Prepare
    plan = build_run(RunConfig(dataset="breast_cancer", clients=3, rounds=1, model="logreg", seed=3))
    # Execute: in a child started before (as a run starts it), and here
    aside = compute_aside(plan.config, plan.data, plan.client_ids, child=AsideChild(nice=0))
    here = compute_baselines(plan.config, plan.data, plan.client_ids)
    # Assert
    assert aside == here


def test_a_baselines_child_that_died_leaves_the_work_to_this_process():
    # Prepare
    plan = build_run(RunConfig(dataset="iris", clients=2, rounds=1, model="logreg"))
    child = AsideChild(nice=0)
    child.proc.kill()
    child.proc.join(5)
    # Execute
    result = compute_aside(plan.config, plan.data, plan.client_ids, child=child)
    # Assert: computed here, the same numbers
    assert result == compute_baselines(plan.config, plan.data, plan.client_ids)


def test_children_end_when_the_process_that_started_them_is_killed():
    # Prepare: a process that starts a host and a baselines child, as a run does, then waits (their parent is the
    # forkserver: they watch the process that asked for them)
    script = textwrap.dedent("""
        import sys, time
        from fl.runs.baselines_aside import AsideChild
        from fl.runs.workers import HostProcesses
        if __name__ == "__main__":
            hosts, aside = HostProcesses(1), AsideChild(nice=0)
            print(hosts.procs[0].pid, aside.proc.pid, flush=True)
            time.sleep(120)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=ROOT, env=ENV)
    try:
        pids = [int(pid) for pid in parent.stdout.readline().split()]
        assert len(pids) == 2 and all(_alive(pid) for pid in pids)
        # Execute: the parent is killed (no chance to stop its children)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        # Assert: no orphan runs on
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in pids)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)


def test_a_forkserver_child_does_not_run_the_main_script_again(tmp_path):
    # Prepare: a main script that notes every run of itself, with a thread (so the forkserver, not fork, starts
    # the child), as the dashboard's app.py is Streamlit's main module
    mark = tmp_path / "runs.txt"
    script = tmp_path / "main_script.py"
    script.write_text(textwrap.dedent(f"""
        import threading
        open({str(mark)!r}, "a").write(__name__ + "\\n")
        if __name__ == "__main__":
            threading.Thread(target=threading.Event().wait, daemon=True).start()
            from fl.runs.workers import HostProcesses
            hosts = HostProcesses(1)
            print(hosts.procs[0].is_alive(), flush=True)
            hosts.close()
            print(hosts.procs[0].exitcode, flush=True)
    """))
    # Execute
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=ROOT, env=ENV,
                         timeout=120)
    # Assert: the child started and ended cleanly; the script ran once, as the parent's main, never as a child's
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "0"]
    assert mark.read_text().split() == ["__main__"]


def test_ctrl_c_stops_a_run_with_worker_processes_cleanly(tmp_path):
    # Prepare: a long run with two worker processes, in a process group of its own, as in a terminal (Ctrl-C's
    # handler set first: a shell without job control starts background processes with SIGINT ignored)
    with_ctrl_c = "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); " \
                  "runpy.run_module('fl', run_name='__main__')"
    run = subprocess.Popen([sys.executable, "-c", with_ctrl_c, "simulate", "--dataset", "digits", "--clients", "20",
                            "--rounds", "500", "--model", "logreg", "--workers", "2",
                            "--out", str(tmp_path / "run")], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        lines = []
        deadline = time.monotonic() + 90
        while not any(line.startswith("round 3/") for line in lines) and time.monotonic() < deadline:
            lines.append(run.stdout.readline())
        # Execute: Ctrl-C, which a terminal sends to the whole foreground group, the workers included
        os.killpg(run.pid, signal.SIGINT)
        rest, _ = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait(10)
    # Assert: the run stopped and said so, no worker's traceback, nothing left of the group
    assert "stopped: accuracy" in rest, rest[-2000:]
    assert "Traceback" not in rest and "run did not finish" not in rest
    assert '"status": "stopped"' in (tmp_path / "run" / "summary.json").read_text()
    deadline = time.monotonic() + 10  # the forkserver and the resource tracker end once the run's process has
    while _group(run.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _group(run.pid) == []


def _group(pgid: int) -> list[str]:
    """The live processes of a process group."""
    return [pid for pid in subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True).stdout.split()
            if _alive(int(pid))]


def test_the_command_line_s_workers_give_the_numbers_of_clients_in_its_own_process(tmp_path):
    # Prepare: the command line's worker processes come from the forkserver it warms as it starts
    flags = ["simulate", "--dataset", "digits", "--clients", "12", "--rounds", "3", "--model", "logreg",
             "--partition", "dirichlet", "--alpha", "0.5", "--seed", "4", "--no-baselines"]
    # Execute
    for workers in ("0", "2"):
        done = subprocess.run([sys.executable, "-m", "fl", *flags, "--workers", workers,
                               "--out", str(tmp_path / workers)], cwd=ROOT, env=ENV, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    # Assert: every round's and every client's numbers equal
    import pandas as pd

    here, there = (pd.read_csv(tmp_path / w / "metrics.csv") for w in ("0", "2"))
    assert here[["accuracy", "loss", "f1_macro"]].equals(there[["accuracy", "loss", "f1_macro"]])
    a, b = (pd.read_csv(tmp_path / w / "clients.csv") for w in ("0", "2"))
    columns = ["round", "client_id", "train_loss", "eval_accuracy"]
    assert a[columns].sort_values(columns[:2]).reset_index(drop=True).equals(
        b[columns].sort_values(columns[:2]).reset_index(drop=True))


def test_a_forkserver_started_from_another_folder_still_finds_the_engine(tmp_path):
    # Prepare: a main script outside the project, run from there, with no PYTHONPATH, that finds the engine by
    # its own sys.path (as `streamlit run /path/to/app.py` from elsewhere), and a thread. (Where the engine is
    # installed, as `pip install -e .` does in CI, the forkserver finds it anyway; without the install this
    # failed before the forkserver was given the engine's folder: the script ran again in the child.)
    mark = tmp_path / "runs.txt"
    script = tmp_path / "elsewhere.py"
    script.write_text(textwrap.dedent(f"""
        import sys, threading
        sys.path.insert(0, {str(ROOT)!r})
        open({str(mark)!r}, "a").write(__name__ + "\\n")
        if __name__ == "__main__":
            threading.Thread(target=threading.Event().wait, daemon=True).start()
            from fl.runs.workers import HostProcesses
            hosts = HostProcesses(1)
            hosts.close()
            print(hosts.procs[0].exitcode, flush=True)
    """))
    env = {k: v for k, v in ENV.items() if k != "PYTHONPATH"}
    # Execute
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, env=env,
                         timeout=120)
    # Assert: the child started and ended; the script never ran again in it (the forkserver preloaded the engine)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0"]
    assert mark.read_text().split() == ["__main__"]
