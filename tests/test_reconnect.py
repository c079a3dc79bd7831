"""Reconnecting clients: ``reconnect_s`` / ``--reconnect`` rejoins a server that went away, under the same id and
with the same local state; the server lets a dead session give way and keeps a live one's id."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fl.federation.rounds import RoundRunner
from fl.federation.server import Inbox
from fl.wire import Error, EvaluateResult, FitResult, Hello, Welcome
from fl.wire.reference_peer import Connection
from tests.liveness_helpers import OldClient, Run, crash, wait_until

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[1]


def ok_rounds(run: Run, client_id: str) -> list[int]:
    return [e["round"] for e in run.of("client_result") if e["client_id"] == client_id and e["status"] == "ok"]


def test_a_reconnecting_client_rejoins_after_its_connection_is_cut_and_trains_on(runs):
    # Prepare: two clients, one with a 10 s reconnect window; its connection is reset after round 2
    run = runs(n_clients=2, rounds=6)
    run.client(0)
    back = run.client(1, reconnect_s=10)
    cut = []

    def cut_after_round_2(event: dict) -> None:
        if event["type"] == "round" and event["round"] == 2 and not cut:
            cut.append(run.server.slot("c1").conn)
            cut[0].abort()

    def hold_round_3_until_it_is_back(event: dict) -> None:  # rounds take milliseconds: the rejoin must not race
        if event["type"] == "round" and event["round"] == 3:  # the run's end (the round thread emits this)
            wait_until(lambda: back.joins == 2, 10, "c1 to rejoin")

    run.listeners += [cut_after_round_2, hold_round_3_until_it_is_back]
    wait_until(lambda: len(run.server.active_ids()) == 2 and back.joins == 1, what="both clients")
    model = back.model
    # Execute
    run.start()
    result = run.wait()
    # Assert: it came back as itself (same object, same local model), trained in later rounds, left on bye
    assert result.status == "completed"
    assert back.joins == 2 and back.model is model
    assert len([e for e in run.of("join") if e["client_id"] == "c1"]) == 2
    assert ok_rounds(run, "c1")[-1] == 6 and len(ok_rounds(run, "c1")) >= 4
    wait_until(lambda: "c1" in run.results, 10, "c1 to leave")
    assert run.results["c1"].ok and run.results["c1"].reason == "run finished"
    # the fit of round 3 was out when the connection was cut (it goes out while round 2 is evaluated): an answer
    # the client wrote as it was cut may be lost, so the client may count one round more than the server merged
    assert run.results["c1"].rounds_trained - len(ok_rounds(run, "c1")) in (0, 1)


def test_a_client_rejoins_a_server_restarted_on_the_same_port(runs):
    # Prepare: a long run with one reconnecting client; the server crashes (no bye) after round 2
    first = runs(n_clients=1, rounds=500)
    client = first.client(0, reconnect_s=20)
    first.listeners.append(lambda e: crash(first.server) if e["type"] == "round" and e["round"] == 2 else None)
    wait_until(lambda: client.joins == 1, what="the client to join")
    model = client.model
    first.start()
    first.wait()
    # Execute: a new server on the same port, a short run
    second = runs(n_clients=1, rounds=3, port=first.port)
    second.start()
    result = second.wait()
    # Assert: the same client object rejoined and trained every round of the new server
    assert result.status == "completed" and [r["n_fit_clients"] for r in result.rounds] == [1, 1, 1]
    assert client.joins == 2 and client.model is model  # the same task: its local model was kept
    wait_until(lambda: "c0" in first.results, 10, "the client to leave")
    assert first.results["c0"].ok and first.results["c0"].reason == "run finished"


def test_without_reconnect_a_client_leaves_when_the_server_goes(runs):
    # Prepare
    run = runs(n_clients=1, rounds=500)
    run.client(0)
    run.listeners.append(lambda e: crash(run.server) if e["type"] == "round" and e["round"] == 2 else None)
    # Execute
    run.start()
    run.wait()
    wait_until(lambda: "c0" in run.results, 10, "the client to leave")
    # Assert: as before reconnecting existed
    assert not run.results["c0"].ok and run.results["c0"].reason == "server gone"


def _hello(port: int, client_id: str) -> tuple[Connection, object]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    conn = Connection(sock)
    conn.send(Hello(client_id=client_id, n_samples=20, n_features=4))
    return conn, conn.recv(idle_timeout=5)


def test_a_live_session_keeps_its_id_and_a_dead_one_gives_way(runs):
    # Prepare: heartbeats every 0.5 s, 10 misses (5 s): a silent session is not gone yet, but has missed one
    run = runs(n_clients=3, rounds=1, interval=0.5, misses=10)
    alive = OldClient(run.port, "alive", n_features=4)  # answers every ping
    try:
        wait_until(lambda: "alive" in run.server.active_ids(), what="the live client")
        silent, welcome = _hello(run.port, "quiet")  # joins, then never answers
        assert isinstance(welcome, Welcome)
        time.sleep(1.0)  # > 1.5 intervals without a word from it, and 'alive' has answered pings meanwhile
        # Execute
        double, refusal = _hello(run.port, "alive")
        returning, rejoined = _hello(run.port, "quiet")
        # Assert: the live id is not taken over; the silent one is replaced, its old session gone
        assert isinstance(refusal, Error) and refusal.code == "auth" and "already connected" in refusal.message
        assert isinstance(rejoined, Welcome)
        assert run.server.slot("quiet").conn.peer.endswith(str(returning.sock.getsockname()[1]))
        leaves = [e for e in run.of("leave") if e["client_id"] == "quiet"]
        assert [e["reason"] for e in leaves] == ["replaced by a reconnect"]
        assert run.server.active_ids() == ["alive", "quiet"]
        for conn in (silent, double, returning):
            conn.close()
    finally:
        alive.close()


def test_only_the_session_a_request_went_to_can_answer_or_fail_it(runs):
    # Prepare: c0's current session, and an earlier one under its id whose departure is still in the inbox
    run = runs(n_clients=1, rounds=1)
    run.client(0)
    wait_until(lambda: run.server.active_ids() == ["c0"], what="c0")
    current, earlier = run.server.slot("c0").conn, object()
    runner = RoundRunner(run.server, run.plan.settings, run.plan.strategy(), run.plan.server_data)
    runner.collector.sessions = {"c0": current}
    answer = FitResult(round=1, n_samples=10, metrics={})
    run.server.inbox.put((Inbox.GONE, "c0", "disconnected", earlier))
    run.server.inbox.put((Inbox.RESULT, "c0", answer, earlier))
    run.server.inbox.put((Inbox.RESULT, "c0", answer, current))
    # Execute
    results, failures = runner.collector.collect(1, FitResult, ["c0"])
    # Assert: the stale departure and the stale answer are not the new session's
    assert results == {"c0": answer} and failures == {} and runner.collector.stragglers == 0
    # ... while the departure of the session that was asked fails it at once, not at the round timeout
    runner.collector.sessions = {"c0": earlier}
    run.server.inbox.put((Inbox.GONE, "c0", "replaced by a reconnect", earlier))
    started = time.monotonic()
    results, failures = runner.collector.collect(2, EvaluateResult, ["c0"])
    assert results == {} and failures == {"c0": "left mid-round: replaced by a reconnect"}
    assert time.monotonic() - started < 1.0


def _client_process(port: int, log: Path, *extra: str) -> subprocess.Popen:
    with open(log, "wb") as fh:
        return subprocess.Popen([sys.executable, "-m", "fl", "client", "--port", str(port), "--dataset", "iris",
                                 "--partition", "iid", "--partition-id", "0", "--num-partitions", "2",
                                 "--client-id", "site", *extra],
                                cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)


def test_the_client_command_says_each_attempt_and_rejoins_a_restarted_server(runs, tmp_path):
    # Prepare: a client process with --reconnect 30; its server crashes after round 2
    first = runs(n_clients=1, rounds=500, wait_for=1)
    log = tmp_path / "client.log"
    proc = _client_process(first.port, log, "--reconnect", "30")
    try:
        first.listeners.append(lambda e: crash(first.server) if e["type"] == "round" and e["round"] == 2 else None)
        first.start()
        first.wait()
        time.sleep(1.2)  # a few attempts against a closed port
        # Execute: the server is back
        second = runs(n_clients=1, rounds=2, port=first.port)
        second.start()
        result = second.wait()
        code = proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    # Assert: one line for the loss, one per attempt, the rejoin, the end
    out = log.read_text()
    assert result.status == "completed" and code == 0, out
    assert "site: lost the server (server gone); trying to rejoin for 30 s" in out
    attempts = [line for line in out.splitlines() if "waiting for the server (attempt" in line]
    assert len(attempts) >= 2 and all("connection refused" in line for line in attempts), out
    assert "site: rejoined run" in out and "site: left (run finished) after" in out
    # and nothing about retrying once the run has ended: leaving is its last word
    assert out.strip().splitlines()[-1].startswith("site: left (run finished) after"), out
