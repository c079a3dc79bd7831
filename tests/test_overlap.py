"""Round r+1's fit goes out while round r is evaluated (fl/federation/rounds.py, issue 21).

The clients train the next round while the server scores this one, records
it and writes its checkpoint. A scripted peer shows what a client sees on
the wire: ``evaluate`` of r, then ``fit`` of r+1, before it has answered the
first. What comes in for the round ahead while the current round is still
collected (a result, a departure) is kept for it.
"""

from __future__ import annotations

import json
import socket
import threading

import pytest

from fl.runs import simulation
from fl.runs.config import RunConfig
from fl.wire import Bye, Evaluate, EvaluateResult, Fit, FitResult, Hello, Limits, Ping, Pong, Welcome
from fl.wire.reference_peer import Connection
from tests.test_hostile import HONEST, assert_honest_done, base_config, hosted_run, settings

pytestmark = pytest.mark.timeout(120)


class Peer:
    """A scripted client in a thread: ``script(conn, msg, welcome)`` answers each message it reads."""

    def __init__(self, client_id: str, script):
        self.port = 0
        self.client_id = client_id
        self.script = script
        self.seen: list[tuple[str, int]] = []  # (message type, round) in the order read
        self.failure: str | None = None
        self.thread = threading.Thread(target=self._run, name=f"peer-{client_id}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)

    def recv(self, conn: Connection):
        while True:
            msg = conn.recv(idle_timeout=10)
            if isinstance(msg, Ping):
                conn.send(Pong(t=msg.t))
                continue
            self.seen.append((type(msg).__name__, getattr(msg, "round", 0)))
            return msg

    def _run(self) -> None:
        conn = Connection(socket.create_connection(("127.0.0.1", self.port), timeout=10), Limits(frame_timeout_s=10))
        try:
            conn.send(Hello(client_id=self.client_id, n_samples=50, n_features=64))
            welcome = conn.recv(idle_timeout=30)
            assert isinstance(welcome, Welcome), welcome
            while not isinstance(msg := self.recv(conn), Bye):
                if self.script(self, conn, msg, welcome) == "leave":
                    return
        except Exception as exc:  # said by the test, not lost in a thread
            self.failure = f"{type(exc).__name__}: {exc}"
        finally:
            conn.close()


def answer_fit(fit: Fit) -> FitResult:
    """A lazy site: the global parameters back as its update."""
    return FitResult(round=fit.round, n_samples=50, metrics={}, params=list(fit.params))


def answer_evaluate(ev: Evaluate) -> EvaluateResult:
    return EvaluateResult(round=ev.round, n_samples=10, metrics={"accuracy": 0.5, "loss": 1.0, "f1_macro": 0.5})


def test_a_client_reads_the_next_fit_before_it_answers_an_evaluate_and_may_answer_it_first(no_thread_leaks):
    # Prepare: a peer that, given evaluate(r) of a round before the last, reads on until fit(r+1) has come
    # (it would wait in vain if the server waited for the evaluation first), then answers that fit first
    rounds = 3

    def script(peer, conn, msg, welcome):
        if isinstance(msg, Fit):
            conn.send(answer_fit(msg))
        elif isinstance(msg, Evaluate) and msg.round < rounds:
            ahead = peer.recv(conn)
            assert isinstance(ahead, Fit) and ahead.round == msg.round + 1, ahead
            conn.send(answer_fit(ahead))
            conn.send(answer_evaluate(msg))
        elif isinstance(msg, Evaluate):
            conn.send(answer_evaluate(msg))

    peer = Peer("early", script)
    # Execute
    handle, result, results, _ = hosted_run(base_config(rounds=rounds), [peer], settings(4))
    # Assert: the honest run is whole; the peer's early answers were merged and scored, none was a straggler
    assert peer.failure is None, peer.failure
    assert_honest_done(result, results, rounds)
    assert peer.seen[:3] == [("Fit", 1), ("Evaluate", 1), ("Fit", 2)]
    rows = [e for e in handle.snapshot()["events"] if e["type"] == "client_result" and e["client_id"] == "early"]
    assert [(r["round"], r["status"]) for r in rows] == [(r, "ok") for r in range(1, rounds + 1)]
    assert all(r["eval_accuracy"] == 0.5 for r in rows)
    assert [r["n_stragglers"] for r in result.rounds] == [0] * rounds
    assert [r["n_fit_clients"] for r in result.rounds] == [len(HONEST) + 1] * rounds


def test_a_client_that_leaves_during_an_evaluation_fails_the_next_rounds_fit_at_once(no_thread_leaks):
    # Prepare: a peer that trains round 1 and, asked to evaluate it, leaves once fit(2) has come too (so it was
    # drawn for round 2); the round timeout is long, so only its departure, kept for round 2, ends round 2 in time
    def script(peer, conn, msg, welcome):
        if isinstance(msg, Fit):
            conn.send(answer_fit(msg))
        elif isinstance(msg, Evaluate):
            ahead = peer.recv(conn)
            assert isinstance(ahead, Fit) and ahead.round == 2, ahead
            return "leave"

    peer = Peer("leaver", script)
    # Execute
    handle, result, results, _ = hosted_run(base_config(round_timeout=60), [peer], settings(4))
    # Assert: round 2 reports it failed as gone, without waiting out the 60 s timeout
    assert peer.failure is None, peer.failure
    assert_honest_done(result, results)
    failures = [e for e in handle.snapshot()["events"] if e["type"] == "failure" and e["client_id"] == "leaver"]
    assert [(e["round"], e["reason"].split(":")[0]) for e in failures] == [(1, "evaluation"), (2, "left mid-round")]
    assert result.rounds[1]["duration_s"] < 20


def test_round_times_add_up_to_the_runs_time(tmp_path, no_thread_leaks):
    # Prepare: a simulated run whose rounds overlap
    config = RunConfig(dataset="digits", model="logreg", clients=4, rounds=5, seed=2, workers=0)
    # Execute
    simulation.run(config, out_dir=str(tmp_path))
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    # Assert: each round counts the wall time it added (from the previous round's record), so no time is
    # counted twice: the sum is the time from round 1's start to the last round's record
    rounds = [e for e in events if e["type"] == "round"]
    start = next(e["t"] for e in events if e["type"] == "round_start")
    assert [e["type"] for e in events if e["type"] in ("round_start", "round")] == ["round_start", "round"] * 5
    assert sum(r["duration_s"] for r in rounds) == pytest.approx(rounds[-1]["t"] - start, abs=0.05)


def test_a_stop_asked_as_a_round_is_recorded_starts_no_new_round_though_its_fit_went_out(runs):
    # Prepare: round 2's fit is out while round 1 is recorded; the stop comes as round 1's record goes out
    run = runs(n_clients=2, rounds=5)
    run.client(0)
    run.client(1)
    run.listeners.append(lambda event: run.server.stop() if event["type"] == "round" and event["round"] == 1
                         else None)
    # Execute
    run.start()
    result = run.wait()
    # Assert: stopped after round 1, whose record stands; round 2 never started for the listeners
    assert result.status == "stopped"
    assert [r["round"] for r in result.rounds] == [1]
    assert [e["round"] for e in run.of("round_start")] == [1]
