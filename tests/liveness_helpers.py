"""What the heartbeat and reconnect tests share: a run with short heartbeats, a client written from the v1 docs,
and a server crash. Everything on loopback; every thread, socket and server is ended by ``close()``."""

from __future__ import annotations

import socket
import threading
import time

from fl.federation.client import ClientSettings, FederatedClient, LocalData
from fl.federation.rounds import RoundRunner
from fl.federation.server import FederatedServer, ServerSettings
from fl.runs.build import build_run
from fl.runs.config import RunConfig
from fl.wire import Bye, Evaluate, EvaluateResult, Fit, FitResult, Hello, PeerClosed, Ping, Pong
from fl.wire.reference_peer import Connection

INTERVAL_S, MISSES = 0.2, 3  # a silent peer is gone after 0.6 s


def wait_until(condition, timeout: float = 20.0, what: str = "a condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class Run:
    """A server with 0.2 s heartbeats, its round loop in a thread, and client threads."""

    def __init__(self, n_clients: int = 2, rounds: int = 3, round_timeout: float = 30.0, wait_for: int | None = None,
                 interval: float = INTERVAL_S, misses: int = MISSES, port: int = 0, **config_kw):
        self.config = RunConfig(model="logreg", partition="iid", dataset="iris", clients=n_clients, rounds=rounds,
                                round_timeout=round_timeout, min_clients=1, **config_kw)
        self.plan = build_run(self.config)
        self.events: list[dict] = []
        self.listeners: list = []
        self.settings = ServerSettings(port=port, wait_for_clients=wait_for or n_clients, join_timeout_s=20,
                                       heartbeat_interval_s=interval, heartbeat_misses=misses)
        self.server = FederatedServer(self.plan.task, self.settings, on_event=self._on_event)
        self.host, self.port = self.server.bind()
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.results: dict[str, object] = {}
        self.result = None
        self.runner: threading.Thread | None = None

    def _on_event(self, event: dict) -> None:
        self.events.append(event)
        for listener in self.listeners:
            listener(event)

    def client(self, i: int, cls=FederatedClient, client_id: str | None = None, reconnect_s: float = 0.0,
               port: int | None = None) -> FederatedClient:
        """Start client ``i`` (partition i) in a thread of its own; its result lands in ``results``."""
        X, y = self.plan.data.client_data(i)
        cid = client_id or f"c{i}"
        client = cls(cid, LocalData(X, y, list(self.plan.data.dataset.feature_names)),
                     ClientSettings(self.host, port or self.port, connect_timeout_s=10, reconnect_s=reconnect_s),
                     stop=self.stop)
        self.thread(lambda: self.results.__setitem__(cid, client.run()), f"fl-test-{cid}")
        return client

    def thread(self, target, name: str) -> threading.Thread:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self.threads.append(t)
        return t

    def start(self) -> None:
        """The round loop in a thread; ``result`` when it returns."""
        def rounds() -> None:
            self.result = RoundRunner(self.server, self.plan.settings, self.plan.strategy(),
                                      self.plan.server_data).run()
        self.runner = self.thread(rounds, "fl-test-rounds")

    def wait(self, timeout: float = 60.0):
        assert self.runner is not None
        self.runner.join(timeout)
        assert not self.runner.is_alive(), "the run did not end"
        return self.result

    def of(self, kind: str) -> list[dict]:
        return [e for e in list(self.events) if e["type"] == kind]

    def close(self) -> None:
        self.server.stop()
        self.stop.set()
        self.server.close()
        for t in self.threads:
            t.join(15)


def crash(server: FederatedServer) -> None:
    """The server process dies: no bye, every connection reset, the port free again."""
    io = server._io
    assert io is not None

    async def die() -> None:
        server._listener.close()
        for slot in server.slots():
            slot.conn.abort()

    io.call(die(), timeout=5)
    server._io = None
    io.stop()
    server.stop()  # its round loop unwinds (closing nothing: the loop is gone)


class OldClient:
    """A client written from docs/protocol.md before heartbeats: one blocking thread that answers a ping only
    between messages, never pings, and is silent while it 'trains' (sleeps ``fit_s``). It sends back the
    global parameters it was given (valid shapes, finite) and empty evaluation metrics."""

    def __init__(self, port: int, client_id: str, n_features: int, fit_s: float = 0.0, answer_pings: bool = True):
        self.port, self.client_id, self.n_features = port, client_id, n_features
        self.fit_s, self.answer_pings = fit_s, answer_pings
        self.pings = self.fits = 0
        self.outcome = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"fl-test-old-{client_id}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            conn = Connection(sock)
            conn.send(Hello(client_id=self.client_id, n_samples=20, n_features=self.n_features))
            self.welcome = conn.recv(idle_timeout=5)
            while not self._stop.is_set():
                try:
                    msg = conn.recv(idle_timeout=0.05)
                except TimeoutError:
                    continue
                except (PeerClosed, OSError):
                    self.outcome = "closed"
                    return
                if isinstance(msg, Ping):
                    self.pings += 1
                    if self.answer_pings:
                        conn.send(Pong(t=msg.t))
                elif isinstance(msg, Fit):
                    self._stop.wait(self.fit_s)
                    conn.send(FitResult(round=msg.round, n_samples=20, metrics={}, params=msg.params))
                    self.fits += 1
                elif isinstance(msg, Evaluate):
                    conn.send(EvaluateResult(round=msg.round, n_samples=0, metrics={}))
                elif isinstance(msg, Bye):
                    self.outcome = "bye"
                    return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
