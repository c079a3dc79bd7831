"""``python -m fl runs ...``: the run store from a terminal, on runs of the CLI and of the dashboard."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

from fl.runs import control, manage
from fl.runs.config import RunConfig
from fl.runs.store import RunStore

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["--dataset", "iris", "--clients", "3", "--rounds", "2", "--model", "logreg", "--partition", "iid",
         "--no-baselines", "--workers", "0"]
# rounds of a second or more on a busy machine: a run that is still going when a test looks at it
SLOW = ["--dataset", "digits", "--clients", "3", "--rounds", "300", "--model", "mlp", "--local-epochs", "5",
        "--partition", "iid", "--no-baselines", "--workers", "0"]


def env(root: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "FL_RUNS_DIR": str(root)}


def fl(root: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fl", *args], cwd=ROOT, env=env(root), capture_output=True,
                          text=True, timeout=timeout)


def start_fl(root: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "fl", *args], cwd=ROOT, env=env(root), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def end(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=30)


def wait_for(condition, timeout: float = 90.0, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"not within {timeout} s: {condition}")


def one_run(root: Path) -> str:
    names = [p.name for p in root.iterdir() if (p / "config.json").exists()]
    assert len(names) == 1, names
    return names[0]


def rounds_done(root: Path, run_id: str) -> int:
    try:
        return json.loads((root / run_id / "summary.json").read_text()).get("rounds_done") or 0
    except (OSError, ValueError):
        return 0


def one_line_error(done: subprocess.CompletedProcess, needle: str) -> None:
    assert done.returncode == 2, done
    assert needle in done.stderr and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A completed CLI run, started without --out: kept in the store (one for the module's tests that only
    read it)."""
    root = tmp_path_factory.mktemp("store") / "runs"
    done = fl(root, "simulate", *QUICK)
    assert done.returncode == 0, done.stderr
    run_id = one_run(root)
    assert f"run {run_id} kept in" in done.stderr
    return root, run_id


@pytest.fixture
def finished(stored, tmp_path):
    """The completed run, in a store of this test's own (it may delete it)."""
    root, run_id = stored
    shutil.copytree(root, tmp_path / "runs")
    return tmp_path / "runs", run_id


# ---------------------------------------------------------------------- finished runs
def test_a_simulate_without_out_is_kept_in_the_store_and_listed(stored):
    # Prepare
    root, run_id = stored
    # Execute
    table = fl(root, "runs", "list")
    as_json = fl(root, "runs", "list", "--json")
    # Assert
    assert table.returncode == 0 and as_json.returncode == 0
    header, line = table.stdout.splitlines()
    assert header.split() == ["id", "kind", "status", "dataset", "model", "rounds", "accuracy", "started"]
    assert line.split()[:6] == [run_id, "simulation", "completed", "iris", "logreg", "2/2"]
    [row] = json.loads(as_json.stdout)
    assert row["run_id"] == run_id and row["status"] == "completed" and row["rounds_done"] == 2
    assert row["rounds"] == 2 and 0 < row["accuracy"] <= 1 and row["started_at"] > 0
    assert not (root / run_id / control.LIVE_FILE).exists()  # an ended run leaves no live file


def test_show_gives_config_summary_and_last_rounds_by_a_part_of_the_id(stored, tmp_path):
    # Prepare
    root, run_id = stored
    # Execute
    text = fl(root, "runs", "show", run_id[-6:])
    as_json = fl(root, "runs", "show", run_id, "--json", "--rounds", "1")
    by_path = fl(tmp_path, "runs", "show", str(root / run_id))  # a run directory anywhere (--out DIR)
    # Assert
    assert by_path.returncode == 0 and f"run {run_id}  (simulation, completed)" in by_path.stdout
    assert text.returncode == 0, text.stderr
    assert f"run {run_id}  (simulation, completed)" in text.stdout
    assert "rounds    2/2" in text.stdout and "round 2/2  accuracy" in text.stdout
    assert "dataset                iris" in text.stdout
    assert "took part 3 of 3 clients" in text.stdout  # summary.json's count, said by the CLI too
    shown = json.loads(as_json.stdout)
    assert shown["config"]["model"] == "logreg" and shown["summary"]["status"] == "completed"
    assert [r["round"] for r in shown["rounds"]] == [2] and shown["live"] is False


def test_export_writes_the_runs_page_zip(stored, tmp_path):
    # Prepare
    from ui.history import zip_run

    root, run_id = stored
    # Execute
    into_dir = fl(root, "runs", "export", run_id, "--zip", str(tmp_path))
    named = fl(root, "runs", "export", run_id, "--zip", str(tmp_path / "named.zip"))
    # Assert
    assert into_dir.returncode == 0 and named.returncode == 0, into_dir.stderr + named.stderr
    assert into_dir.stdout.strip() == str(tmp_path / f"{run_id}.zip")
    with zipfile.ZipFile(tmp_path / f"{run_id}.zip") as zf:
        names = sorted(zf.namelist())
    page = zipfile.ZipFile(__import__("io").BytesIO(zip_run(RunStore(root).load(run_id))))
    assert names == sorted(page.namelist())
    assert f"{run_id}/config.json" in names and f"{run_id}/metrics.csv" in names and f"{run_id}/model.joblib" in names
    assert zipfile.is_zipfile(tmp_path / "named.zip")


def test_stop_of_an_ended_run_says_so_and_delete_removes_it(finished):
    # Prepare
    root, run_id = finished
    # Execute
    stopped = fl(root, "runs", "stop", run_id)
    deleted = fl(root, "runs", "delete", run_id)
    listed = fl(root, "runs", "list", "--json")
    # Assert
    assert stopped.returncode == 1 and stopped.stdout.strip() == (f"run {run_id} is not running: it completed; "
                                                                  "nothing to stop")
    assert not (root / run_id / control.STOP_FILE).exists() or not (root / run_id).exists()
    assert deleted.returncode == 0 and deleted.stdout.strip() == f"deleted run {run_id}"
    assert not (root / run_id).exists() and json.loads(listed.stdout) == []


@pytest.mark.parametrize("args, needle", [
    (["runs", "show", "nothing-here"], "no run 'nothing-here'"),
    (["runs", "delete", "bad id"], "is not a run id"),
    (["runs", "show", "../nowhere"], "is not a run directory"),
    (["runs", "export", "RUN"], "add --zip"),
    (["runs"], "say what to do"),
    (["runs", "follow"], "the following arguments are required: ID"),
    (["runs", "stop", "RUN", "--wait", "soon"], "invalid float value"),
])
def test_bad_input_is_one_line_and_exit_code_2(stored, args, needle):
    # Prepare
    root, run_id = stored
    # Execute
    done = fl(root, *[run_id if a == "RUN" else a for a in args])
    # Assert
    one_line_error(done, needle)


def test_resume_continues_a_stopped_run_as_the_runs_page_does(tmp_path):
    # Prepare: a run stopped after its second round (in this process, as the Runs page's tests do)
    from fl.runs import simulation

    root = tmp_path / "runs"
    handle = simulation.start(RunConfig(partition="iid", dataset="iris", clients=3, rounds=5, model="logreg",
                                        workers=0), store=RunStore(root))
    wait_for(lambda: handle.state.current_round >= 3 or handle.result is not None, timeout=60, every=0.01)
    handle.stop()
    assert handle.wait(30) is not None and handle.result.status == "stopped"
    before = rounds_done(root, handle.run_id)
    # Execute
    done = fl(root, "runs", "resume", handle.run_id, timeout=180)
    again = fl(root, "runs", "resume", handle.run_id)
    # Assert
    assert done.returncode == 0, done.stderr
    assert f"resuming run {handle.run_id} after round {before}" in done.stderr
    round_lines = [line for line in done.stdout.splitlines() if line.startswith("round ")]
    assert len(round_lines) == 5 - before and done.stdout.splitlines()[-1].startswith("completed:")
    summary = RunStore(root).load(handle.run_id).summary
    assert summary["status"] == "completed" and summary["rounds_done"] == 5
    assert summary["resumed_after_rounds"] == [before]
    one_line_error(again, "completed: there is nothing to resume")


# ---------------------------------------------------------------------- live runs of the CLI
def test_a_cli_run_is_listed_live_followed_and_stopped_from_another_process(tmp_path):
    # Prepare: a long simulate, without --out, in its own process
    root = tmp_path / "runs"
    sim = start_fl(root, "simulate", *SLOW)
    follower = None
    try:
        run_id = wait_for(lambda: root.exists() and next((p.name for p in root.iterdir()), None))
        wait_for(lambda: rounds_done(root, run_id) >= 1)
        follower = start_fl(root, "runs", "follow", run_id)
        listed = json.loads(fl(root, "runs", "list", "--json").stdout)
        refused = fl(root, "runs", "delete", run_id)
        # Execute
        stopped = fl(root, "runs", "stop", run_id)
        sim_out, _ = sim.communicate(timeout=60)
        follow_out, follow_err = follower.communicate(timeout=60)
    finally:
        end(sim)
        if follower is not None:
            end(follower)
    # Assert
    assert listed[0]["run_id"] == run_id and listed[0]["status"] == "running" and listed[0]["pid"] == sim.pid
    one_line_error(refused, f"run {run_id} is running (pid {sim.pid} on")
    assert stopped.returncode == 0, stopped.stderr
    summary = RunStore(root).load(run_id).summary
    assert summary["status"] == "stopped" and summary["rounds_done"] < 300
    assert stopped.stdout.strip() == f"run {run_id} was stopped after round {summary['rounds_done']}"
    assert sim.returncode == 1 and sim_out.splitlines()[-1].startswith("stopped:")
    assert_stopped_within_its_round(root / run_id)
    follow_lines = follow_out.splitlines()
    assert follower.returncode == 0 and f"following run {run_id}" in follow_err
    assert follow_lines[-1].startswith("stopped: accuracy")
    assert [line.split()[1] for line in follow_lines[:-1]] == [f"{n}/300" for n in range(1, summary["rounds_done"] + 1)]
    for name in (control.LIVE_FILE, control.STOP_FILE):
        assert not (root / run_id / name).exists()


def round_in_flight_at_the_stop(directory: Path) -> int:
    """The last round that started before the run asked itself to stop (events.jsonl's own clock)."""
    events = [json.loads(line) for line in (directory / "events.jsonl").read_text().splitlines()]
    asked = next(e for e in events if e["type"] == "done")["stop_requested_t"]
    return max(e["round"] for e in events if e["type"] == "round_start" and e["t"] <= asked)


def assert_stopped_within_its_round(directory: Path) -> None:
    """No round started after the stop was asked, and it was asked (the watcher saw the file) within a poll or
    two of the request."""
    events = [json.loads(line) for line in (directory / "events.jsonl").read_text().splitlines()]
    done = next(e for e in events if e["type"] == "done")
    asked = done["stop_requested_t"]
    assert all(e["t"] <= asked for e in events if e["type"] == "round_start")


def test_a_killed_process_leaves_its_run_interrupted_not_running(tmp_path):
    # Prepare
    root = tmp_path / "runs"
    sim = start_fl(root, "simulate", *SLOW)
    try:
        run_id = wait_for(lambda: root.exists() and next((p.name for p in root.iterdir()), None))
        wait_for(lambda: rounds_done(root, run_id) >= 1)
        # Execute
        sim.send_signal(signal.SIGKILL)
        sim.communicate(timeout=30)
    finally:
        end(sim)
    listed = fl(root, "runs", "list", "--json")
    stopped = fl(root, "runs", "stop", run_id)
    # Assert
    assert json.loads(listed.stdout)[0]["status"] == "interrupted"
    assert stopped.returncode == 1 and stopped.stdout.strip() == (
        f"run {run_id} is not running: it was interrupted (its process {sim.pid} is gone); nothing to stop")
    assert not (root / run_id / control.STOP_FILE).exists()


# ---------------------------------------------------------------------- a dashboard run, from the CLI
def test_a_dashboard_run_is_followed_and_stopped_by_the_cli_within_its_round(app_env, no_thread_leaks):
    # Prepare: a run started as the Run page's Start does (the process-wide registry of ui/app_state.py)
    from ui.app_state import registry

    handle = registry().start(RunConfig(dataset="digits", clients=3, rounds=300, model="mlp", local_epochs=5,
                                        partition="iid", workers=0))
    wait_for(lambda: handle.state.rounds)
    asked: dict = {}

    def watch_for_the_request() -> None:  # when the CLI's request lands, which round is in flight
        path = handle.writer.dir / control.STOP_FILE
        while handle.result is None and not asked:
            if path.exists():
                asked.update(round=handle.state.current_round, t=time.time())
            time.sleep(0.02)

    watcher = threading.Thread(target=watch_for_the_request, daemon=True)
    watcher.start()
    follower = start_fl(app_env, "runs", "follow", handle.run_id)
    try:
        listed = json.loads(fl(app_env, "runs", "list", "--json").stdout)
        # Execute
        stopped = fl(app_env, "runs", "stop", handle.run_id)
        follow_out, _ = follower.communicate(timeout=60)
    finally:
        end(follower)
        handle.stop()
        handle.wait(30)
        watcher.join(5)
    # Assert
    assert listed[0]["run_id"] == handle.run_id and listed[0]["status"] == "running"
    assert listed[0]["pid"] == os.getpid()
    assert stopped.returncode == 0, stopped.stderr
    assert handle.result is not None and handle.result.status == "stopped"
    summary = RunStore(app_env).load(handle.run_id).summary
    assert summary["status"] == "stopped"
    # the round in flight when the run's watcher (polling every 0.5 s) asked to stop was abandoned: none
    # finished after it (the round the test saw when the file appeared may be a round or two earlier)
    assert summary["rounds_done"] <= round_in_flight_at_the_stop(handle.writer.dir)
    assert asked["round"] <= summary["rounds_done"] + 1
    assert handle.server.stop_requested_at - asked["t"] < 2.0  # the watcher polls every 0.5 s
    assert_stopped_within_its_round(handle.writer.dir)
    assert follow_out.splitlines()[-1].startswith("stopped: accuracy")
    assert stopped.stdout.strip() == f"run {handle.run_id} was stopped after round {summary['rounds_done']}"


# ---------------------------------------------------------------------- the mechanism itself
def test_liveness_needs_a_running_status_a_live_file_a_process_and_a_fresh_heartbeat(tmp_path):
    # Prepare
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"status": "running"}))
    # Execute / Assert: no live file, a run from before them or one that crashed before writing it
    assert control.liveness(run).status == "interrupted"
    control.mark_live(run, "run")
    assert control.liveness(run).live and control.liveness(run).pid == os.getpid()
    old = time.time() - control.STALE_S - 5
    os.utime(run / control.LIVE_FILE, (old, old))
    stale = control.liveness(run)
    assert not stale.live and stale.status == "interrupted" and "no heartbeat" in stale.why
    (run / control.LIVE_FILE).write_text(json.dumps({"pid": 2 ** 22 + 7, "host": control.this_host()}))
    assert "is gone" in control.liveness(run).why
    (run / "summary.json").write_text(json.dumps({"status": "completed"}))
    assert control.liveness(run) == control.Liveness(False, "completed")


def test_a_request_left_from_an_ended_run_never_stops_the_next_one(tmp_path):
    # Prepare: a stop request that arrived as the run ended
    run = tmp_path / "run"
    run.mkdir()
    (run / control.STOP_FILE).write_text("{}")
    # Execute: the run is resumed (its directory opened again)
    control.mark_live(run, "run")
    # Assert
    assert not (run / control.STOP_FILE).exists()


def test_the_watcher_calls_stop_once_and_cleans_up(tmp_path):
    # Prepare
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"status": "running"}))
    control.mark_live(run, "run")
    calls: list[float] = []
    watcher = control.RunWatcher(run, "run", stop=lambda: calls.append(time.monotonic()))
    watcher.start()
    try:
        # Execute
        asked = time.monotonic()
        assert control.request_stop(run).live
        wait_for(lambda: calls, timeout=5, every=0.02)
        time.sleep(2 * control.POLL_S)
    finally:
        watcher.close()
    # Assert
    assert len(calls) == 1 and calls[0] - asked < 2 * control.POLL_S
    assert not watcher.thread.is_alive()
    assert not (run / control.LIVE_FILE).exists() and not (run / control.STOP_FILE).exists()


def test_the_runs_page_sees_live_runs_of_other_processes(tmp_path):
    # Prepare: a stored run some other process runs (its live file, its status)
    root = tmp_path / "runs"
    store = RunStore(root)
    writer = store.create("20990101-000000-abcdef", RunConfig(dataset="iris").to_dict())
    control.mark_live(writer.dir, writer.run_id)
    # Execute
    from ui.history import delete_run, runs_frame
    from fl.runs.run_registry import RunRegistry

    live = manage.live_ids(store.list())
    refused = delete_run(store, RunRegistry(store), writer.run_id)
    # Assert
    assert live == {writer.run_id}
    assert runs_frame(store.list(), live)["Status"].tolist() == ["running"]
    assert refused is not None and "running in another process" in refused and writer.dir.exists()


def test_the_runs_page_stops_a_run_of_another_process(app_env):
    # Prepare: a live run of "another process" in the page's store (its live file, its status)
    from tests.apptest_helpers import new_app

    writer = RunStore(app_env).create("20990101-000000-abcdef", RunConfig(dataset="iris").to_dict())
    control.mark_live(writer.dir, writer.run_id)
    at = new_app()
    at.switch_page("app_pages/runs.py").run()
    at.session_state[at.dataframe[0].key] = {"selection": {"rows": [0], "columns": [], "cells": []}}
    at.run()
    # Execute
    at.button(key=f"stop_{writer.run_id}").click().run()
    # Assert
    assert not at.exception
    assert (writer.dir / control.STOP_FILE).exists()
    assert any("Asked run 20990101-000000-abcdef to stop" in i.value for i in at.info)


def test_a_server_without_out_is_kept_in_the_store_and_resumed_only_as_a_hosted_run(tmp_path):
    # Prepare: a hosted run that no client joins (it fails after --wait)
    root = tmp_path / "runs"
    served = fl(root, "server", "--dataset", "iris", "--port", "0", "--wait", "1", "--rounds", "2")
    run_id = one_run(root)
    # Execute
    listed = json.loads(fl(root, "runs", "list", "--json").stdout)
    resumed = fl(root, "runs", "resume", run_id)
    # Assert
    assert served.returncode == 1 and f"run {run_id} kept in" in served.stderr
    assert listed[0]["kind"] == "hosted" and listed[0]["status"] == "failed"
    one_line_error(resumed, f"run {run_id} is a hosted run: resume it with python -m fl server --out")
