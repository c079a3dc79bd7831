"""What a hostile site writes is kept bounded and printed inert: 300 KB metric strings, ANSI escapes, forged lines.

A run keeps a site's words (metrics, reasons, labels) in events.jsonl,
clients.csv and the live state for good, and prints many on the operator's
terminal. Loopback only; every process is killed and every thread joined.
"""

from __future__ import annotations

import csv
import socket
import threading
import time

import pytest

from fl.federation.checkpoint import Checkpoint
from fl.federation.client import ClientSettings, FederatedClient, LocalData
from fl.federation.events import EventType, describe_event, make_event
from fl.federation.server import ServerSettings
from fl.runs import hosting
from fl.runs.config import RunConfig
from fl.cli.console import client_printer, progress_printer
from fl.runs.store import CLIENTS_COLUMNS, MAX_LIST_CELL, RunWriter, _cell, _rows_up_to
from fl.wire import Error, Hello, Welcome
from fl.wire.reference_peer import Connection
from fl.wire.text import MAX_TEXT, capped, safe, shown
from tests.test_cli import Processes, _listening_port

HUGE = 300_000
ESCAPES = "\x1b[2J\x1b[31mOWNED\x1b]0;title\x07\rround 9/9  accuracy 1.0000\n\u202egnp.exe\x9b"
CSV_DEFAULT_LIMIT = 131_072  # the csv module's own field limit


@pytest.fixture
def default_csv_limit():
    """The csv module's field limit as a fresh process has it (a reader may have raised it); restored after."""
    before = csv.field_size_limit(CSV_DEFAULT_LIMIT)
    yield
    csv.field_size_limit(before)


class Hostile(FederatedClient):
    """A site that trains honestly but reports metrics as 300 KB strings (fit and evaluate alike)."""

    def handle_fit(self, msg):
        result = super().handle_fit(msg)
        result.metrics.update(train_accuracy="A" * HUGE, train_loss=ESCAPES, train_time_s=["x" * HUGE])
        return result

    def handle_evaluate(self, msg):
        result = super().handle_evaluate(msg)
        result.metrics.update(accuracy="B" * HUGE)
        return result


def _clients(plan, host: str, port: int, kinds: dict[str, type], stop: threading.Event):
    results: dict[str, object] = {}
    threads = []
    for i, (cid, kind) in enumerate(kinds.items()):
        X, y = plan.data.client_data(i)
        client = kind(cid, LocalData(X, y, list(plan.data.dataset.feature_names)),
                      ClientSettings(host, port, connect_timeout_s=20, reconnect_s=0), stop=stop)
        thread = threading.Thread(target=lambda c=client: results.__setitem__(c.client_id, c.run()),
                                  name=f"fl-test-{cid}", daemon=True)
        thread.start()
        threads.append(thread)
    return results, threads


def test_a_300_kb_metric_string_is_capped_and_the_run_resumes_from_the_command_line(tmp_path, default_csv_limit,
                                                                                      no_thread_leaks):
    # Prepare: a hosted 4-round run with an honest and a hostile site, stopped after round 2
    out = tmp_path / "run"
    config = RunConfig(dataset="iris", model="logreg", partition="iid", clients=2, min_clients=2, rounds=4,
                       seed=1).validate()
    stopped = threading.Event()
    handle = hosting.host(config, ServerSettings(port=0, wait_for_clients=2, join_timeout_s=30), out_dir=str(out),
                          on_event=lambda e: stopped.set() if e["type"] == "round" and e["round"] == 2 else None)
    stop = threading.Event()
    results, threads = _clients(handle.plan, *handle.server.address, {"honest": FederatedClient, "hostile": Hostile},
                                stop)
    try:
        assert stopped.wait(60), "round 2 never came"
        handle.stop()
        handle.wait(30)
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)
    assert handle.result is not None and handle.result.status == "stopped"
    # Execute: what a reader with the csv module's default limit sees, then --resume as a user runs it
    with open(out / "clients.csv", newline="") as fh:
        rows_before = list(csv.DictReader(fh))
    procs = Processes()
    try:
        server = procs.spawn("server_new.py", "--port", "0", "--out", str(out), "--resume", "--wait", "60")
        port = _listening_port(server)
        stop = threading.Event()
        results, threads = _clients(handle.plan, "127.0.0.1", port, {"h0": FederatedClient, "h1": FederatedClient},
                                    stop)
        stdout, stderr = server.communicate(timeout=120)
        for thread in threads:
            thread.join(15)
    finally:
        procs.close()
    # Assert: the resume went on to round 4; every cell a site sent is capped, and saying so
    assert server.returncode == 0, stderr
    assert "round 3/4" in stdout and "round 4/4" in stdout and "Traceback" not in stderr
    with open(out / "clients.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    # its results are refused (a metric that is no number cannot be true), with a reason short enough to keep
    hostile = [r for r in rows_before if r["client_id"] == "hostile" and r["status"] == "rejected"]
    assert hostile and all("is not a number" in r["reason"] and not r["train_accuracy"] for r in hostile)
    assert all(len(r["reason"]) < MAX_TEXT for r in hostile)
    assert max(len(cell) for row in rows for cell in row.values() if cell) <= MAX_TEXT
    assert [int(r["round"]) for r in rows if r["client_id"] == "hostile"] == [1, 2]
    events = (out / "events.jsonl").read_text().splitlines()
    assert max(len(line) for line in events) < 20 * MAX_TEXT  # no event line carries the 300 KB
    assert all(results[cid].ok for cid in ("h0", "h1"))


def test_resume_reads_a_clients_csv_written_before_cells_were_capped(tmp_path, default_csv_limit):
    # Prepare: clients.csv as an older build wrote it, a 300 KB cell in round 1 (the default reader fails on it)
    with open(tmp_path / "clients.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(CLIENTS_COLUMNS)
        writer.writerow([1, "hostile", 10, "ok", "", 0.1, 0.5, "A" * HUGE] + [""] * (len(CLIENTS_COLUMNS) - 8))
        writer.writerow([2, "hostile", 10, "ok", "", 0.1, 0.5, 0.9] + [""] * (len(CLIENTS_COLUMNS) - 8))
    with open(tmp_path / "clients.csv", newline="") as fh, pytest.raises(csv.Error, match="field larger"):
        list(csv.DictReader(fh))
    ckpt = Checkpoint(round=1, rounds=[{"round": 1, "accuracy": 0.5}], rng_state={}, model={}, strategy={},
                      task={}, run_id="r1")
    csv.field_size_limit(CSV_DEFAULT_LIMIT)
    # Execute
    RunWriter(tmp_path, {}, "r1", resume=ckpt)
    # Assert: round 1 kept, its cell capped; the file now reads with the default limit
    csv.field_size_limit(CSV_DEFAULT_LIMIT)
    with open(tmp_path / "clients.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["round"] for r in rows] == ["1"] and rows[0]["train_accuracy"] == capped("A" * HUGE)
    assert len(_rows_up_to(tmp_path / "clients.csv", 1)) == 1


def test_make_event_caps_a_peers_text_and_list_cells_keep_whole_values():
    # Prepare / Execute
    event = make_event(EventType.LEAVE, client_id="x", reason="r" * HUGE, n=3)
    long_list = _cell([0.123456789] * 5000)
    # Assert
    assert event["reason"] == capped("r" * HUGE) and event["reason"].endswith("… (300,000 characters)")
    assert len(event["reason"]) == MAX_TEXT and event["n"] == 3
    assert len(long_list) <= MAX_LIST_CELL and long_list.endswith(";… (5,000 values)")
    assert long_list.split(";")[0] == "0.123457" and _cell([0.5, None, 2]) == "0.5;;2"
    assert _cell({"a": "b" * HUGE}).endswith("characters)") and _cell(True) is True and _cell(None) == ""


# ---------------------------------------------------------------------- the terminal
def test_shown_escapes_every_control_and_bidi_character_and_keeps_text():
    # Execute
    out = shown(ESCAPES)
    # Assert: no control character survives; each is written as its escape; ordinary text is untouched
    assert not any(ord(ch) < 0x20 or 0x7f <= ord(ch) <= 0x9f or ch in "\u202e\u2066\u2028" for ch in out)
    assert out.startswith("\\x1b[2J\\x1b[31mOWNED\\x1b]0;title\\x07\\rround 9/9")
    assert "\\n\\u202egnp.exe\\x9b" in out
    assert shown("Long Beach, VA: 42 rows, é ü 中文 ✓") == "Long Beach, VA: 42 rows, é ü 中文 ✓"
    assert shown(shown(ESCAPES)) == shown(ESCAPES)  # escaping twice changes nothing
    assert len(safe("x" * HUGE)) == MAX_TEXT


def test_event_lines_and_the_data_report_reach_stderr_escaped(capsys):
    # Prepare: what a hostile site can put in events: a reason, a refused hello's message, labels and columns
    printer = progress_printer(total_rounds=3)
    report = {"sites": [{"client_id": "s1", "rows": 5, "n_classes": 2,
                         "class_counts": {"ok": 3, f"bad{ESCAPES}": 2}}], "classes": ["ok", f"bad{ESCAPES}"],
              "n_features": 2, "columns": [{"column": f"col{ESCAPES}", "used": False, "reason": "text"}]}
    # Execute
    printer(make_event(EventType.LEAVE, client_id="s1", reason=f"client error (internal): {ESCAPES}"))
    printer(make_event(EventType.REFUSED, peer="127.0.0.1:5", code="auth", message=ESCAPES, count=1))
    printer(make_event(EventType.FAILURE, round=1, client_id="s1", reason=ESCAPES))
    printer(make_event(EventType.DATA_REPORT, report=report))
    on_attempt, on_event = client_printer("me")
    on_attempt(1, f"refused by server (auth): {ESCAPES}", 5)
    on_event(make_event(EventType.RECONNECTING, reason=ESCAPES, seconds=5))
    captured = capsys.readouterr()
    # Assert: no escape sequence, carriage return or bidi override reached the terminal; one line per message
    for stream in (captured.out, captured.err):
        assert "\x1b" not in stream and "\r" not in stream and "\u202e" not in stream and "\x9b" not in stream
    lines = captured.err.splitlines()
    assert not any(line.startswith("round 9/9") for line in lines)  # no forged line
    assert lines[0] == f"s1 left: client error (internal): {shown(ESCAPES)}"
    assert sum("\\x1b[2J" in line for line in lines) == 8  # leave, refused, failure, 3 in the report, 2 client lines
    assert describe_event(make_event(EventType.LEAVE, client_id="s1", reason=ESCAPES)) == f"s1 left: {shown(ESCAPES)}"


def test_a_hostile_clients_error_message_reaches_the_server_terminal_escaped_and_capped(tmp_path):
    # Prepare: a server process; a scripted site that joins, then leaves with an error full of escapes
    procs = Processes()
    try:
        server = procs.spawn("server_new.py", "--dataset", "iris", "--port", "0", "--min-clients", "1", "--rounds",
                             "1", "--wait", "8")
        port = _listening_port(server)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            conn = Connection(sock)
            conn.send(Hello(client_id="evil", n_samples=20, n_features=4))
            assert isinstance(conn.recv(idle_timeout=10), Welcome)
            # Execute
            conn.send(Error(code="internal", message=ESCAPES + "z" * HUGE))
            time.sleep(0.5)
        stdout, stderr = server.communicate(timeout=60)
    finally:
        procs.close()
    # Assert: the leave is one escaped line, capped; stdout carries no forged round line
    assert "\x1b" not in stderr + stdout and "\r" not in stderr + stdout
    leave = [line for line in stderr.splitlines() if line.startswith("evil left")]
    assert len(leave) == 1 and "\\x1b[2J\\x1b[31mOWNED" in leave[0] and "characters)" in leave[0]
    assert len(leave[0]) < 2 * MAX_TEXT
    assert "round 9/9" not in stdout
