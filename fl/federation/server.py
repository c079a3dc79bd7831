"""The federated server: accept loop, handshake, client registry, events.

One thread accepts; one reader thread per client turns frames into items on
a single inbox queue; the round loop (``RoundRunner.run`` in
fl/federation/rounds.py, which sends every ``fit``, ``evaluate`` and ``bye``
through this server) is the only consumer of that queue. A client that
misbehaves or vanishes only ever affects itself: its reader thread marks it
gone and the round loop counts it as a failure if it owed a result.
"""

from __future__ import annotations

import hmac
import logging
import queue
import socket
import threading
import time
import uuid
from enum import StrEnum
from dataclasses import dataclass, field
from typing import Any, Callable

from fl.wire.connection import Connection
from fl.wire import (
    PROTOCOL_VERSION,
    Bye,
    Error,
    EvaluateResult,
    FitResult,
    Hello,
    Limits,
    PeerClosed,
    Ping,
    Pong,
    ProtocolError,
    Welcome,
)
from fl.federation.events import ClientStatus, EventSink, EventType, make_event
from fl.federation.task import Task

log = logging.getLogger(__name__)

HANDSHAKE_LIMITS = Limits(max_header_bytes=64 << 10, max_message_bytes=64 << 10, frame_timeout_s=10.0)


@dataclass
class ServerSettings:
    """Network side of a server; kept out of RunConfig (the token is a secret)."""

    host: str = "127.0.0.1"
    port: int = 0
    token: str | None = None
    max_clients: int = 1000
    wait_for_clients: int = 1  # rounds start once this many have joined ...
    join_timeout_s: float = 120.0  # ... or this long has passed with at least min_clients
    hello_timeout_s: float = 10.0
    limits: Limits = field(default_factory=Limits)
    ssl_context: Any = None  # an ssl.SSLContext for TLS, or None
    tls_pin: str | None = None  # SHA-256 of the server certificate, to show clients (display only)


@dataclass
class ClientSlot:
    """What the server knows of one client; never its data."""

    client_id: str
    conn: Connection
    n_samples: int
    peer: str
    status: ClientStatus = ClientStatus.CONNECTED
    joined_at: float = field(default_factory=time.time)


class Inbox(StrEnum):
    """What a reader thread hands the round loop: a result, or news that the client is gone."""

    RESULT = "result"
    GONE = "gone"


class ServerStopped(Exception):
    """The server was asked to stop; the round loop unwinds."""


class FederatedServer:
    """Accepts clients for one run and hands their messages to the round loop."""

    def __init__(self, task: Task, settings: ServerSettings | None = None, on_event: EventSink | None = None,
                 run_id: str | None = None):
        self.task = task
        self.settings = settings or ServerSettings()
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self._sink = on_event
        self._lock = threading.Lock()
        self._clients: dict[str, ClientSlot] = {}
        # (kind, client_id, payload, connection): the connection tells a message of
        # the client's current session from one of an earlier session under the same id.
        self.inbox: queue.Queue[tuple[Inbox, str, Any, Connection]] = queue.Queue()
        self.stop_requested = threading.Event()
        self.start_now = threading.Event()
        self.accepting = threading.Event()
        self._listener: socket.socket | None = None
        # Set by a simulation: whether any of its client workers still runs. When none
        # does, waiting for more clients is pointless and the run fails at once.
        self.clients_alive: Callable[[], bool] | None = None
        self.last_leave_reason: str | None = None
        self._threads: list[threading.Thread] = []
        self.address: tuple[str, int] | None = None

    # ------------------------------------------------------------------ events
    def emit(self, kind: EventType, **fields: Any) -> None:
        """Hand an event to the sink; a failing sink must never stop the server."""
        event = make_event(kind, **fields)
        if self._sink is None:
            return
        try:
            self._sink(event)
        except Exception:  # pragma: no cover - defensive
            log.exception("event sink failed on %s", kind)

    # ------------------------------------------------------------------ lifecycle
    def bind(self) -> tuple[str, int]:
        """Bind and start accepting; returns the real (host, port) (port 0 picks one).

        Raises OSError (e.g. address in use) for the caller to report.
        """
        family = socket.AF_INET6 if ":" in self.settings.host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((self.settings.host, self.settings.port))
            listener.listen(128)
        except OSError:
            listener.close()
            raise
        listener.settimeout(0.2)
        self._listener = listener
        self.address = listener.getsockname()[:2]
        self.accepting.set()
        self._spawn(self._accept_loop, "fl-accept")
        self.emit(EventType.LISTENING, host=self.address[0], port=self.address[1], run_id=self.run_id)
        return self.address

    def stop(self) -> None:
        """Ask the round loop to end; it says bye to everyone and closes."""
        self.stop_requested.set()
        self.start_now.set()

    def close(self, reason: str = "run finished", final_metrics: dict | None = None) -> None:
        """Say bye to every client still here, then close every socket."""
        self.accepting.clear()
        if self._listener is not None:
            try:
                self._listener.close()
            except OSError:
                pass
        for slot in self.slots():
            if slot.status != ClientStatus.GONE:
                try:
                    slot.conn.send(Bye(reason=reason, final_metrics=final_metrics))
                except (PeerClosed, OSError):
                    pass
            slot.conn.close()
            self._set_status(slot.client_id, ClientStatus.GONE)
        for thread in self._threads:
            thread.join(timeout=2.0)

    def _spawn(self, target: Callable, name: str, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]

    # ------------------------------------------------------------------ registry
    def slots(self) -> list[ClientSlot]:
        with self._lock:
            return list(self._clients.values())

    def active_ids(self) -> list[str]:
        """Connected clients, sorted so that sampling is reproducible."""
        with self._lock:
            return sorted(cid for cid, s in self._clients.items() if s.status != ClientStatus.GONE)

    def slot(self, client_id: str) -> ClientSlot | None:
        with self._lock:
            return self._clients.get(client_id)

    def _set_status(self, client_id: str, status: ClientStatus) -> None:
        with self._lock:
            slot = self._clients.get(client_id)
            if slot is not None and slot.status != ClientStatus.GONE:
                slot.status = status

    def set_status(self, client_ids: list[str], status: ClientStatus) -> None:
        for cid in client_ids:
            self._set_status(cid, status)

    def bytes_totals(self) -> tuple[int, int]:
        """(sent, received) over every connection this run has had."""
        slots = self.slots()
        return sum(s.conn.bytes_sent for s in slots), sum(s.conn.bytes_received for s in slots)

    def wait_for_clients(self, min_clients: int) -> None:
        """Block until enough clients joined (or a manual start / timeout).

        Raises ServerStopped on stop and RuntimeError when the timeout passes
        with fewer than ``min_clients`` connected.
        """
        wanted = max(min_clients, self.settings.wait_for_clients)
        deadline = time.monotonic() + self.settings.join_timeout_s
        while True:
            if self.stop_requested.is_set():
                raise ServerStopped()
            n = len(self.active_ids())
            if n >= wanted or (self.start_now.is_set() and n >= min_clients):
                return
            if self.clients_alive is not None and not self.clients_alive() and n < wanted:
                if n >= min_clients:
                    return
                why = f" (the last one: {self.last_leave_reason})" if self.last_leave_reason else ""
                raise RuntimeError(f"every client left before the first round{why}")
            if time.monotonic() > deadline:
                if n >= min_clients:
                    return
                raise RuntimeError(
                    f"only {n} of the {min_clients} required clients joined within "
                    f"{self.settings.join_timeout_s:g} s"
                )
            time.sleep(0.05)

    # ------------------------------------------------------------------ sockets
    def _accept_loop(self) -> None:
        assert self._listener is not None
        while self.accepting.is_set():
            try:
                sock, _addr = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._spawn(self._serve_connection, "fl-conn", sock)

    def _wrap(self, sock: socket.socket) -> socket.socket:
        if self.settings.ssl_context is None:
            return sock
        sock.settimeout(self.settings.hello_timeout_s)
        wrapped = self.settings.ssl_context.wrap_socket(sock, server_side=True)
        wrapped.settimeout(None)
        return wrapped

    def _serve_connection(self, sock: socket.socket) -> None:
        """Handshake, then read frames until the client leaves."""
        try:
            sock = self._wrap(sock)
        except OSError as exc:
            self.emit(EventType.REFUSED, peer="?", code="tls", message=str(exc))
            sock.close()
            return
        # Until a client has said a valid hello it may send only small frames:
        # an unauthenticated peer must not make us allocate a 256 MiB body.
        conn = Connection(sock, HANDSHAKE_LIMITS)
        client_id = self._handshake(conn)
        if client_id is None:
            conn.close()
            return
        conn.limits = self.settings.limits
        self._read_loop(client_id, conn)

    def _refuse(self, conn: Connection, code: str, message: str) -> None:
        self.emit(EventType.REFUSED, peer=conn.peer, code=code, message=message)
        conn.send_error(code, message)
        conn.close()

    def _handshake(self, conn: Connection) -> str | None:
        try:
            hello = conn.recv(idle_timeout=self.settings.hello_timeout_s)
        except (TimeoutError, PeerClosed, OSError):
            return None
        except ProtocolError as exc:
            self._refuse(conn, exc.code, str(exc))
            return None
        if not isinstance(hello, Hello):
            self._refuse(conn, "message", "the first message must be hello")
            return None
        if hello.protocol != PROTOCOL_VERSION:
            self._refuse(conn, "version", f"server speaks protocol {PROTOCOL_VERSION}, client sent {hello.protocol}")
            return None
        if self.settings.token is not None and not hmac.compare_digest(
            (hello.token or "").encode(), self.settings.token.encode()
        ):
            self._refuse(conn, "auth", "wrong or missing token")
            return None
        if self.task.feature_names is None and hello.n_features != self.task.n_features:
            self._refuse(conn, "shape", f"task has {self.task.n_features} features, client has {hello.n_features}")
            return None
        with self._lock:
            active = [s for s in self._clients.values() if s.status != ClientStatus.GONE]
            if not self.accepting.is_set() or len(active) >= self.settings.max_clients:
                reason = "the run is not accepting clients" if not self.accepting.is_set() else "the run is full"
                refuse: tuple[str, str] | None = ("full", reason)
            elif hello.client_id in self._clients and self._clients[hello.client_id].status != ClientStatus.GONE:
                refuse = ("auth", f"client id {hello.client_id!r} is already connected")
            else:
                refuse = None
                self._clients[hello.client_id] = ClientSlot(hello.client_id, conn, hello.n_samples, conn.peer)
        if refuse is not None:
            self._refuse(conn, *refuse)
            return None
        try:
            conn.send(Welcome(run_id=self.run_id, task=self.task.to_dict()))
        except (PeerClosed, OSError):
            self._mark_gone(hello.client_id, "left during handshake", conn)
            return None
        self.emit(EventType.JOIN, client_id=hello.client_id, n_samples=hello.n_samples, peer=conn.peer)
        return hello.client_id

    def _read_loop(self, client_id: str, conn: Connection) -> None:
        reason = "left"
        while True:
            try:
                msg = conn.recv(idle_timeout=None)
            except ProtocolError as exc:
                reason = f"protocol error ({exc.code}): {exc}"
                conn.send_error(exc.code, str(exc))
                break
            except (PeerClosed, OSError, TimeoutError):
                reason = "disconnected"
                break
            if isinstance(msg, (FitResult, EvaluateResult)):
                self.inbox.put((Inbox.RESULT, client_id, msg, conn))
            elif isinstance(msg, Ping):
                try:
                    conn.send(Pong(t=msg.t))
                except (PeerClosed, OSError):
                    reason = "disconnected"
                    break
            elif isinstance(msg, Pong):
                continue
            elif isinstance(msg, Error):
                reason = f"client error ({msg.code}): {msg.message}"
                break
            else:
                reason = f"unexpected message {type(msg).__name__}"
                conn.send_error("message", reason)
                break
        self._mark_gone(client_id, reason, conn)  # first: no round may pick a slot whose socket is closing
        conn.close()

    def is_current(self, client_id: str, conn: Connection) -> bool:
        """Whether ``conn`` is the client's live session (not an earlier one under the same id)."""
        slot = self.slot(client_id)
        return slot is not None and slot.conn is conn

    def _mark_gone(self, client_id: str, reason: str, conn: Connection) -> None:
        """Mark the session on ``conn`` gone; a newer session under the same id is left alone."""
        with self._lock:
            slot = self._clients.get(client_id)
            was_here = slot is not None and slot.conn is conn and slot.status != ClientStatus.GONE
            if was_here:
                slot.status = ClientStatus.GONE
        if was_here:
            self.last_leave_reason = f"{client_id}: {reason}"
            self.inbox.put((Inbox.GONE, client_id, reason, conn))
            if not self.stop_requested.is_set() and self.accepting.is_set():
                self.emit(EventType.LEAVE, client_id=client_id, reason=reason)
