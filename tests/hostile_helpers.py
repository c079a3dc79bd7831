"""A scripted hostile client for tests: it holds the token and speaks the protocol, then says what it likes.

``Hostile`` connects, says a valid hello and answers the server's messages
through ``on_fit`` / ``on_evaluate`` / ``before`` hooks that return raw
headers (and arrays): anything a peer could put in a frame, including
values our own encoder would never write.
"""

from __future__ import annotations

import json
import socket
import threading
from typing import Any, Callable

import numpy as np

from fl.federation.client import ClientSettings, FederatedClient, LocalData
from fl.wire import Bye, Error, Evaluate, Fit, Hello, Limits, PeerClosed, Ping, ProtocolError, Welcome, \
    frame_to_bytes
from fl.wire.reference_peer import Connection
from tests.protocol_helpers import prefix

Raw = tuple[dict, list]  # a header and its arrays


def raw_bytes(header: dict, arrays: list | None = None) -> bytes:
    """A frame whose header is json.dumps of ``header`` as given (huge integers and lone surrogates included)."""
    if not arrays:
        raw = json.dumps(header).encode()
        return prefix(len(raw), 0) + raw
    return frame_to_bytes(header, arrays)


class Hostile:
    """One scripted peer in a thread of its own; ``errors`` and ``messages`` say what the server told it."""

    def __init__(self, port: int, client_id: str = "mallory", n_samples: int = 50, n_features: int = 64,
                 on_fit: Callable[[Fit, Welcome], Raw | None] | None = None,
                 on_evaluate: Callable[[Evaluate, Welcome], Raw | None] | None = None,
                 before: Callable[[Welcome], list[bytes]] | None = None, token: str | None = None):
        self.port, self.client_id, self.n_samples, self.n_features = port, client_id, n_samples, n_features
        self.on_fit, self.on_evaluate, self.before, self.token = on_fit, on_evaluate, before, token
        self.errors: list[Error] = []
        self.messages: list[Any] = []
        self.closed_by_server = False
        self.thread = threading.Thread(target=self._run, name=f"hostile-{client_id}", daemon=True)

    def start(self) -> "Hostile":
        self.thread.start()
        return self

    def join(self, timeout: float = 30) -> None:
        self.thread.join(timeout)

    def _run(self) -> None:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        except OSError:
            return
        conn = Connection(sock, Limits(frame_timeout_s=10))
        try:
            conn.send(Hello(client_id=self.client_id, n_samples=self.n_samples, n_features=self.n_features,
                            token=self.token))
            welcome = conn.recv(idle_timeout=30)
            self.messages.append(welcome)
            if not isinstance(welcome, Welcome):
                self.errors += [welcome] if isinstance(welcome, Error) else []
                return
            for data in (self.before(welcome) if self.before else []):
                sock.sendall(data)
            while True:
                msg = conn.recv(idle_timeout=60)
                self.messages.append(msg)
                if isinstance(msg, Error):
                    self.errors.append(msg)
                    return
                if isinstance(msg, Bye):
                    return
                reply = None
                if isinstance(msg, Ping):
                    sock.sendall(raw_bytes({"type": "pong", "t": msg.t}))
                elif isinstance(msg, Fit) and self.on_fit is not None:
                    reply = self.on_fit(msg, welcome)
                elif isinstance(msg, Evaluate) and self.on_evaluate is not None:
                    reply = self.on_evaluate(msg, welcome)
                if reply is not None:
                    sock.sendall(raw_bytes(*reply))
        except (PeerClosed, OSError, TimeoutError, ProtocolError):
            self.closed_by_server = True
        finally:
            conn.close()


def honest_partition_clients(data: Any, port: int, ids: list[str], token: str | None = None) -> list[FederatedClient]:
    """Clients of a built-in dataset's partitions (``data``: FederatedData), as ``client_new.py`` makes them."""
    names = list(data.dataset.feature_names)
    return [FederatedClient(cid, LocalData(*data.client_data(i), feature_names=names),
                            ClientSettings(port=port, token=token, connect_timeout_s=10)) for i, cid in enumerate(ids)]


def params_like(welcome: Welcome, scale: float = 1.0) -> list[tuple[str, np.ndarray]]:
    """Arrays of the task's linear-model shapes (coef_, intercept_), every value ``scale``."""
    task = welcome.task
    k = 1 if len(task["classes"]) == 2 else len(task["classes"])
    return [("coef_", np.full((k, task["n_features"]), scale)), ("intercept_", np.full(k, scale))]


def rss_mib() -> float:
    """This process's resident memory now (Linux)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0
