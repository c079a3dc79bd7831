"""Bounded handshakes: one deadline for TLS + hello, caps on pending connections, no leaks, floods survived.

Loopback only. A flood "from another machine" comes from another loopback
address (127.0.0.2, ...), which Linux routes to the same interface. Every
socket a test opens is closed in ``finally``; every wait has a deadline.
"""

from __future__ import annotations

import json
import os
import resource
import select
import socket
import struct
import threading
import time

import pytest

from fl.federation import admission
from fl.federation.client import ClientSettings, FederatedClient, LocalData
from fl.federation.rounds import RoundRunner
from fl.federation.server import FederatedServer, ServerSettings
from fl.runs.build import build_run
from fl.runs.config import RunConfig

HELLO = json.dumps({"type": "hello", "protocol": 1, "client_id": "drip", "token": None, "n_samples": 1,
                    "n_features": 4}).encode()
HELLO_FRAME = struct.pack(">4sIQ", b"FLW1", len(HELLO), 0) + HELLO


def _can_bind(address: str) -> bool:
    try:
        with socket.socket() as s:
            s.bind((address, 0))
        return True
    except OSError:
        return False


needs_loopback_aliases = pytest.mark.skipif(not _can_bind("127.0.0.2"),
                                            reason="needs 127.0.0.2 on the loopback interface (Linux has it)")


class Run:
    """A real server for a short logreg run on iris; ``finish`` runs it with one legitimate client."""

    def __init__(self, **settings):
        self.plan = build_run(RunConfig(model="logreg", partition="iid", dataset="iris", clients=2, rounds=2,
                                        min_clients=1))
        self.events: list[dict] = []
        self.listeners: list = []  # called with each event, on the thread that emits it
        self.server = FederatedServer(self.plan.task, ServerSettings(wait_for_clients=1, join_timeout_s=30,
                                                                     **settings), on_event=self._on_event)
        self.host, self.port = self.server.bind()

    def _on_event(self, event: dict) -> None:
        self.events.append(event)
        for listener in self.listeners:
            listener(event)

    def finish(self, connect_timeout_s: float = 20.0):
        X, y = self.plan.data.client_data(0)
        client = FederatedClient("legit", LocalData(X, y, list(self.plan.data.dataset.feature_names)),
                                 ClientSettings(self.host, self.port, connect_timeout_s=connect_timeout_s))
        results = []
        thread = threading.Thread(target=lambda: results.append(client.run()), name="fl-test-legit", daemon=True)
        thread.start()
        result = RoundRunner(self.server, self.plan.settings, self.plan.strategy(), self.plan.server_data).run()
        thread.join(30)
        return result, results[0] if results else None

    def refused(self, code: str) -> list[dict]:
        return [e for e in list(self.events) if e["type"] == "refused" and e["code"] == code]

    def close(self) -> None:
        self.server.stop()
        self.server.close()


@pytest.fixture
def make_run():
    made: list[Run] = []

    def make(**settings) -> Run:
        run = Run(**settings)
        made.append(run)
        return run

    yield make
    for run in made:
        run.close()


class Sockets:
    """Client sockets a test opens, all closed at the end."""

    def __init__(self):
        self.socks: list[socket.socket] = []

    def open(self, port: int, source: str = "127.0.0.1") -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
        self.socks.append(sock)
        return sock

    def close(self) -> None:
        for sock in self.socks:
            sock.close()
        self.socks.clear()


@pytest.fixture
def sockets():
    s = Sockets()
    yield s
    s.close()


def _closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the server closes ``sock`` (EOF or reset) within ``within`` seconds; reads nothing else."""
    deadline = time.monotonic() + within
    poller = select.poll()  # not select(): descriptors above 1,023 are common here
    poller.register(sock, select.POLLIN)
    while (left := deadline - time.monotonic()) > 0:
        if not poller.poll(left * 1000):
            continue
        try:
            if sock.recv(4096) == b"":
                return True
        except OSError:
            return True
    return False


def _wait_until(condition, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


# ---------------------------------------------------------------------- the hello deadline
def test_a_slow_drip_peer_is_cut_at_the_hello_deadline_not_per_read(make_run, sockets):
    # Prepare: a 1.5 s hello deadline; the frame's timeout alone (10 s) would let a dripping peer stay ~10x longer
    run = make_run(hello_timeout_s=1.5)
    drip, idle = sockets.open(run.port), sockets.open(run.port)
    start = time.monotonic()
    # Execute: one byte of a valid hello every 0.2 s (it would take 20 s to send it all)
    cut_after = None
    for i in range(len(HELLO_FRAME)):
        try:
            drip.sendall(HELLO_FRAME[i:i + 1])
        except OSError:
            cut_after = time.monotonic() - start
            break
        if _closed_by_server(drip, 0.2):
            cut_after = time.monotonic() - start
            break
        if time.monotonic() - start > 8:
            break
    # Assert: cut at the deadline (1.5 s), not at the 10 s frame timeout; the idle one too; nothing reported
    assert cut_after is not None and 1.3 < cut_after < 3.0, cut_after
    assert _closed_by_server(idle, 1.0)
    assert not run.refused("timeout") and not run.refused("busy")


def test_the_hello_deadline_covers_the_tls_handshake(make_run, sockets, tmp_path):
    # Prepare: a TLS server; a peer that opens TCP and never starts TLS
    from fl.wire.tls import make_certificates, server_context

    made = make_certificates(tmp_path, ["127.0.0.1"])
    run = make_run(hello_timeout_s=1.0, ssl_context=server_context(made["cert"], made["key"]))
    start = time.monotonic()
    # Execute
    silent = sockets.open(run.port)
    # Assert: closed at the deadline, silently (a flood of idle peers must not fill the event log)
    assert _closed_by_server(silent, 3.0)
    assert 0.8 < time.monotonic() - start < 3.0
    assert not [e for e in run.events if e["type"] == "refused"]


# ---------------------------------------------------------------------- the caps
@needs_loopback_aliases
def test_caps_close_new_connections_at_once_and_report_once_per_window(make_run, sockets, monkeypatch):
    # Prepare: 8 pending at most, 4 per address; refusals summarised over 0.5 s
    monkeypatch.setattr(admission, "REFUSAL_WINDOW_S", 0.5)
    run = make_run(max_pending_handshakes=8, max_pending_per_address=4, hello_timeout_s=30)
    held = [sockets.open(run.port, "127.0.0.2") for _ in range(4)]
    assert _wait_until(lambda: run.server._gate.pending.total == 4, 5)
    # Execute: 20 more from the same address, then 4 + 1 from two others
    over = [sockets.open(run.port, "127.0.0.2") for _ in range(20)]
    held += [sockets.open(run.port, "127.0.0.3") for _ in range(4)]
    assert _wait_until(lambda: run.server._gate.pending.total == 8, 5)
    beyond_total = sockets.open(run.port, "127.0.0.4")
    # Assert: the ones over a cap are closed at once, the others held
    assert all(_closed_by_server(s, 2.0) for s in over + [beyond_total])
    assert not any(_closed_by_server(s, 0.05) for s in held)
    assert run.server._gate.pending.by_address == {"127.0.0.2": 4, "127.0.0.3": 4}
    # ... and each cap is one event at once plus one summary with the count, not 21 events
    assert _wait_until(lambda: len(run.refused("busy")) >= 3, 3)
    busy = run.refused("busy")
    per_address = [e for e in busy if e["cap"] == "max_pending_per_address"]
    assert [e["count"] for e in per_address] == [1, 19]
    assert "4 connections from 127.0.0.2 are already waiting" in per_address[0]["message"]
    assert [e["count"] for e in busy if e["cap"] == "max_pending_handshakes"] == [1]
    from fl.federation.events import describe_event

    assert describe_event(per_address[1]).startswith("refused 19 more connections in 0.5 s, the last from 127.0.0.2")


@needs_loopback_aliases
def test_a_flood_from_one_address_leaves_room_for_everyone_else(make_run, sockets):
    # Prepare: the default caps (256 pending, 64 per address)
    run = make_run(hello_timeout_s=30)
    # Execute: 1,000 idle connections from one address, then a legitimate client from another
    flood = [sockets.open(run.port, "127.0.0.2") for _ in range(1000)]
    assert _wait_until(lambda: run.server._gate.pending.total == 64, 10)
    closed = sum(_closed_by_server(s, 0.01) for s in flood)
    result, client = run.finish()
    # Assert: 64 held, the rest closed at once, reported in a couple of events; the run completes
    assert closed == 1000 - 64
    assert result.status == "completed" and client is not None and client.ok
    busy = run.refused("busy")
    assert 1 <= len(busy) <= 3 and sum(e["count"] for e in busy) == 1000 - 64


# ---------------------------------------------------------------------- threads and leaks
def test_200_idle_connections_add_no_thread(make_run, sockets):
    # Prepare: room for 200 pending from this one address
    run = make_run(hello_timeout_s=30, max_pending_per_address=256)
    threads_before = _threads()
    # Execute
    for _ in range(200):
        sockets.open(run.port)
    assert _wait_until(lambda: run.server._gate.pending.total == 200, 10)
    # Assert: every connection is a task on the server's one event loop, never a thread
    assert _threads() == threads_before
    sockets.close()
    assert _wait_until(lambda: run.server._gate.pending.total == 0, 10)


def test_1000_connect_close_cycles_with_garbage_or_a_wrong_token_leak_nothing(make_run, monkeypatch):
    # Prepare: a token the peers do not know; refusals summarised over 0.3 s
    monkeypatch.setattr(admission, "REFUSAL_WINDOW_S", 0.3)
    run = make_run(token="s3cret", hello_timeout_s=5)
    wrong = json.dumps({"type": "hello", "protocol": 1, "client_id": "x", "token": "guess", "n_samples": 1,
                        "n_features": 4}).encode()
    payloads = [b"GET / HTTP/1.1\r\n\r\n", os.urandom(64), struct.pack(">4sIQ", b"FLW1", len(wrong), 0) + wrong, b""]

    def cycles(n: int) -> None:
        for i in range(n):
            with socket.create_connection((run.host, run.port), timeout=5) as sock:
                sock.sendall(payloads[i % len(payloads)])
                _closed_by_server(sock, 2.0) if payloads[i % len(payloads)] else None

    cycles(100)  # warm up: caches, the first refusal events
    assert _wait_until(lambda: run.server._gate.pending.total == 0, 10)
    fds, threads, rss = _open_fds(), _threads(), _rss_mib()
    # Execute
    cycles(1000)
    # Assert: nothing pending, as many descriptors and threads as before, memory about the same
    assert _wait_until(lambda: run.server._gate.pending.total == 0, 10)
    assert _wait_until(lambda: _open_fds() <= fds, 5), (fds, _open_fds())
    assert _threads() == threads
    assert _rss_mib() - rss < 20, (rss, _rss_mib())
    # ... and the refusals were summarised: at most 10 events per code and window, plus the summaries
    def refused() -> list[dict]:
        return [e for e in list(run.events) if e["type"] == "refused"]

    assert _wait_until(lambda: sum(e["count"] for e in refused()) >= 800, 5)  # 3 payloads in 4 are refused
    assert len(refused()) < 100


# ---------------------------------------------------------------------- acceptance
def _raise_soft_nofile(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"needs {wanted} open files; the hard limit is {hard}")
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def test_a_client_joins_and_a_run_completes_while_1000_idle_or_dripping_connections_are_open(make_run, sockets):
    # Prepare: 1,000 unauthenticated connections held open (caps raised so that the server keeps all of them):
    # 500 idle, 500 dripping a hello one byte at a time; both ends live in this process (~2,100 descriptors)
    _raise_soft_nofile(4096)
    run = make_run(hello_timeout_s=60, max_pending_handshakes=2000, max_pending_per_address=2000)
    threads_before, rss_before = _threads(), _rss_mib()
    peers = [sockets.open(run.port) for _ in range(1000)]
    assert _wait_until(lambda: run.server._gate.pending.total == 1000, 20)
    stop = threading.Event()

    def drip() -> None:
        i = 0
        while not stop.is_set() and i < len(HELLO_FRAME) - 1:  # never the last byte: they stay pending
            for sock in peers[500:]:
                try:
                    sock.sendall(HELLO_FRAME[i:i + 1])
                except OSError:
                    pass
            i += 1
            stop.wait(0.2)

    dripper = threading.Thread(target=drip, name="fl-test-drip", daemon=True)
    dripper.start()
    during: list[tuple[int, int, int, float]] = []  # (pending connections, threads, fds, RSS) at each round
    run.listeners.append(lambda e: during.append((run.server._gate.pending.total, _threads(), _open_fds(),
                                                  _rss_mib())) if e["type"] == "round" else None)
    try:
        # Execute
        result, client = run.finish()
        # Assert: the run went through while the 1,000 were all pending, on no extra server thread
        assert result.status == "completed" and len(result.rounds) == 2
        assert client is not None and client.ok, client
        assert [pending for pending, *_ in during] == [1000, 1000]
        # the dripper, the legitimate client's loop and compute threads, the round loop: none per connection
        assert all(threads <= threads_before + 4 for _, threads, *_ in during), (threads_before, during)
        pending, threads, fds, rss = during[-1]
        print(f"\n{pending} pending connections: {threads_before} threads before, {threads} during the run; "
              f"{fds} fds in this process (both ends); RSS +{rss - rss_before:.1f} MiB")
    finally:
        stop.set()
        dripper.join(5)
