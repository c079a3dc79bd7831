"""Client sessions on an event loop, and a host that runs many of them in one process.

A ``ClientHost`` runs every client it is given (each with its own TCP
connection, data and local model) on one asyncio loop, and runs their
training and scoring on one compute thread, one at a time: clients of one
process never fight over the interpreter lock, and the loop stays free to
read frames and answer pings while a model trains. One host per process is
how a simulation spreads over worker processes (fl/runs/workers.py) and how
``client_new.py --partition-id 0-249`` hosts a range of partitions.

A session reads frames as they come and answers ``ping`` at once, while a
worker answers ``fit`` and ``evaluate`` one at a time on the compute thread:
so a client is heard however long it trains. With ``reconnect_s`` a client
that lost its server mid-run rejoins it under the same id, with the same
local state (``client_session``).

The session drives a client through the public methods ``HostedClient``
names; ``fl.federation.client.FederatedClient`` is the one client there is,
and it imports this module (its ``run()`` is a host of one), never the
other way round.
"""

from __future__ import annotations

import asyncio
import random
import socket
import ssl
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from fl.errors import FLError
from fl.federation.events import EventType
from fl.federation.identity import RATE
from fl.federation.liveness import DEFAULT_MISSES, Heartbeat, keep_alive
from fl.federation.client_registry import ALREADY_CONNECTED
from fl.federation.server import raise_open_file_limit
from fl.federation.summary_exchange import await_task, client_summary
from fl.federation.secure_sum import SECAGG_FEATURE
from fl.wire import SUMMARY_FEATURE, Bye, Error, Evaluate, EvaluateResult, Fit, FitResult, Hello, Limits, PeerClosed, \
    Ping, Pong, ProtocolError, Summarize, Welcome
from fl.wire.aio import AioConnection
from fl.wire.tls import fingerprint, normalise_pin

CONNECT_TRY_S = 10.0  # one connection attempt (TCP and TLS handshake) at most
CONNECT_BACKOFF = (0.05, 2.0)  # first wait and cap while a server is not up yet at the start
RECONNECT_BACKOFF = (0.5, 5.0)  # ... and while rejoining a server that went away
# Clients of one process between "connecting" and "hello answered" at a time: a server closes at once
# the connections of one address beyond its cap of pending handshakes (max_pending_per_address, 64 by
# default), so a host of 250 partitions must not knock 250 times at once.
HANDSHAKES_AT_ONCE = 16


@dataclass
class ClientResult:
    """How a client's part in a run ended."""

    client_id: str
    reason: str  # why it left: the bye reason, an error, "server gone", "stopped"
    rounds_trained: int = 0
    final_metrics: dict | None = None
    ok: bool = True
    lost: bool = False  # the server went away mid-run (not a bye, not a refusal): a reconnecting client rejoins
    # refused for now (its id held by a live session, a join limit): it tries again within its connect window
    refused_for_now: bool = False


class ClientError(FLError):
    """The client cannot take part (refused, wrong labels, missing columns)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class DialSettings(Protocol):
    """What a session reads of a client's settings (``fl.federation.client.ClientSettings`` declares them)."""

    host: str
    port: int
    token: str | None
    connect_timeout_s: float
    server_up: bool
    limits: Limits
    ssl_context: ssl.SSLContext | None
    server_hostname: str | None
    reconnect_s: float
    pin_sha256: str | None


class HostedClient(Protocol):
    """What a session needs of a client (``fl.federation.client.FederatedClient``): its identity, data and
    settings, the state a session keeps on it, and the four public methods it calls."""

    client_id: str
    data: Any  # LocalData: X, y
    settings: DialSettings
    seed: int
    behaviour: Any  # Behaviour: delay_s
    on_attempt: Callable[[int, str, float], None] | None
    conn: Any  # the session's connection, while it lasts
    joins: int  # welcomes received
    task: Any  # the Task it prepared for
    y: Any  # its training labels, once prepared

    def prepare(self, welcome: Welcome) -> None: ...

    def emit(self, kind: EventType, **fields: Any) -> None: ...

    def handle_fit(self, msg: Fit) -> FitResult: ...

    def handle_evaluate(self, msg: Evaluate) -> EvaluateResult: ...


_handshake_slots: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore]" = \
    weakref.WeakKeyDictionary()


def handshake_slots() -> asyncio.Semaphore:
    """This event loop's slots for handshakes in flight: taken per connection attempt (``open_stream``),
    given back when the attempt fails or, once connected, when the hello is answered (``_session``)."""
    loop = asyncio.get_running_loop()
    slots = _handshake_slots.get(loop)
    if slots is None:
        slots = _handshake_slots[loop] = asyncio.Semaphore(HANDSHAKES_AT_ONCE)
    return slots


@dataclass
class Backoff:
    """Waits between attempts, ``first`` doubling to ``cap``, each ±``jitter`` at random (clients that
    lost one server must not all knock again at the same instant); ``attempt`` counts the tries."""

    first: float
    cap: float
    jitter: float = 0.2
    attempt: int = 0
    _doublings: int = 0

    def pause(self) -> float:
        """The next wait."""
        base = min(self.first * 2 ** self._doublings, self.cap)
        self._doublings += base < self.cap
        return base * random.uniform(1 - self.jitter, 1 + self.jitter)


def tls_problem(exc: ssl.SSLError, settings: DialSettings) -> str:
    """An SSL error in words a person can act on."""
    where = f"{settings.host}:{settings.port}"
    text = str(exc)
    if "WRONG_VERSION_NUMBER" in text or "record layer failure" in text or "packet length too long" in text:
        return (f"the server at {where} does not speak TLS (it is a plain TCP server): drop --tls-ca / --tls-pin, "
                "or connect to the server's TLS port")
    if "pinned" in text:
        return (f"the certificate of the server at {where} does not match --tls-pin: this may be another server; "
                "check the fingerprint the server printed")
    if "CERTIFICATE_VERIFY_FAILED" in text:
        detail = "its name does not match" if "mismatch" in text.lower() else "it is not signed by the CA in --tls-ca"
        return f"the certificate of the server at {where} cannot be trusted ({detail})"
    return f"TLS with the server at {where} failed ({getattr(exc, 'reason', None) or text})"


def closed_before_welcome(settings: DialSettings) -> str:
    """A TLS server that hangs up before answering hello has most likely refused this client's certificate.

    Under TLS 1.3 a server checks the client certificate after the client
    considers the handshake done, and it closes without a word the client can
    read, so this is the one likely cause put in words.
    """
    return (f"the server at {settings.host}:{settings.port} closed the TLS connection before answering hello: "
            "if it requires client certificates, pass --tls-client-cert and --tls-client-key with a certificate "
            "signed by its client CA")


def _plain_os_error(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused: no server is listening there yet"
    if isinstance(exc, socket.gaierror):
        return "unknown host name"
    if isinstance(exc, TimeoutError):
        return "no answer: a firewall may drop the connection"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


async def open_stream(settings: DialSettings, stop: threading.Event,
                      on_attempt: Callable[[int, str, float], None] | None = None, timeout_s: float | None = None,
                      backoff: Backoff | None = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect, retrying with ``backoff`` (0.05 s doubling to 2 s) for ``timeout_s`` (``connect_timeout_s``).

    ``on_attempt(attempt, problem, seconds_left)`` is called after each failed
    attempt, so a person at a terminal sees that the client is waiting and
    why. TLS failures are not retried: ConnectionError with plain words.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + (settings.connect_timeout_s if timeout_s is None else timeout_s)
    backoff = backoff or Backoff(*CONNECT_BACKOFF)
    hostname = (settings.server_hostname or settings.host) if settings.ssl_context is not None else None
    while True:
        backoff.attempt += 1
        await handshake_slots().acquire()  # held on success: _session gives it back once hello is answered
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(
                settings.host, settings.port, ssl=settings.ssl_context, server_hostname=hostname), CONNECT_TRY_S)
            _check_pin(writer, settings)
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return reader, writer
        except ssl.SSLError as exc:
            handshake_slots().release()
            raise ConnectionError(tls_problem(exc, settings)) from None
        except (OSError, TimeoutError) as exc:
            handshake_slots().release()
            problem = _plain_os_error(exc)
            if settings.server_up and isinstance(exc, ConnectionRefusedError):
                raise ConnectionError(f"the server at {settings.host}:{settings.port} has gone ({problem})") from None
        except BaseException:
            handshake_slots().release()
            raise
        left, wait = deadline - loop.time(), backoff.pause()
        if left < wait or stop.is_set():
            raise ConnectionError(f"could not reach the server at {settings.host}:{settings.port} "
                                  f"after {backoff.attempt} attempts ({problem})")
        if on_attempt is not None:
            on_attempt(backoff.attempt, problem, left)
        await _sleep_unless(stop, wait)


def _check_pin(writer: asyncio.StreamWriter, settings: DialSettings) -> None:
    if not settings.pin_sha256:
        return
    ssl_object = writer.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else b""
    if fingerprint(der or b"") != normalise_pin(settings.pin_sha256):
        writer.close()
        raise ssl.SSLError("server certificate does not match the pinned SHA-256 fingerprint")


async def client_session(client: HostedClient, compute: ThreadPoolExecutor, stop: threading.Event) -> ClientResult:
    """One client's whole run: connect, hello, welcome, then serve until bye. Never raises.

    With ``settings.reconnect_s``, a client that has joined and then lost the
    server (the connection dropped, or the server silent past its heartbeats;
    not a ``bye``, not a refusal) keeps trying to rejoin for that long, with
    backoff and one ``on_attempt`` line per try, under the same id and with
    the same local model (``FederatedClient.prepare`` keeps it for the same
    task). Each rejoin opens a new window. A first join refused for now
    (its id held by a live session, a join limit: ``refused_for_now``) is
    tried again, with a line per try, until ``connect_timeout_s`` has passed.
    """
    loop = asyncio.get_running_loop()
    backoff, window_end, lost_why, rounds = Backoff(*CONNECT_BACKOFF), None, "", 0
    first_end = loop.time() + client.settings.connect_timeout_s
    while True:
        timeout_s = max((first_end if window_end is None else window_end) - loop.time(), 0.0)
        try:
            reader, writer = await open_stream(client.settings, stop, client.on_attempt, timeout_s, backoff)
        except ConnectionError as exc:
            why = str(exc) if window_end is None else f"{lost_why}; could not rejoin: {exc}"
            return ClientResult(client.client_id, why, rounds, ok=False)
        conn = AioConnection(reader, writer, client.settings.limits)
        client.conn, joins = conn, client.joins
        reply_s = client.settings.connect_timeout_s
        if window_end is not None:  # a frozen server accepts a connection but never answers it
            reply_s = max(min(reply_s, window_end - loop.time()), 1.0)
        try:
            result = await _session(client, conn, compute, stop, reply_s)
        finally:
            conn.close()
        rounds = result.rounds_trained = rounds + result.rounds_trained
        if result.refused_for_now and client.joins == 0 and not stop.is_set():
            left, wait = first_end - loop.time(), backoff.pause()
            if left < wait:
                return result
            if client.on_attempt is not None:
                client.on_attempt(backoff.attempt, result.reason, left)
            await _sleep_unless(stop, wait)
            if stop.is_set():
                return ClientResult(client.client_id, "stopped", rounds)
            continue
        if not result.lost or client.settings.reconnect_s <= 0 or client.joins == 0 or stop.is_set():
            return result
        if client.joins > joins:  # it was in the run: a new window from now
            backoff, lost_why = Backoff(*RECONNECT_BACKOFF), result.reason
            window_end = loop.time() + client.settings.reconnect_s
            client.emit(EventType.RECONNECTING, reason=result.reason, seconds=client.settings.reconnect_s)
            continue
        left, wait = window_end - loop.time(), backoff.pause()  # reached the server, but not through hello
        if left < wait:
            result.reason = f"{lost_why}; could not rejoin: {result.reason}"
            return result
        if client.on_attempt is not None:
            client.on_attempt(backoff.attempt, result.reason, left)
        await _sleep_unless(stop, wait)
        if stop.is_set():
            return ClientResult(client.client_id, "stopped", rounds)


async def _session(client: HostedClient, conn: AioConnection, compute: ThreadPoolExecutor,
                   stop: threading.Event, reply_s: float) -> ClientResult:
    loop = asyncio.get_running_loop()
    cid = client.client_id
    slot_held = True
    try:
        conn.send(Hello(client_id=cid, n_samples=len(client.data.y), n_features=int(client.data.X.shape[1]),
                        token=client.settings.token, features=[SUMMARY_FEATURE, SECAGG_FEATURE]))
        reply = await conn.recv(idle_timeout=reply_s)
        if isinstance(reply, Summarize):  # a server without data builds the task from the clients' summaries
            try:
                summary = await loop.run_in_executor(compute, client_summary, client.data, cid, client.seed, reply)
            except Exception as exc:  # data it cannot summarise: say so, leave
                conn.send_error("data", f"cannot summarise the local data: {exc}")
                return ClientResult(cid, f"cannot summarise the local data: {exc}", ok=False)
            conn.send(summary)
            client.emit(EventType.SUMMARY_SENT, rows=len(client.data.y))
            slot_held = False
            handshake_slots().release()  # the wait for the other sites may be long: not a handshake slot's
            reply = await await_task(conn)  # the first sites wait here for the others
    except (PeerClosed, OSError, TimeoutError, ProtocolError) as exc:
        lost = not isinstance(exc, ProtocolError)  # a server restarting may drop a hello: rejoining tries again
        if client.settings.ssl_context is not None and isinstance(exc, PeerClosed):
            return ClientResult(cid, closed_before_welcome(client.settings), ok=False, lost=lost)
        hint = "" if client.settings.ssl_context is not None or client.joins else \
            "; if the server uses TLS, add --tls-ca CA.pem or --tls-pin FINGERPRINT"
        return ClientResult(cid, f"handshake failed ({exc}){hint}", ok=False, lost=lost)
    finally:
        if slot_held:
            handshake_slots().release()  # taken by open_stream for this connection
    if isinstance(reply, Bye):  # the run ended (or could not build its task) before this client was welcomed
        return ClientResult(cid, f"the run ended before it began ({reply.reason})", ok=False)
    if isinstance(reply, Error):  # our own dead session may look alive to the server a little longer: try again
        held = reply.code == "auth" and ALREADY_CONNECTED in reply.message
        why = f"refused by server ({reply.code}): {reply.message}"
        if held:
            why += (" (a live session holds this id: this client's own earlier one, not timed out yet, or another "
                    "process using the same id)")
        return ClientResult(cid, why, ok=False, lost=held or reply.code == RATE,
                            refused_for_now=held or reply.code == RATE)
    if not isinstance(reply, Welcome):
        conn.send_error("message", "expected welcome")
        return ClientResult(cid, "server did not send welcome", ok=False)
    try:
        await loop.run_in_executor(compute, client.prepare, reply)
        client.joins += 1
        client.emit(EventType.WELCOME, run_id=reply.run_id, model=client.task.model, rejoined=client.joins > 1,
                     n_classes=len(client.task.classes), n_features=client.task.n_features, n_samples=len(client.y))
    except ClientError as exc:
        conn.send_error(exc.code, str(exc))
        await conn.drain(2.0)
        client.emit(EventType.CLIENT_ERROR, code=exc.code, message=str(exc))
        return ClientResult(cid, f"cannot take part ({exc.code}): {exc}", ok=False)
    timing = Heartbeat(reply.heartbeat_s, reply.heartbeat_misses or DEFAULT_MISSES) if reply.heartbeat_s else None
    return await _serve(client, conn, compute, stop, timing)


async def _serve(client: HostedClient, conn: AioConnection, compute: ThreadPoolExecutor,
                 stop: threading.Event, timing: Heartbeat | None) -> ClientResult:
    """Read every frame as it comes (a ping is answered at once, mid-fit too) until bye or the end.

    Requests go to ``_work``, which answers them one at a time; with the
    server's heartbeat ``timing``, ``keep_alive`` pings it and drops the
    connection if it falls silent.
    """
    cid, done = client.client_id, _Outcome()
    requests: asyncio.Queue = asyncio.Queue()
    tasks = [asyncio.create_task(_work(client, conn, compute, stop, requests, done))]
    if timing is not None:
        tasks.append(asyncio.create_task(keep_alive(conn, timing)))
    try:
        while True:
            try:
                msg = await conn.recv(idle_timeout=None)
                if isinstance(msg, (Fit, Evaluate)):
                    requests.put_nowait(msg)
                elif isinstance(msg, Ping):
                    conn.send(Pong(t=msg.t))
                elif isinstance(msg, Bye):
                    return ClientResult(cid, msg.reason, done.rounds, msg.final_metrics)
                elif isinstance(msg, Error):
                    return ClientResult(cid, f"server error ({msg.code}): {msg.message}", done.rounds, ok=False)
            except ProtocolError as exc:
                conn.send_error(exc.code, str(exc))
                return done.result or ClientResult(cid, f"protocol error: {exc}", done.rounds, ok=False)
            except (PeerClosed, OSError, TimeoutError):
                if done.result is not None or stop.is_set():
                    return done.result or ClientResult(cid, "stopped", done.rounds)
                watch = tasks[-1] if timing is not None and tasks[-1].done() else None
                silent = watch.result() if watch is not None and watch.exception() is None else None
                return ClientResult(cid, silent or "server gone", done.rounds, ok=False, lost=True)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@dataclass
class _Outcome:
    rounds: int = 0  # rounds whose fit was answered in this session (a round of trees takes several fits)
    last_round: int | None = None
    result: ClientResult | None = None  # set when the worker ended the session (a local failure)


async def _work(client: HostedClient, conn: AioConnection, compute: ThreadPoolExecutor, stop: threading.Event,
                requests: asyncio.Queue, done: _Outcome) -> None:
    """Answer fit and evaluate in order on the compute thread; a failure here ends the session."""
    loop = asyncio.get_running_loop()
    cid = client.client_id
    while True:
        msg = await requests.get()
        try:
            if isinstance(msg, Fit):
                result = await loop.run_in_executor(compute, client.handle_fit, msg)
                if client.behaviour.delay_s > 0:  # a slow client (simulated): late, without holding the CPU
                    await _sleep_unless(stop, client.behaviour.delay_s)
                conn.send(result)
                if msg.round != done.last_round:
                    done.rounds, done.last_round = done.rounds + 1, msg.round
            else:
                conn.send(await loop.run_in_executor(compute, client.handle_evaluate, msg))
        except PeerClosed:
            return  # the reader sees the connection go and says why
        except ProtocolError as exc:
            done.result = ClientResult(cid, f"protocol error: {exc}", done.rounds, ok=False)
            conn.send_error(exc.code, str(exc))
        except Exception as exc:  # local training failed: tell the server, leave cleanly
            done.result = ClientResult(cid, f"local failure: {exc}", done.rounds, ok=False)
            conn.send_error("internal", f"{type(exc).__name__}: {exc}")
        if done.result is not None:
            await conn.drain(2.0)
            conn.close()  # ends the reader, which returns done.result
            return


async def _sleep_unless(stop: threading.Event, seconds: float) -> None:
    end = asyncio.get_running_loop().time() + seconds
    while not stop.is_set() and asyncio.get_running_loop().time() < end:
        await asyncio.sleep(min(0.1, seconds))


class ClientHost:
    """Many clients on one event loop and one compute thread; ``run()`` blocks until all have left."""

    def __init__(self, clients: list[HostedClient], stop: threading.Event | None = None, name: str = "host"):
        self.clients = clients
        self.stop = stop or threading.Event()
        self.name = name

    def run(self) -> list[ClientResult]:
        """Every client's result, in the order given. Never raises for network faults."""
        return asyncio.run(self._main())

    async def _main(self) -> list[ClientResult]:
        raise_open_file_limit()
        compute = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"fl-compute-{self.name}")
        watcher = asyncio.create_task(self._close_on_stop())
        try:
            return list(await asyncio.gather(*(client_session(c, compute, self.stop) for c in self.clients)))
        finally:
            watcher.cancel()
            compute.shutdown(wait=True)

    async def _close_on_stop(self) -> None:
        """When asked to stop, close every connection: each session then ends at once."""
        while not self.stop.is_set():
            await asyncio.sleep(0.1)
        for client in self.clients:
            if client.conn is not None:
                client.conn.close()

