"""The federated server: one event loop for every connection, a client registry, events.

All network I/O (accept, TLS, handshake, reading and writing frames) runs on
one asyncio event loop in one thread, however many clients there are: the
number of server threads does not grow with the clients. Readers turn frames
into items on a single inbox queue; the round loop (``RoundRunner.run`` in
fl/federation/rounds.py, in a thread of its own) is the only consumer of
that queue and sends every ``fit``, ``evaluate`` and ``bye`` through this
server, from its thread, without waiting on the network. A client that
misbehaves or vanishes only ever affects itself: its reader marks it gone and
the round loop counts it as a failure if it owed a result.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import queue
import socket
import ssl
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from fl.wire.aio import AioConnection, LoopThread, encode_message, start_gated_server
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
from fl.federation.admission import Gate, address_of, raise_open_file_limit  # session.py takes the last from here
from fl.federation.events import ClientStatus, EventSink, EventType, make_event
from fl.federation.identity import (
    MAX_JOINS_PER_CLIENT, NEW_IDS_PER_CLIENT, JoinRate, identity_problem, joins_per_address,
)
from fl.federation.liveness import DEFAULT_INTERVAL_S, DEFAULT_MISSES, Heartbeat, HeartbeatMonitor
from fl.federation.client_registry import (  # noqa: F401 - ClientSlot, Inbox, ServerStopped: importable from here too
    ALREADY_CONNECTED, ClientRegistry, ClientSlot, Inbox, ServerStopped,
)
from fl.data.site_summary import column_disagreements
from fl.federation.summary_exchange import TaskBuilder, exchange
from fl.federation.task import Task
from fl.wire.tls import peer_names

log = logging.getLogger(__name__)

HANDSHAKE_LIMITS = Limits(max_header_bytes=64 << 10, max_message_bytes=64 << 10, frame_timeout_s=10.0)


@dataclass
class ServerSettings:
    """Network side of a server; kept out of RunConfig (the token is a secret).

    What a person sets is declared once above this layer (fl/runs/network.py: the command line's flags and the
    Deploy form come from it); the defaults here are the same (tests/test_network_settings.py), but the port:
    0, a free one, for a server built in code (a simulation's).
    """

    host: str = "127.0.0.1"
    port: int = 0
    token: str | None = None
    max_clients: int = 1000
    wait_for_clients: int = 1  # rounds start once this many have joined ...
    join_timeout_s: float = 300.0  # ... or this long has passed with at least min_clients
    fewest_to_start: int = 0  # a run that has fewer (and fewer than min_clients) when the time is up fails
    hello_timeout_s: float = 10.0  # TLS handshake and the whole hello frame, from accept: one deadline
    # Connections accepted but not yet past hello prove nothing and hold a socket each: at most this many
    # at once, and this many from one remote address; one more is closed at once (REFUSED "busy").
    max_pending_handshakes: int = 256
    max_pending_per_address: int = 64
    limits: Limits = field(default_factory=Limits)
    ssl_context: Any = None  # an ssl.SSLContext for TLS (with client certificates: mutual TLS), or None
    tls_pin: str | None = None  # SHA-256 of the server certificate, to show clients (display only)
    tls_dir: str | None = None  # certificates made for this server alone, deleted when its run ends (hosting)
    # Ping every session this often; one silent for misses x interval is gone (0: no heartbeats). Told to
    # clients in welcome (fl/federation/liveness.py, docs/protocol.md "Heartbeats").
    heartbeat_interval_s: float = DEFAULT_INTERVAL_S
    heartbeat_misses: int = DEFAULT_MISSES
    # Who may join (fl/federation/identity.py): only these client ids, when any are given (--expect-clients, the
    # Deploy page's "Expected sites"); under mutual TLS, a client only under a name its certificate was issued to.
    expected_clients: tuple[str, ...] = ()
    # Joins (hellos admitted) from one remote address in any 60 s: of one client id, and of all (None: twice
    # max_clients, at least 20: one address may host every client, joining and rejoining); more are refused "rate".
    max_joins_per_client: int = MAX_JOINS_PER_CLIENT
    max_joins_per_address: int | None = None
    # What a client must offer in hello.features to join (secure aggregation's stages: "secagg").
    required_features: tuple[str, ...] = ()


class FederatedServer(ClientRegistry):
    """Accepts clients for one run and hands their messages to the round loop (registry: ClientRegistry)."""

    def __init__(self, task: Task, settings: ServerSettings | None = None, on_event: EventSink | None = None,
                 run_id: str | None = None, builder: TaskBuilder | None = None):
        self.task = task
        self.builder = builder  # a server without data: the task comes from the clients' summaries (summary_exchange.py)
        self.settings = settings or ServerSettings()
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self._sink = on_event
        self._lock = threading.Lock()
        self._clients: dict[str, ClientSlot] = {}
        # (kind, client_id, payload, connection): the connection tells a message of
        # the client's current session from one of an earlier session under the same id.
        self.inbox: queue.Queue[tuple[Inbox, str, Any, AioConnection]] = queue.Queue()
        self.stop_requested = threading.Event()
        self.stop_requested_at: float | None = None
        self.start_now = threading.Event()
        self.accepting = threading.Event()
        self._io: LoopThread | None = None
        self._listener: asyncio.Server | None = None
        # Set by a simulation: whether any of its client workers still runs. When none
        # does, waiting for more clients is pointless and the run fails at once.
        self.clients_alive: Callable[[], bool] | None = None
        self.join_note: Callable[[], str | None] | None = None  # a simulation's: where its clients run
        self.last_leave_reason: str | None = None
        self.address: tuple[str, int] | None = None
        self._gate: Gate | None = None  # pending-handshake caps and refusals; made by bind(), on the loop only
        self._joins = JoinRate(joins_per_address(self.settings.max_joins_per_address, self.settings.max_clients),
                               self.settings.max_joins_per_client, new_ids_per_address=self.settings.max_clients,
                               new_ids=NEW_IDS_PER_CLIENT * self.settings.max_clients)  # event loop only

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
        """Bind and start accepting on the server's event loop; returns the real (host, port).

        Port 0 picks a free one. Raises OSError (e.g. address in use) for the
        caller to report; nothing is left running then.
        """
        raise_open_file_limit()
        self._io = LoopThread(f"fl-io-{self.run_id}")
        self._io.loop.set_exception_handler(self._loop_exception)
        self._liveness = HeartbeatMonitor(self.heartbeat, self.slots, self._mark_gone)
        if self.heartbeat.on:  # one task sweeps every session (cancelled with the others on close)
            asyncio.run_coroutine_threadsafe(self._liveness.run(), self._io.loop)
        self._gate = Gate(self.settings.max_pending_handshakes, self.settings.max_pending_per_address,
                          lambda **fields: self.emit(EventType.REFUSED, **fields), self._io.loop)
        try:
            # TLS is not the listener's: each connection upgrades itself (_open_session), so the TLS
            # handshake is inside the hello deadline, counts as pending, and its failures are reported.
            self._listener = self._io.call(start_gated_server(
                self._on_connection, self._gate.admit, self.settings.host, self.settings.port,
                pause_reading=self.settings.ssl_context is not None, backlog=4096, reuse_address=True), timeout=30)
        except BaseException:
            self._io.stop()
            self._io = None
            raise
        self.address = self._listener.sockets[0].getsockname()[:2]
        self.accepting.set()
        self.emit(EventType.LISTENING, host=self.address[0], port=self.address[1], run_id=self.run_id)
        return self.address

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict) -> None:
        """A failed TLS handshake surfaces here, not in a connection handler: report it as a refusal."""
        exc = context.get("exception")
        if isinstance(exc, (ssl.SSLError, ConnectionError, TimeoutError)):
            transport = context.get("transport")
            peer = transport.get_extra_info("peername") if transport is not None else None
            where = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "?"
            if self._gate is not None:
                self._gate.refuse("tls", where, str(exc) or type(exc).__name__)
            return
        loop.default_exception_handler(context)

    def stop(self) -> None:
        """Ask the round loop to end; it says bye to everyone and closes."""
        if not self.stop_requested.is_set():
            self.stop_requested_at = time.time()  # the done event says when: no round starts after it
        self.stop_requested.set()
        self.start_now.set()

    def close(self, reason: str = "run finished", final_metrics: dict | None = None) -> None:
        """Say bye to every client still here, then close every connection and the event loop."""
        self.accepting.clear()
        io, self._io = self._io, None
        if io is None:  # never bound, or closed already
            return
        try:
            io.call(self._close_all(Bye(reason=reason, final_metrics=final_metrics)), timeout=15)
        except Exception:  # pragma: no cover - a loop that cannot even close: stop it anyway
            log.exception("closing the server's connections failed")
        for slot in self.slots():
            self._set_status(slot.client_id, ClientStatus.GONE)
        io.stop()

    async def _close_all(self, bye: Bye) -> None:
        if self._listener is not None:
            self._listener.close()
        if self._gate is not None:
            self._gate.refusals.flush_all()  # refusals still being counted are reported, not lost
        buffers, size = encode_message(bye)
        slots = self.slots()
        for slot in slots:
            if slot.status != ClientStatus.GONE:
                try:
                    slot.conn.send_encoded(buffers, size)
                except PeerClosed:
                    pass
        await asyncio.gather(*(slot.conn.drain(2.0) for slot in slots))
        for slot in slots:
            slot.conn.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ------------------------------------------------------------------ registry (and ClientRegistry)
    _liveness: HeartbeatMonitor  # made by bind(): pings, drops the silent, says whether a session may be replaced

    @property
    def heartbeat(self) -> Heartbeat:
        return Heartbeat(self.settings.heartbeat_interval_s, self.settings.heartbeat_misses)

    # ------------------------------------------------------------------ connections (on the event loop)
    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """TLS and hello within one deadline (the connection is pending until then), then read frames."""
        conn: AioConnection | None = None
        try:
            try:
                conn, client_id = await self._open_session(reader, writer)
            finally:
                if self._gate is not None:
                    self._gate.release(writer.get_extra_info("peername"))
            if conn is None or client_id is None:
                return
            conn.limits = self.settings.limits
            await self._read_loop(client_id, conn)
        except asyncio.CancelledError:
            pass
        finally:
            if conn is not None:
                conn.close()
            else:
                writer.transport.abort()

    async def _open_session(self, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter) -> tuple[AioConnection | None, str | None]:
        """(connection, client id) once TLS (if on) and a valid hello are through; (conn or None, None) if not.

        One deadline, ``hello_timeout_s`` from accept, covers the TLS handshake
        and the whole hello frame, however its bytes trickle in: a peer sending
        a byte a second cannot stretch it (the per-frame timeout alone would
        let it hold the connection for the idle wait plus a whole frame time).
        """
        deadline = asyncio.get_running_loop().time() + self.settings.hello_timeout_s
        if self.settings.ssl_context is not None and self._gate is not None and not await self._gate.start_tls(
                writer, self.settings.ssl_context, deadline, self.settings.hello_timeout_s):
            return None, None
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Until a client has said a valid hello it may send only small frames:
        # an unauthenticated peer must not make us allocate a 256 MiB body.
        conn = AioConnection(reader, writer, HANDSHAKE_LIMITS)
        ssl_object = writer.get_extra_info("ssl_object")  # mutual TLS: the names its certificate was issued to
        names = peer_names(ssl_object.getpeercert()) if ssl_object is not None and \
            self.settings.ssl_context.verify_mode == ssl.CERT_REQUIRED else None
        return conn, await self._handshake(conn, deadline, address_of(writer.get_extra_info("peername")), names)

    def _refuse(self, conn: AioConnection, code: str, message: str) -> None:
        """Tell the peer why (an error frame) and report it; a flood of refusals is summarised (RefusalLog)."""
        if self._gate is not None:
            self._gate.refuse(code, conn.peer, message)
        conn.send_error(code, message)

    async def _handshake(self, conn: AioConnection, deadline: float, address: str,
                         cert_names: tuple[str, ...] | None) -> str | None:
        """The hello and its checks; the client id once it is admitted (``cert_names``: None without mutual TLS)."""
        try:
            async with asyncio.timeout_at(deadline):
                hello = await conn.recv(idle_timeout=None)
        except (TimeoutError, PeerClosed, OSError):
            return None  # silent, idle or too slow: closed without a word (an idle flood must not fill the log)
        except ProtocolError as exc:
            self._refuse(conn, exc.code, str(exc))
            await conn.drain(1.0)
            return None
        problem, summary, data, deferred = self._check_hello(hello), None, None, False
        if problem is None:  # who it says it is, and how often it has joined (fl/federation/identity.py)
            problem = identity_problem(hello.client_id, cert_names, self.settings.expected_clients) \
                or self._joins.problem(address, hello.client_id)
        if problem is None and self.builder is not None:  # no data here: the client's summary first
            summary, problem = await exchange(hello, conn, self.builder, self.settings.limits)
            if summary is not None:  # its numbers and texts checked off the loop, before any lock
                data, problem = await asyncio.to_thread(self.builder.validate, summary, hello.n_samples)
        if problem is None:
            with self._lock:
                problem = (self.builder.check(data, self.task) if data else None) or self._admit(hello, conn)
                if problem is None and data is not None:
                    active = {cid for cid, s in self._clients.items() if s.status != ClientStatus.GONE}
                    deferred = self.builder.keep(hello.client_id, data, active)
        if problem is not None:
            self._refuse(conn, *problem)
            await conn.drain(1.0)
            return None
        self._joins.joined(address, hello.client_id)
        try:
            if not deferred:
                conn.send(self._welcome())
        except PeerClosed:
            self._mark_gone(hello.client_id, "left during handshake", conn)
            return None
        extra = {"n_classes": len(summary.labels)} if summary is not None else {}
        if data is not None and self.builder.merged is not None:  # a late joiner holding a column otherwise
            disagreed = column_disagreements(data, self.builder.merged.columns)
            if disagreed:
                extra["disagreed"] = disagreed
        self.emit(EventType.JOIN, client_id=hello.client_id, n_samples=hello.n_samples, peer=conn.peer, **extra)
        return hello.client_id

    def _welcome(self) -> Welcome:
        beat = self.heartbeat
        return Welcome(run_id=self.run_id, task=self.task.to_dict(), heartbeat_s=beat.interval_s or None,
                       heartbeat_misses=beat.misses if beat.on else None)

    @property
    def task_ready(self) -> bool:
        """Whether the task is final (always, unless it is still to be built from the clients' summaries)."""
        return self.builder is None or self.builder.ready

    def build_task(self) -> Task:
        """The waiting clients' summaries make the task; welcome them (round loop, before round 1). DataError
        when they make none (no shared column, one class in all)."""
        assert self.builder is not None
        active = set(self.active_ids())  # a site that left before round 1 does not shape the task
        with self._lock:
            self.task, report, left_out = self.builder.build(active)
            waiting = list(self.builder.waiting)
        refused = []  # sites that cannot build this task: refused before round 1
        for cid, (code, why) in left_out.items():
            slot = self.slot(cid)
            if slot is not None:
                self._mark_gone(cid, f"left out of the task ({code}): {why}", slot.conn)
                refused.append((slot.conn, code, why))
        io = self._io
        if refused and io is not None:
            try:
                io.call(self._refuse_all(refused), timeout=5)
            except Exception:  # pragma: no cover - a loop too busy to say why: they are gone all the same
                log.exception("telling the left-out sites why failed")
                for conn, _, _ in refused:
                    conn.abort()
        self.broadcast(waiting, self._welcome())
        self.emit(EventType.DATA_REPORT, report=report)
        return self.task

    @staticmethod
    async def _refuse_all(refused: list[tuple[AioConnection, str, str]]) -> None:
        """On the loop: each its error, written before the close (a close from another thread could overtake
        the write and lose it), then closed."""
        for conn, code, why in refused:
            conn.send_error(code, why)
        await asyncio.gather(*(conn.drain(1.0) for conn, _, _ in refused))
        for conn, _, _ in refused:
            conn.close()

    def _check_hello(self, hello: Any) -> tuple[str, str] | None:
        """(error code, why) when the first message is not a hello this run takes."""
        if not isinstance(hello, Hello):
            return "message", "the first message must be hello"
        if hello.protocol != PROTOCOL_VERSION:
            return "version", f"server speaks protocol {PROTOCOL_VERSION}, client sent {hello.protocol}"
        if self.settings.token is not None and not hmac.compare_digest(
                (hello.token or "").encode(), self.settings.token.encode()):
            return "auth", "wrong or missing token"
        if self.task.feature_names is None and self.builder is None and hello.n_features != self.task.n_features:
            return "shape", f"task has {self.task.n_features} features, client has {hello.n_features}"
        return None

    def _admit(self, hello: Hello, conn: AioConnection) -> tuple[str, str] | None:
        """Register the client (the registry lock is held), or say why not.

        A session still marked connected under the same id gives way when it
        is dead (closed, or silent past a heartbeat interval: a client
        reconnecting); a live one keeps its id and the newcomer is refused.
        """
        old = self._clients.get(hello.client_id)
        old = old if old is not None and old.status != ClientStatus.GONE else None
        dead = old is not None and self._liveness.replaceable(old)
        if not self.accepting.is_set():
            return "full", "the run is not accepting clients"
        cap = self.settings.max_clients  # sessions counted only near it: a scan per join is quadratic at 10,000
        if len(self._clients) - dead >= cap and self._n_active() - dead >= cap:
            return "full", "the run is full"
        if old is not None and not dead:
            return "auth", f"client id {hello.client_id!r} {ALREADY_CONNECTED}"
        lacking = [f for f in self.settings.required_features if f not in (hello.features or [])]
        if lacking:
            return "feature", (f"this run needs {', '.join(lacking)} (secure aggregation), which this client does not "
                               f"offer in hello.features: update the client")
        if old is not None:
            self._replace_dead(old)
        self._clients[hello.client_id] = ClientSlot(hello.client_id, conn, hello.n_samples, conn.peer)
        return None

    async def _read_loop(self, client_id: str, conn: AioConnection) -> None:
        """Read this session's frames until it ends; whatever ends it, the slot is marked gone (no ghost slot).

        A message that cannot be parsed or handled is this peer's protocol
        error, never the server's: it is told why and dropped, and the run goes on.
        """
        slot = self.slot(client_id)
        if slot is None or slot.conn is not conn:  # already replaced by a newer session under its id
            conn.close()
            return
        reason = "left"
        try:
            reason = await self._serve(slot, conn)
        except asyncio.CancelledError:
            reason = "server closing"
            raise
        except Exception as exc:  # a bug or an input nothing foresaw: this peer's fault, never the run's
            log.exception("session of %s failed", client_id)
            reason = f"protocol error (message): could not handle its message ({type(exc).__name__})"
            try:
                conn.send_error("message", "the server could not handle your message")
                await conn.drain(1.0)
            except Exception:  # pragma: no cover - the peer may be gone already
                pass
        finally:
            self._mark_gone(client_id, reason, conn)  # first: no round may pick a slot whose socket is closing
            conn.close()

    async def _serve(self, slot: ClientSlot, conn: AioConnection) -> str:
        """The session's messages: results to the inbox, pings answered; returns why it ended."""
        while True:
            try:
                msg = await conn.recv(idle_timeout=None)
            except ProtocolError as exc:
                conn.send_error(exc.code, str(exc))
                await conn.drain(1.0)
                return f"protocol error ({exc.code}): {exc}"
            except (PeerClosed, OSError, TimeoutError):
                return "disconnected"
            if isinstance(msg, (FitResult, EvaluateResult)):
                self.inbox.put((Inbox.RESULT, slot.client_id, msg, conn))
            elif isinstance(msg, Ping):
                slot.pings_itself = True  # it answers while it trains: silence is held against it at any time
                try:
                    conn.send(Pong(t=msg.t))
                except PeerClosed:
                    return "disconnected"
            elif isinstance(msg, Pong):
                continue
            elif isinstance(msg, Error):
                return f"client error ({msg.code}): {msg.message}"
            else:
                reason = f"unexpected message {type(msg).__name__}"
                conn.send_error("message", reason)
                await conn.drain(1.0)
                return reason
