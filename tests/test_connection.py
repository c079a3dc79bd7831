"""Connection (fl.wire.reference_peer): framed socket shared by a reader and senders."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from fl.wire import (
    Fit,
    PeerClosed,
    Ping,
    ProtocolError,
)
from fl.wire.reference_peer import Connection
from tests.protocol_helpers import (
    raw_frame,
)

pytestmark = pytest.mark.timeout(30)


# -------------------------------------------------------------- Connection


def test_connection_recv_idle_timeout_then_message(unix_pair):
    # Prepare
    a, b = unix_pair
    sender, receiver = Connection(a), Connection(b)
    # Execute
    with pytest.raises(TimeoutError):
        receiver.recv(idle_timeout=0.05)
    sender.send(Ping(t=3.0))
    msg = receiver.recv(idle_timeout=5)
    # Assert
    assert msg == Ping(t=3.0)
    assert receiver.bytes_received == sender.bytes_sent


def test_connection_send_to_departed_peer_raises_peer_closed(pair):
    # Prepare
    writer, reader = pair
    conn = Connection(writer)
    reader.close()
    # Execute: TCP may accept the first writes before the reset arrives
    with pytest.raises(PeerClosed):
        for _ in range(200):
            conn.send(Fit(round=1, config={}, params=[("w", np.zeros(1000))]))
            time.sleep(0.005)
    # Assert
    assert conn.closed
    conn.send_error("full", "never raises")
    conn.close()


def test_connection_recv_after_peer_close_and_after_own_close(unix_pair):
    # Prepare
    a, b = unix_pair
    peer, conn = Connection(a), Connection(b)
    peer.close()
    # Execute + Assert
    with pytest.raises(PeerClosed):
        conn.recv(idle_timeout=5)
    conn.close()
    conn.close()
    with pytest.raises(PeerClosed):
        conn.recv(idle_timeout=1)
    with pytest.raises(PeerClosed):
        conn.send(Ping(t=0.0))


def test_close_wakes_a_blocked_reader(tcp_pair, monkeypatch):
    # Prepare: socket waits of 30 s, so a reader that close() did not wake would sit there for 30 s
    import fl.wire.reference_peer

    monkeypatch.setattr(fl.wire.reference_peer, "POLL_S", 30.0)
    _, server = tcp_pair
    conn = Connection(server)
    outcome: list[tuple[str, float]] = []
    blocking = threading.Event()

    def read() -> None:
        blocking.set()
        started = time.monotonic()
        outcome.append((_recv_outcome(conn), time.monotonic() - started))

    reader = threading.Thread(target=read, name="fl-test-reader")
    reader.start()
    assert blocking.wait(5)
    time.sleep(0.05)  # let it enter recv
    # Execute
    conn.close()
    reader.join(10)
    # Assert: woken at once (shutdown), not by a timeout
    assert outcome and outcome[0][0] == "PeerClosed"
    assert outcome[0][1] < 5.0


def _recv_outcome(conn: Connection) -> str:
    try:
        conn.recv(idle_timeout=None)
        return "message"
    except Exception as exc:
        return type(exc).__name__


def test_concurrent_senders_never_interleave_frames_and_big_messages_pass(tcp_pair):
    # Prepare: 4 threads send small fits while one 8 MB fit goes out; reader polls with short idle timeouts
    client, server = tcp_pair
    sender, receiver = Connection(client), Connection(server)
    big = np.random.default_rng(0).random(1 << 20)

    def send_many(k: int) -> None:
        for i in range(20):
            sender.send(Fit(round=k * 100 + i + 1, config={"k": k}, params=[("w", np.full(500, k, "<i4"))]))

    threads = [threading.Thread(target=send_many, args=(k,)) for k in range(4)]
    threads.append(threading.Thread(target=sender.send, args=(Fit(round=1, config={"big": True}, params=[("w", big)]),)))
    # Execute
    for t in threads:
        t.start()
    got = []
    while len(got) < 81:
        try:
            got.append(receiver.recv(idle_timeout=0.01))
        except TimeoutError:
            continue
    for t in threads:
        t.join(5)
    # Assert
    bigs = [m for m in got if m.config.get("big")]
    assert len(bigs) == 1 and np.array_equal(bigs[0].params[0][1], big)
    for m in got:
        if not m.config.get("big"):
            assert np.all(m.params[0][1] == m.config["k"])
    assert sender.bytes_sent == receiver.bytes_received


def test_protocol_error_is_raised_by_connection_recv(unix_pair):
    # Prepare
    a, b = unix_pair
    conn = Connection(b)
    a.sendall(raw_frame({"type": "fit", "round": 0, "config": {}}))
    # Execute
    with pytest.raises(ProtocolError) as info:
        conn.recv(idle_timeout=5)
    # Assert
    assert info.value.code == "message"
    assert conn.bytes_received > 0
