"""The server under faults: malformed frames, crashes, stragglers, bad updates, auth."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time

import numpy as np
import pytest

from fl.federation.client import ClientSettings, FederatedClient, LocalData
from fl.runs.config import RunConfig
from fl.wire import Hello, Limits, frame_to_bytes, parse_message, Error
from fl.wire.reference_peer import read_frame
from fl.federation.rounds import RoundRunner
from fl.federation.server import FederatedServer, ServerSettings
from fl.runs.build import build_run


class Harness:
    """A server plus client threads on loopback; everything is torn down by close()."""

    def __init__(self, n_clients=3, rounds=3, token=None, round_timeout=10.0, wait_for=None, **config_kw):
        self.config = RunConfig(model="logreg", partition="iid", dataset="iris", clients=n_clients, rounds=rounds,
                                round_timeout=round_timeout, min_clients=1, **config_kw)
        self.plan = build_run(self.config)
        self.data, self.task = self.plan.data, self.plan.task
        self.events: list[dict] = []
        self.listeners: list = []
        self.server = FederatedServer(self.task, ServerSettings(token=token, wait_for_clients=wait_for or n_clients,
                                                                join_timeout_s=20, limits=Limits(frame_timeout_s=1.0)),
                                      on_event=self._on_event)
        self.host, self.port = self.server.bind()
        self.threads: list[threading.Thread] = []
        self.client_results: dict[str, object] = {}
        self.stop = threading.Event()
        self.result = None

    def _on_event(self, event: dict) -> None:
        self.events.append(event)
        for listener in self.listeners:
            listener(event)

    def add_client(self, i: int, cls=FederatedClient, token=None, client_id=None, y=None, connect_timeout_s=10.0):
        X, y0 = self.data.client_data(i)
        cid = client_id or f"c{i}"
        client = cls(cid, LocalData(X, y0 if y is None else y, list(self.data.dataset.feature_names)),
                     ClientSettings(self.host, self.port, token=token, connect_timeout_s=connect_timeout_s),
                     stop=self.stop)
        t = threading.Thread(target=lambda: self.client_results.__setitem__(cid, client.run()), name=f"fl-test-{cid}",
                             daemon=True)
        t.start()
        self.threads.append(t)
        return client

    def run(self):
        self.result = RoundRunner(self.server, self.plan.settings, self.plan.strategy(), self.plan.server_data).run()
        return self.result

    def close(self):
        self.server.stop()
        self.stop.set()
        self.server.close()
        for t in self.threads:
            t.join(10)

    def of(self, kind):
        return [e for e in self.events if e["type"] == kind]


@pytest.fixture
def harness_factory():
    made = []

    def make(**kw):
        h = Harness(**kw)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


def _prefix(magic=b"FLW1", header_len=2, body_len=0):
    return struct.pack(">4sIQ", magic, header_len, body_len)


MALFORMED = {
    "magic": _prefix(magic=b"HTTP") + b"{}",
    "header_too_large": _prefix(header_len=(1 << 20) + 1),
    "body_too_large": _prefix(body_len=(256 << 20) + 1),
    "json": _prefix(header_len=5) + b"{nope",
}


def _frame(header: dict, body: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return _prefix(header_len=len(raw), body_len=len(body)) + raw + body


MALFORMED["dtype_object"] = _frame({"type": "hello", "arrays": [{"name": "a", "dtype": "|O", "shape": [1]}]}, b"x" * 8)
MALFORMED["dtype_unknown"] = _frame({"type": "hello", "arrays": [{"name": "a", "dtype": "<f2", "shape": [1]}]}, b"xx")
MALFORMED["negative_shape"] = _frame({"type": "hello", "arrays": [{"name": "a", "dtype": "<f8", "shape": [-1]}]}, b"")
MALFORMED["length_mismatch"] = _frame({"type": "hello", "arrays": [{"name": "a", "dtype": "<f8", "shape": [2]}]}, b"x" * 8)


def _send_raw(port: int, payload: bytes) -> str:
    """Send bytes as a fresh peer; return the error code the server answered with."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload)
        try:
            frame, _ = read_frame(sock, Limits(frame_timeout_s=5), idle_timeout=5)
        except Exception as exc:  # closed without an error frame
            return f"closed:{type(exc).__name__}"
        msg = parse_message(frame)
        return msg.code if isinstance(msg, Error) else type(msg).__name__


def test_malformed_frames_are_refused_and_the_run_goes_on(harness_factory):
    # Prepare: a run with 3 honest clients and many rounds
    h = harness_factory(n_clients=3, rounds=40)
    for i in range(3):
        h.add_client(i)
    runner = threading.Thread(target=h.run, name="fl-test-runner", daemon=True)
    runner.start()
    deadline = time.monotonic() + 20
    while not h.of("round") and time.monotonic() < deadline:
        time.sleep(0.02)
    # Execute: every kind of malformed frame, each from its own peer, mid-run
    answers = {kind: _send_raw(h.port, payload) for kind, payload in MALFORMED.items()}
    runner.join(60)
    # Assert
    assert answers["magic"] == "magic"
    assert answers["header_too_large"] == "header_too_large"
    assert answers["body_too_large"] == "body_too_large"
    assert answers["json"] == "json"
    assert answers["dtype_object"] == "dtype"
    assert answers["dtype_unknown"] == "dtype"
    assert answers["negative_shape"] == "shape"
    assert answers["length_mismatch"] == "length"
    assert h.result.status == "completed"
    assert len(h.result.rounds) == 40
    assert all(r["n_fit_clients"] == 3 and r["n_failures"] == 0 for r in h.result.rounds)
    assert len(h.of("refused")) == len(MALFORMED)


class CrashingClient(FederatedClient):
    """Dies mid-round 2: the socket is torn down as a killed process's would be."""

    def handle_fit(self, msg):
        if msg.round == 2:
            self.conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.conn.sock.close()
            raise OSError("killed")
        return super().handle_fit(msg)


def test_client_killed_mid_round_is_a_failure_not_a_crash(harness_factory):
    # Prepare
    h = harness_factory(n_clients=3, rounds=4)
    h.add_client(0)
    h.add_client(1)
    h.add_client(2, cls=CrashingClient)
    # Execute
    result = h.run()
    # Assert
    assert result.status == "completed"
    assert [r["n_fit_clients"] for r in result.rounds] == [3, 2, 2, 2]
    assert result.rounds[1]["n_failures"] == 1
    assert [e["client_id"] for e in h.of("failure")] == ["c2"]


class SlowClient(FederatedClient):
    """Answers round 1 only once the server has closed that round without it: a straggler, by construction."""

    round_one_over: threading.Event

    def handle_fit(self, msg):
        if msg.round == 1:
            self.round_one_over.wait(30)
        return super().handle_fit(msg)


def test_straggler_is_dropped_then_counted_not_merged(harness_factory):
    # Prepare: round timeout 0.7 s; one client holds its round-1 answer until round 1 has ended
    h = harness_factory(n_clients=3, rounds=4, round_timeout=0.7)
    over = threading.Event()
    h.listeners.append(lambda e: over.set() if e["type"] == "round" and e["round"] == 1 else None)
    h.add_client(0)
    h.add_client(1)
    slow = h.add_client(2, cls=SlowClient)
    slow.round_one_over = over
    # Execute
    result = h.run()
    # Assert
    assert result.status == "completed"
    assert result.rounds[0]["n_fit_clients"] == 2 and result.rounds[0]["n_failures"] == 1
    assert sum(r["n_stragglers"] for r in result.rounds) >= 1
    assert h.of("straggler")[0]["round"] == 1


class PoisonClient(FederatedClient):
    """Sends non-finite parameters in round 1 and wrong shapes in round 2."""

    def handle_fit(self, msg):
        reply = super().handle_fit(msg)
        if msg.round == 1:
            reply.params = [(n, np.full_like(a, np.nan)) for n, a in reply.params]
        elif msg.round == 2:
            reply.params = [(n, np.zeros((1, 1))) for n, _ in reply.params]
        return reply


def test_bad_updates_are_rejected_with_a_reason(harness_factory):
    # Prepare
    h = harness_factory(n_clients=3, rounds=3)
    h.add_client(0)
    h.add_client(1)
    h.add_client(2, cls=PoisonClient)
    # Execute
    result = h.run()
    # Assert
    assert result.status == "completed"
    assert [r["n_fit_clients"] for r in result.rounds] == [2, 2, 3]
    reasons = [e["reason"] for e in h.of("failure")]
    assert "not finite" in reasons[0] and "wrong arrays" in reasons[1]
    assert np.isfinite(result.final_metrics["accuracy"]) and result.final_metrics["accuracy"] > 0.5


def test_token_is_required_and_checked(harness_factory):
    # Prepare
    h = harness_factory(n_clients=2, rounds=2, token="s3cret", wait_for=1)
    h.add_client(0, token="s3cret")
    h.add_client(1, token="wrong")
    # Execute
    result = h.run()
    for t in h.threads:
        t.join(10)
    # Assert
    assert result.status == "completed"
    assert h.client_results["c0"].ok
    assert not h.client_results["c1"].ok and "auth" in h.client_results["c1"].reason


def test_wrong_version_duplicate_id_and_foreign_labels_are_refused(harness_factory):
    # Prepare
    h = harness_factory(n_clients=2, rounds=2, wait_for=1)
    h.add_client(0, client_id="dup")
    deadline = time.monotonic() + 10
    while not h.of("join") and time.monotonic() < deadline:
        time.sleep(0.02)
    # Execute
    with socket.create_connection((h.host, h.port), timeout=5) as sock:
        header, arrays, blob = Hello(client_id="x", n_samples=1, n_features=4, protocol=2).to_frame()
        sock.sendall(frame_to_bytes(header, arrays, blob))
        version_answer = parse_message(read_frame(sock, idle_timeout=5)[0])
    h.add_client(1, client_id="dup", connect_timeout_s=1.0)  # refused for now: it retries for its window
    X, y = h.data.client_data(1)
    h.add_client(1, client_id="aliens", y=np.full(len(y), 7))
    for t in h.threads[1:]:  # the first "dup" stays connected until teardown
        t.join(15)
    # Assert
    assert isinstance(version_answer, Error) and version_answer.code == "version"
    assert "already connected" in h.client_results["dup"].reason
    assert "labels" in h.client_results["aliens"].reason


def test_before_hello_a_peer_cannot_claim_a_large_body(harness_factory):
    # Prepare: a 1 MiB body is fine for a logged-in client (256 MiB limit) but not before hello
    h = harness_factory(n_clients=1, rounds=1, wait_for=1)
    # Execute
    answer = _send_raw(h.port, _prefix(header_len=2, body_len=1 << 20) + b"{}")
    # Assert: refused from the 16-byte prefix alone, nothing allocated
    assert answer == "body_too_large"


def test_server_without_data_evaluates_federatedly(harness_factory):
    # Prepare: a task built from classes and feature count only (no server data, no scaling)
    from fl.federation.task import Task

    h = harness_factory(n_clients=3, rounds=3)
    h.server.task = Task("logreg", {}, 4, [0, 1, 2])
    for i in range(3):
        h.add_client(i)
    # Execute
    result = RoundRunner(h.server, h.plan.settings, h.plan.strategy(), None).run()
    # Assert: metrics are the sample-weighted evaluate_results of the clients
    assert result.status == "completed" and len(result.rounds) == 3
    assert all(0.5 < r["accuracy"] <= 1.0 and r["loss"] > 0 for r in result.rounds)


def test_client_missing_a_needed_column_leaves_with_shape(harness_factory):
    # Prepare: the client's raw frame lacks one of the task's feature columns
    import pandas as pd

    h = harness_factory(n_clients=1, rounds=1, wait_for=1)
    X, y = h.data.client_data(0)
    names = list(h.data.dataset.feature_names)
    frame = pd.DataFrame(X, columns=names).drop(columns=[names[0]])
    client = FederatedClient("short", LocalData(X[:, 1:], y, names[1:], frame=frame),
                             ClientSettings(h.host, h.port, connect_timeout_s=5))
    # Execute
    result = client.run()
    # Assert
    assert not result.ok and "(shape)" in result.reason and names[0] in result.reason


def test_a_refused_session_is_not_charged_to_the_next_client_with_its_id(harness_factory):
    # Prepare: client_000 first joins with labels the task does not have and is refused ...
    h = harness_factory(n_clients=1, rounds=2, wait_for=1)
    X, y = h.data.client_data(0)
    h.add_client(0, client_id="client_000", y=np.full(len(y), 7))
    h.threads[0].join(15)
    assert "labels" in h.client_results["client_000"].reason
    deadline = time.monotonic() + 10
    while not h.of("leave") and time.monotonic() < deadline:  # the server has seen the first session go
        time.sleep(0.01)
    # ... then joins again with the right data
    h.add_client(0, client_id="client_000")
    # Execute
    result = h.run()
    # Assert: the old session's departure is not a failure of the new one
    assert result.status == "completed"
    assert [r["n_failures"] for r in result.rounds] == [0, 0]
    assert [r["n_fit_clients"] for r in result.rounds] == [1, 1]
    assert not h.of("failure")


def test_a_partition_rebuilt_with_another_split_is_refused(harness_factory):
    # Prepare: the server holds out a validation split (stacking); the client rebuilt its rows without one
    h = harness_factory(n_clients=1, rounds=1, wait_for=1)
    h.server.task.data_split = {"dataset": "iris", "test_size": 0.2, "val_size": 0.15, "seed": 0}
    X, y = h.data.client_data(0)
    local = LocalData(X, y, list(h.data.dataset.feature_names),
                      data_split={"dataset": "iris", "test_size": 0.2, "val_size": 0.0, "seed": 0})
    # Execute
    result = FederatedClient("c0", local, ClientSettings(h.host, h.port, connect_timeout_s=5)).run()
    # Assert: it leaves before training, saying which setting differs and what to add
    assert not result.ok and "(data)" in result.reason
    assert "val_size 0.0 here, 0.15 on the server" in result.reason and "--aggregation stacking" in result.reason
