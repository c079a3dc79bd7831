"""The command line as users run it: separate server and client processes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import joblib
import pandas as pd
import pytest

from fl.data import load_dataset
from fl.data.site_summary import report_from_data, report_lines
from fl.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


def _spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


class Processes:
    def __init__(self):
        self.procs: list[subprocess.Popen] = []

    def spawn(self, *args: str) -> subprocess.Popen:
        proc = _spawn(*args)
        self.procs.append(proc)
        return proc

    def close(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=10)


@pytest.fixture
def procs():
    p = Processes()
    yield p
    p.close()


def _listening_port(server: subprocess.Popen) -> int:
    line = server.stdout.readline().strip()
    assert line.startswith("listening on 127.0.0.1:"), line
    return int(line.rsplit(":", 1)[1])


def _federation(procs: Processes, out: Path, rounds: int = 5, extra_server=(), dataset="digits", n_clients=3):
    server = procs.spawn("server_new.py", "--dataset", dataset, "--port", "0", "--min-clients", str(n_clients),
                         "--rounds", str(rounds), "--seed", "0", "--wait", "60", "--out", str(out), *extra_server)
    port = _listening_port(server)
    clients = [procs.spawn("client_new.py", "--port", str(port), "--dataset", dataset, "--partition-id", str(i),
                           "--num-partitions", str(n_clients), "--seed", "0") for i in range(n_clients)]
    return server, clients


def test_server_and_three_client_processes_are_reproducible(procs, tmp_path):
    # Prepare / Execute: the same federation twice
    columns = []
    for attempt in range(2):
        out = tmp_path / f"run{attempt}"
        server, clients = _federation(procs, out)
        stdout, stderr = server.communicate(timeout=120)
        client_out = [c.communicate(timeout=30)[0] for c in clients]
        assert server.returncode == 0, stderr
        assert all(c.returncode == 0 for c in clients)
        columns.append(pd.read_csv(out / "metrics.csv")["accuracy"].tolist())
    # Assert
    assert len(columns[0]) == 5 and columns[0] == columns[1]
    assert columns[0][-1] > 0.9
    assert stdout.count("round ") == 5  # one progress line per round
    # each client says it joined, then a line per round (training) and per evaluation, then why it left
    first = client_out[0].splitlines()
    assert first[0].startswith("client_000: connecting to 127.0.0.1:")
    assert first[1].startswith("client_000: joined run ")
    assert sum("trained in" in line and "train accuracy" in line for line in first) == 5
    assert sum("global model on local data: accuracy" in line for line in first) == 5
    assert "left (run finished) after 5 rounds" in first[-1]
    assert "joined from 127.0.0.1" in stderr and "{" not in stderr  # sentences, not dicts
    for name in ("config.json", "metrics.csv", "clients.csv", "events.jsonl", "model.joblib"):
        assert (out / name).exists(), name
    metrics = pd.read_csv(out / "metrics.csv")
    for col in ("round", "accuracy", "loss", "f1_macro", "n_fit_clients", "n_failures", "duration_s",
                "bytes_sent", "bytes_received"):
        assert col in metrics.columns
    clients_csv = pd.read_csv(out / "clients.csv")
    assert {"round", "client_id", "n_samples", "train_time_s", "train_loss", "train_accuracy"} <= set(clients_csv.columns)
    assert len(clients_csv) == 15
    ds = load_dataset("digits")
    model = joblib.load(out / "model.joblib")
    assert (model.predict(ds.X) == ds.y).mean() > 0.9  # raw feature rows in, labels out


def test_killed_client_process_does_not_stop_the_run(procs, tmp_path):
    # Prepare: large enough local data that a client spends its time training
    out = tmp_path / "run"
    server, clients = _federation(procs, out, rounds=6, dataset="digits",
                                  extra_server=("--local-epochs", "50", "--round-timeout", "30"))
    # Execute: kill one client once round 2 is done
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = server.stdout.readline()
        if line.startswith("round 2/"):
            break
    clients[2].send_signal(signal.SIGKILL)
    stdout, stderr = server.communicate(timeout=120)
    # Assert
    assert server.returncode == 0, stderr
    metrics = pd.read_csv(out / "metrics.csv")
    assert len(metrics) == 6
    assert metrics["n_fit_clients"].iloc[-1] == 2
    assert "client_002" in stderr  # reported as a failure or a leave


def _first_lines(proc: subprocess.Popen, n: int, timeout: float) -> list[str]:
    """The first n lines of proc's stdout, read in a thread so that a silent process cannot hang the test."""
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout.readline() for _ in range(n)), daemon=True)
    reader.start()
    reader.join(timeout)
    return list(lines)


def test_a_server_says_where_it_listens_first_then_what_data_it_holds(procs):
    # Prepare / Execute: a server with its own data, its stderr in the same pipe (what a terminal shows)
    # (Ctrl-C's handler set first: a process started in the background by a shell without job control
    # inherits SIGINT ignored, and Python then installs no KeyboardInterrupt at all)
    with_ctrl_c = "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); " \
                  "runpy.run_module('fl', run_name='__main__')"
    server = subprocess.Popen([sys.executable, "-c", with_ctrl_c, "server", "--dataset", "digits", "--port", "0",
                               "--wait", "60"], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    procs.procs.append(server)
    lines = _first_lines(server, 2, timeout=60)
    server.send_signal(signal.SIGINT)  # stop it as a person would: the run stops, the process exits
    rest, _ = server.communicate(timeout=30)
    # Assert: "listening on" comes first; then what the server holds, not "0 sites, 0 rows"
    assert len(lines) == 2 and re.fullmatch(r"listening on 127\.0\.0\.1:\d+\n", lines[0]), lines
    assert lines[1] == "data: the server holds 360 test rows of digits (10 classes, 64 features); clients bring " \
                       "their own\n", lines
    assert "0 sites" not in rest and server.returncode is not None


def test_a_servers_data_report_says_what_it_holds():
    # Prepare
    ds = load_dataset("iris")
    held = {"name": "iris.csv", "test_rows": 30, "validation_rows": 0}
    # Execute
    alone = report_lines(report_from_data(ds, server_holds=held))
    stacking = report_lines(report_from_data(ds, server_holds={**held, "validation_rows": 23}))
    sites = report_lines(report_from_data(ds, {"a": ds.y[:50], "b": ds.y[50:]}))
    # Assert
    assert alone[0] == "data: the server holds 30 test rows of iris.csv (3 classes, 4 features); clients bring " \
                       "their own"
    assert stacking[0].startswith("data: the server holds 30 test rows and 23 validation rows of iris.csv")
    assert sites[0].startswith("data: 2 sites, 150 rows, 4 features")


def test_simulate_writes_the_run_store(tmp_path):
    # Prepare / Execute
    out = tmp_path / "sim"
    proc = subprocess.run([sys.executable, "-m", "fl", "simulate", "--dataset", "iris", "--clients", "3",
                           "--rounds", "3", "--out", str(out)], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=120)
    # Assert
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("round ") == 3
    assert len(pd.read_csv(out / "metrics.csv")) == 3


@pytest.mark.parametrize("argv, needle", [
    (["simulate", "--model", "xgboost"], "invalid choice"),
    (["simulate", "--model", "random_forest"], "stacking"),
    (["simulate", "--clients", "0"], "clients"),
    (["simulate", "--dataset", "iris", "--clients", "500"], "clients"),
    (["simulate", "--model-params", "{oops"], "JSON"),
    (["simulate", "--csv", "/nonexistent.csv", "--target", "y"], "CSV"),
    (["client", "--port", "1"], "needs its data"),
    (["server", "--port", "0"], "--classes"),
    (["simulate", "--rounds", "many"], "invalid int"),
    (["simulate", "--dataset", "synthetic", "--n-samples", "2000000", "--n-features", "10000"],
     "would need about 894.1 GiB of memory"),
    (["simulate", "--aggregation", "krum", "--dp", "server"], "is not a mean"),
    (["simulate", "--config", "/nonexistent/config.json"], "cannot read --config"),
])
def test_bad_arguments_exit_2_with_one_line(argv, needle, capsys):
    # Prepare / Execute: in-process, as the entry points call it
    code = main(argv)
    # Assert
    assert code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert needle in lines[0]


def test_help_works_for_every_command(capsys):
    for argv in (["--help"], ["simulate", "--help"], ["server", "--help"], ["client", "--help"]):
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 0 and "usage" in capsys.readouterr().out


def test_flags_come_from_the_config_with_its_defaults_and_choices(capsys):
    # Prepare / Execute
    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    text = capsys.readouterr().out
    # Assert: a default written once in RunConfig, the registries' choices, a knob's help
    assert "(default: 0.9)" in text and "--server-momentum" in text
    assert "{fedavg,scaffold,median,trimmed_mean,krum,histograms,stacking,voting}" in text
    assert "--no-client-eval" in text and "--target-bins" in text


def test_a_saved_run_reruns_from_its_config_and_flags_override(tmp_path):
    # Prepare: a run made with some settings, its config.json kept
    first = tmp_path / "first"
    assert main(["simulate", "--dataset", "iris", "--clients", "3", "--rounds", "2", "--model", "logreg",
                 "--partition", "iid", "--out", str(first)]) == 0
    # Execute: rerun it headless, with one flag changed
    again = tmp_path / "again"
    assert main(["simulate", "--config", str(first / "config.json"), "--rounds", "3", "--out", str(again)]) == 0
    # Assert: every setting but the overridden one is the saved run's; the numbers agree where they should
    import json

    saved, rerun = (json.loads((d / "config.json").read_text()) for d in (first, again))
    assert {k: v for k, v in rerun.items() if k != "rounds"} == {k: v for k, v in saved.items() if k != "rounds"}
    assert rerun["rounds"] == 3
    a, b = pd.read_csv(first / "metrics.csv"), pd.read_csv(again / "metrics.csv")
    assert b["accuracy"].tolist()[:2] == a["accuracy"].tolist()


def test_simulate_prints_and_writes_the_three_baselines(tmp_path, capsys):
    # Prepare
    out = tmp_path / "run"
    # Execute
    code = main(["simulate", "--dataset", "iris", "--clients", "3", "--rounds", "2", "--model", "logreg",
                 "--out", str(out)])
    # Assert: the baselines' line just before the final line, the same numbers in summary.json and baselines.json
    import json

    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("completed: accuracy")
    summary = json.loads((out / "summary.json").read_text())["baselines"]
    assert summary == json.loads((out / "baselines.json").read_text())
    central, local, majority = summary["centralized"], summary["local_only"], summary["majority"]
    assert lines[-2] == (f"baselines: centralized {central['accuracy']:.4f}  local-only {local['accuracy']:.4f} "
                         f"(3 clients)  majority {majority['accuracy']:.4f} (class {majority['class']})")
    assert majority["class"] in (0, 1, 2) and local["n_clients"] == 3


def test_simulate_without_baselines_says_nothing_of_them(tmp_path, capsys):
    # Prepare / Execute
    code = main(["simulate", "--dataset", "iris", "--clients", "3", "--rounds", "1", "--model", "logreg",
                 "--no-baselines", "--out", str(tmp_path / "run")])
    # Assert
    import json

    assert code == 0
    assert "baselines" not in capsys.readouterr().out
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["baselines"] is None


def test_a_missing_baseline_is_printed_with_its_reason():
    # Prepare: the centralized fit failed, one client is left out of the local-only mean
    from fl.cli.console import baselines_lines

    baselines = {"centralized": {"accuracy": None, "loss": None, "f1_macro": None, "reason": "out of memory"},
                 "local_only": {"accuracy": 0.612, "n_clients": 9, "clients_total": 10,
                                "left_out": {"site_7": "no training rows"}},
                 "majority": {"accuracy": 0.869, "class": "no"}}
    # Execute
    line, notes = baselines_lines(baselines, "ready")
    # Assert
    assert line == ("baselines: centralized - (out of memory)  local-only 0.6120 (9 of 10 clients)  "
                    "majority 0.8690 (class no)")
    assert notes == ["baselines: local-only leaves out site_7 (no training rows)"]
    assert baselines_lines(baselines, "ready", accuracy=0.826)[1][-1] == (
        "note: the global model (0.8260) does no better than always answering the majority class no (0.8690)")
    assert baselines_lines(None, "skipped")[0] == "baselines: not computed (the run was stopped first)"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_client_without_a_server_says_it_is_waiting_then_gives_up():
    # Prepare / Execute: nothing listens on the port
    proc = subprocess.run([sys.executable, "client_new.py", "--port", str(_free_port()), "--dataset", "iris",
                           "--partition-id", "0", "--num-partitions", "2", "--connect-timeout", "1.5"],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=60)
    # Assert
    assert proc.returncode == 1
    assert "waiting for the server (attempt 1: connection refused: no server is listening there yet)" in proc.stderr
    assert "could not reach the server at 127.0.0.1:" in proc.stdout


def test_a_tls_client_against_a_plain_server_is_told_in_plain_words(procs):
    # Prepare: a plain TCP server
    server = procs.spawn("server_new.py", "--dataset", "iris", "--port", "0", "--wait", "30")
    port = _listening_port(server)
    # Execute
    proc = subprocess.run([sys.executable, "client_new.py", "--port", str(port), "--dataset", "iris",
                           "--partition-id", "0", "--num-partitions", "2", "--tls-pin", "ab" * 32],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=60)
    # Assert
    assert proc.returncode == 1
    assert "does not speak TLS (it is a plain TCP server)" in proc.stdout
    assert "WRONG_VERSION_NUMBER" not in proc.stdout + proc.stderr
