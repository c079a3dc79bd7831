"""Heartbeats (fl/federation/liveness.py): a long fit is not a death, silence is; a busy receiver is not a stall.

Heartbeats every 0.2 s, 3 misses: a silent peer is gone after 0.6 s, while
the round timeout is 30 s, so "at once" and "at the timeout" are far apart.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from fl.federation.client import ClientSettings, FederatedClient, LocalData
from fl.wire import (Fit, Frame, Hello, Limits, ProtocolError, Welcome, decode_frame, frame_to_bytes,
                     parse_message)
from fl.wire.reference_peer import Connection
from fl.wire.aio import read_frame_async
from tests.liveness_helpers import INTERVAL_S, MISSES, OldClient, wait_until

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[1]
LIMIT_S = INTERVAL_S * MISSES


def busy(seconds: float) -> None:
    """Pure-Python work that holds the interpreter lock as a fit in Python code would."""
    end = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < end:
        n += 1


class LongFit(FederatedClient):
    """Trains for 1.5 s in round 1 (2.5 heartbeat windows), sleeping or holding the GIL."""

    hold_gil = False

    def handle_fit(self, msg):
        if msg.round == 1:
            busy(1.5) if self.hold_gil else time.sleep(1.5)
        return super().handle_fit(msg)


@pytest.mark.parametrize("hold_gil", [False, True], ids=["sleeping", "holding-the-GIL"])
def test_a_client_training_longer_than_the_heartbeat_window_stays_and_is_merged(runs, hold_gil):
    # Prepare: one ordinary client, one whose round-1 fit lasts 1.5 s (the window is 0.6 s)
    run = runs(n_clients=2, rounds=2)
    run.client(0)
    long_fit = type("LongFitNow", (LongFit,), {"hold_gil": hold_gil})
    run.client(1, cls=long_fit)
    wait_until(lambda: len(run.server.active_ids()) == 2, what="both clients to join")
    slot = run.server.slot("c1")
    silences: list[float] = []  # how long the server went without a byte from c1, sampled during the run
    sampler_stop = threading.Event()

    def sample() -> None:
        while not sampler_stop.wait(0.01):
            silences.append(time.monotonic() - slot.conn.last_heard)

    run.thread(sample, "fl-test-sampler")
    # Execute
    run.start()
    result = run.wait()
    sampler_stop.set()
    # Assert: its result is merged, nobody left, and the server always heard from it within a window
    assert result.status == "completed"
    assert [r["n_fit_clients"] for r in result.rounds] == [2, 2]
    assert not run.of("leave") and not run.of("failure")
    assert slot.pings_itself
    assert max(silences) < LIMIT_S, f"longest silence {max(silences):.3f} s"


class Freezes(FederatedClient):
    """In round 2 its whole process stops, as under SIGSTOP: no reads, no pongs, no pings, for 3 s."""

    def handle_fit(self, msg):
        if msg.round == 2:
            self.conn.loop.call_soon_threadsafe(time.sleep, 3.0)  # the event loop stops too
            time.sleep(3.0)
        return super().handle_fit(msg)


def test_a_frozen_client_is_gone_after_its_missed_heartbeats_not_at_the_round_timeout(runs):
    # Prepare: a round timeout of 30 s; one client freezes for 3 s in round 2
    run = runs(n_clients=2, rounds=4, round_timeout=30.0)
    run.client(0)
    run.client(1, cls=Freezes)
    # Execute
    started = time.monotonic()
    run.start()
    result = run.wait()
    took = time.monotonic() - started
    # Assert: gone after ~0.6 s of silence, the failure counted in round 2, the run went on without it
    assert result.status == "completed"
    assert [r["n_fit_clients"] for r in result.rounds] == [2, 1, 1, 1]
    assert result.rounds[1]["n_failures"] == 1 and result.rounds[1]["duration_s"] < 2.5
    assert took < 10, took
    [leave] = run.of("leave")
    assert leave["client_id"] == "c1" and leave["reason"] == f"missed {MISSES} heartbeats ({LIMIT_S:g} s)"
    [failure] = run.of("failure")
    assert failure["round"] == 2 and "missed 3 heartbeats" in failure["reason"]
    wait_until(lambda: "c1" in run.results, 10, "the frozen client to end")  # it thaws to a dropped connection
    assert run.results["c1"].reason == "server gone" and run.results["c1"].lost


def _client_process(port: int, index: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "fl", "client", "--port", str(port), "--dataset", "iris",
                             "--partition", "iid", "--partition-id", str(index),
                             "--num-partitions", "2", "--client-id", f"p{index}"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs POSIX signals")
def test_a_sigstopped_client_process_is_declared_gone_within_the_heartbeat_window(runs):
    # Prepare: two client processes; many short rounds, a 30 s round timeout
    run = runs(n_clients=2, rounds=400, round_timeout=30.0)
    procs = [_client_process(run.port, i) for i in range(2)]
    try:
        run.start()
        wait_until(lambda: len(run.of("round")) >= 5, 60, "round 5")
        # Execute
        os.kill(procs[1].pid, signal.SIGSTOP)
        stopped = time.time()
        wait_until(lambda: run.of("leave"), 10, "the stopped client to be declared gone")
        result = run.wait()
        # Assert: declared gone about 0.6 s after it stopped, and the run completed without it
        [leave] = run.of("leave")
        assert leave["client_id"] == "p1" and "missed 3 heartbeats" in leave["reason"]
        assert leave["t"] - stopped < LIMIT_S + 1.0, leave["t"] - stopped
        assert result.status == "completed" and result.rounds[-1]["n_fit_clients"] == 1
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
            proc.wait(10)


def test_the_server_tolerates_a_client_written_before_heartbeats(runs):
    # Prepare: a client from the v1 docs (answers ping between messages only, never pings, silent for 1 s
    # while it trains); it waits idle for a second client, 1 s, so it must answer pings to stay
    run = runs(n_clients=2, rounds=2)
    old = OldClient(run.port, "old", n_features=4, fit_s=1.0)
    try:
        wait_until(lambda: run.server.active_ids() == ["old"], what="the old client to join")
        time.sleep(1.0)
        run.client(0)
        # Execute
        run.start()
        result = run.wait()
        # Assert: pinged while idle, answered; never dropped for its silent fits; its results merged
        assert isinstance(old.welcome, Welcome) and old.welcome.heartbeat_s == INTERVAL_S
        assert old.pings >= 2 and old.fits == 2
        assert result.status == "completed" and [r["n_fit_clients"] for r in result.rounds] == [2, 2]
        assert not run.of("leave") and not run.of("failure")
    finally:
        old.close()


def test_a_client_that_never_answers_pings_is_gone_once_idle_for_the_window(runs):
    # Prepare: the docs have always asked for pong; a client that never answers is silent while idle
    run = runs(n_clients=2, rounds=1)
    mute = OldClient(run.port, "mute", n_features=4, answer_pings=False)
    try:
        # Execute
        wait_until(lambda: run.of("leave"), 5, "the mute client to be declared gone")
        # Assert
        assert run.of("leave")[0]["client_id"] == "mute" and "missed 3 heartbeats" in run.of("leave")[0]["reason"]
        wait_until(lambda: mute.outcome == "closed", 5, "its connection to be dropped")
    finally:
        mute.close()


def test_a_server_without_heartbeats_sends_no_timing_and_judges_nobody(runs):
    # Prepare: heartbeats off (0)
    run = runs(n_clients=2, rounds=1, interval=0)
    mute = OldClient(run.port, "mute", n_features=4, answer_pings=False)
    try:
        # Execute: idle far beyond what a 0.2 s heartbeat would allow
        wait_until(lambda: run.server.active_ids() == ["mute"], what="the client to join")
        time.sleep(1.0)
        # Assert
        assert mute.welcome.heartbeat_s is None and mute.welcome.heartbeat_misses is None
        assert mute.pings == 0 and not run.of("leave")
    finally:
        mute.close()


class SilentServer:
    """Answers hello with a welcome that announces 0.2 s heartbeats, then never says or reads anything more."""

    def __init__(self, task: dict):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.task = task
        self.conns: list = []
        self._thread = threading.Thread(target=self._serve, name="fl-test-silent-server", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(0.1)
        while self.listener.fileno() >= 0:
            try:
                sock, _ = self.listener.accept()
            except (TimeoutError, OSError):
                continue
            conn = Connection(sock)
            self.conns.append(conn)
            conn.recv(idle_timeout=5)
            conn.send(Welcome(run_id="silent", task=self.task, heartbeat_s=INTERVAL_S, heartbeat_misses=MISSES))

    def close(self) -> None:
        self.listener.close()
        self._thread.join(5)
        for conn in self.conns:
            conn.close()


def test_a_client_leaves_a_server_that_goes_silent_after_the_window():
    # Prepare: a server that welcomes, then is silent (as one paused with SIGSTOP, or unplugged)
    from fl.runs.build import build_run
    from fl.runs.config import RunConfig

    plan = build_run(RunConfig(model="logreg", partition="iid", dataset="iris", clients=2))
    server = SilentServer(plan.task.to_dict())
    X, y = plan.data.client_data(0)
    client = FederatedClient("c0", LocalData(X, y, list(plan.data.dataset.feature_names)),
                             ClientSettings("127.0.0.1", server.port, connect_timeout_s=5))
    try:
        # Execute
        started = time.monotonic()
        result = client.run()
        took = time.monotonic() - started
    finally:
        server.close()
    # Assert: it noticed the silence after ~0.6 s, said why, and left (no --reconnect)
    assert not result.ok and result.lost
    assert result.reason == f"the server went silent: missed {MISSES} heartbeats ({LIMIT_S:g} s)"
    assert took < 5, took


def test_welcome_carries_the_heartbeat_timing_in_optional_fields():
    # Prepare
    task = {"model": "logreg", "model_params": {}, "n_features": 4, "classes": [0, 1]}
    plain, timed = Welcome(run_id="r", task=task), Welcome(run_id="r", task=task, heartbeat_s=5.0, heartbeat_misses=3)
    # Execute
    back = parse_message(decode_frame(frame_to_bytes(*timed.to_frame())))
    # Assert: absent when off (a client from before heartbeats sees the welcome it knew), checked when present
    assert set(plain.to_frame()[0]) == {"type", "run_id", "task"}
    assert back == timed
    for bad in ({"heartbeat_s": 0}, {"heartbeat_s": "5"}, {"heartbeat_misses": 0}, {"heartbeat_misses": 2.5}):
        with pytest.raises(ProtocolError) as info:
            parse_message(Frame(header={**timed.to_frame()[0], **bad}, arrays=[]))
        assert info.value.code == "message"


# ---------------------------------------------------------------- frames: a slow writer or a busy reader is not a stall
def _serve_reader(limits: Limits, feed) -> object:
    """Run read_frame_async on one loopback connection while ``feed(sock, loop)`` writes the frame."""
    async def main():
        got = asyncio.get_running_loop().create_future()

        async def on_conn(reader, writer):
            try:
                got.set_result(await read_frame_async(reader, limits))
            except Exception as exc:  # handed to the test
                got.set_result(exc)
            writer.close()

        server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        writer_thread = threading.Thread(target=lambda: feed(port, loop), daemon=True)
        writer_thread.start()
        try:
            return await asyncio.wait_for(got, 20)
        finally:
            server.close()
            await asyncio.to_thread(writer_thread.join, 10)

    return asyncio.run(main())


FRAME = frame_to_bytes(*Hello(client_id="slow", n_samples=1, n_features=4).to_frame())


def test_a_slow_writer_whose_bytes_keep_coming_is_read_however_long_the_frame_takes():
    # Prepare: the frame in 8 pieces 0.15 s apart (1.05 s in all) against a 0.4 s frame timeout
    def feed(port, loop):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            step = len(FRAME) // 8 + 1
            for i in range(0, len(FRAME), step):
                sock.sendall(FRAME[i:i + step])
                time.sleep(0.15)
            time.sleep(0.2)

    # Execute
    got = _serve_reader(Limits(frame_timeout_s=0.4), feed)
    # Assert
    assert not isinstance(got, Exception), got
    assert got[0].header["client_id"] == "slow"


def test_a_writer_that_stops_mid_frame_is_a_stall():
    # Prepare: half a frame, then nothing
    def feed(port, loop):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(FRAME[: len(FRAME) // 2])
            time.sleep(1.5)

    # Execute
    got = _serve_reader(Limits(frame_timeout_s=0.4), feed)
    # Assert
    assert isinstance(got, ProtocolError) and got.code == "timeout"


def test_a_reader_whose_loop_was_busy_does_not_take_the_wait_for_a_stall():
    # Prepare: an 8 MB frame (more than one loop iteration reads); after its first byte the reader's own loop
    # is blocked for 1 s (a busy server) while the rest is sent. The reader before heartbeats timed out here.
    big = frame_to_bytes(*Fit(round=1, config={}, params=[("w", np.ones(1_000_000))]).to_frame())

    def feed(port, loop):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(big[:1])
            time.sleep(0.1)  # the reader has the first byte and waits for the rest
            loop.call_soon_threadsafe(time.sleep, 1.0)
            time.sleep(0.1)
            sock.sendall(big[1:])
            time.sleep(1.5)

    # Execute: a 0.3 s frame timeout passes while the loop cannot run
    got = _serve_reader(Limits(frame_timeout_s=0.3), feed)
    # Assert: the bytes were coming all along; the reader's slowness is not the writer's
    assert not isinstance(got, Exception), got
    assert got[1] == len(big) and got[0].arrays[0][1].sum() == 1_000_000
