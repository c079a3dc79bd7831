"""Client sessions on an event loop, and a host that runs many of them in one process.

A ``ClientHost`` runs every client it is given (each with its own TCP
connection, data and local model) on one asyncio loop, and runs their
training and scoring on one compute thread, one at a time: clients of one
process never fight over the interpreter lock, and the loop stays free to
read frames and answer pings while a model trains. One host per process is
how a simulation spreads over worker processes (fl/runs/workers.py) and how
``client_new.py --partition-id 0-249`` hosts a range of partitions.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from fl.federation.client import ClientError, ClientResult, ClientSettings, FederatedClient
from fl.federation.events import EventType
from fl.federation.server import raise_open_file_limit
from fl.wire import Bye, Error, Evaluate, Fit, Hello, PeerClosed, Ping, Pong, ProtocolError, Welcome
from fl.wire.aio import AioConnection
from fl.wire.tls import fingerprint, normalise_pin

CONNECT_TRY_S = 10.0  # one connection attempt (TCP and TLS handshake) at most


def tls_problem(exc: ssl.SSLError, settings: ClientSettings) -> str:
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


def _plain_os_error(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused: no server is listening there yet"
    if isinstance(exc, socket.gaierror):
        return "unknown host name"
    if isinstance(exc, TimeoutError):
        return "no answer: a firewall may drop the connection"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


async def open_stream(settings: ClientSettings, stop: threading.Event,
                      on_attempt: Callable[[int, str, float], None] | None = None
                      ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect, retrying with exponential backoff (0.05 s doubling to 2 s) until the timeout.

    ``on_attempt(attempt, problem, seconds_left)`` is called after each failed
    attempt, so a person at a terminal sees that the client is waiting and
    why. TLS failures are not retried: ConnectionError with plain words.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.connect_timeout_s
    delay, attempt = 0.05, 0
    hostname = (settings.server_hostname or settings.host) if settings.ssl_context is not None else None
    while True:
        attempt += 1
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(
                settings.host, settings.port, ssl=settings.ssl_context, server_hostname=hostname), CONNECT_TRY_S)
            _check_pin(writer, settings)
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return reader, writer
        except ssl.SSLError as exc:
            raise ConnectionError(tls_problem(exc, settings)) from None
        except (OSError, TimeoutError) as exc:
            problem = _plain_os_error(exc)
        left = deadline - loop.time()
        if left < delay or stop.is_set():
            raise ConnectionError(f"could not reach the server at {settings.host}:{settings.port} "
                                  f"after {attempt} attempts ({problem})")
        if on_attempt is not None:
            on_attempt(attempt, problem, left)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)


def _check_pin(writer: asyncio.StreamWriter, settings: ClientSettings) -> None:
    if not settings.pin_sha256:
        return
    ssl_object = writer.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else b""
    if fingerprint(der or b"") != normalise_pin(settings.pin_sha256):
        writer.close()
        raise ssl.SSLError("server certificate does not match the pinned SHA-256 fingerprint")


async def client_session(client: FederatedClient, compute: ThreadPoolExecutor, stop: threading.Event) -> ClientResult:
    """One client's whole session: connect, hello, welcome, then serve until bye. Never raises."""
    try:
        reader, writer = await open_stream(client.settings, stop, client.on_attempt)
    except ConnectionError as exc:
        return ClientResult(client.client_id, str(exc), ok=False)
    conn = AioConnection(reader, writer, client.settings.limits)
    client.conn = conn
    try:
        return await _session(client, conn, compute, stop)
    finally:
        conn.close()


async def _session(client: FederatedClient, conn: AioConnection, compute: ThreadPoolExecutor,
                   stop: threading.Event) -> ClientResult:
    loop = asyncio.get_running_loop()
    cid = client.client_id
    try:
        conn.send(Hello(client_id=cid, n_samples=len(client.data.y), n_features=int(client.data.X.shape[1]),
                        token=client.settings.token))
        reply = await conn.recv(idle_timeout=client.settings.connect_timeout_s)
    except (PeerClosed, OSError, TimeoutError, ProtocolError) as exc:
        hint = "" if client.settings.ssl_context is not None else \
            "; if the server uses TLS, add --tls-ca CA.pem or --tls-pin FINGERPRINT"
        return ClientResult(cid, f"handshake failed ({exc}){hint}", ok=False)
    if isinstance(reply, Error):
        return ClientResult(cid, f"refused by server ({reply.code}): {reply.message}", ok=False)
    if not isinstance(reply, Welcome):
        conn.send_error("message", "expected welcome")
        return ClientResult(cid, "server did not send welcome", ok=False)
    try:
        await loop.run_in_executor(compute, client._prepare, reply)
        client._emit(EventType.WELCOME, run_id=reply.run_id, model=client.task.model,
                     n_classes=len(client.task.classes), n_features=client.task.n_features, n_samples=len(client.y))
    except ClientError as exc:
        conn.send_error(exc.code, str(exc))
        await conn.drain(2.0)
        client._emit(EventType.CLIENT_ERROR, code=exc.code, message=str(exc))
        return ClientResult(cid, f"cannot take part ({exc.code}): {exc}", ok=False)
    return await _serve(client, conn, compute, stop)


async def _serve(client: FederatedClient, conn: AioConnection, compute: ThreadPoolExecutor,
                 stop: threading.Event) -> ClientResult:
    loop = asyncio.get_running_loop()
    cid, rounds = client.client_id, 0
    while True:
        try:
            msg = await conn.recv(idle_timeout=None)
        except ProtocolError as exc:
            conn.send_error(exc.code, str(exc))
            return ClientResult(cid, f"protocol error: {exc}", rounds, ok=False)
        except (PeerClosed, OSError, TimeoutError):
            return ClientResult(cid, "stopped" if stop.is_set() else "server gone", rounds, ok=stop.is_set())
        try:
            if isinstance(msg, Fit):
                result = await loop.run_in_executor(compute, client.handle_fit, msg)
                if client.behaviour.delay_s > 0:  # a slow client (simulated): late, without holding the CPU
                    await _sleep_unless(stop, client.behaviour.delay_s)
                conn.send(result)
                rounds += 1
            elif isinstance(msg, Evaluate):
                conn.send(await loop.run_in_executor(compute, client.handle_evaluate, msg))
            elif isinstance(msg, Ping):
                conn.send(Pong(t=msg.t))
            elif isinstance(msg, Bye):
                return ClientResult(cid, msg.reason, rounds, msg.final_metrics)
            elif isinstance(msg, Error):
                return ClientResult(cid, f"server error ({msg.code}): {msg.message}", rounds, ok=False)
        except ProtocolError as exc:
            conn.send_error(exc.code, str(exc))
            return ClientResult(cid, f"protocol error: {exc}", rounds, ok=False)
        except PeerClosed:
            return ClientResult(cid, "stopped" if stop.is_set() else "server gone", rounds, ok=stop.is_set())
        except Exception as exc:  # local training failed: tell the server, leave cleanly
            conn.send_error("internal", f"{type(exc).__name__}: {exc}")
            await conn.drain(2.0)
            return ClientResult(cid, f"local failure: {exc}", rounds, ok=False)


async def _sleep_unless(stop: threading.Event, seconds: float) -> None:
    end = asyncio.get_running_loop().time() + seconds
    while not stop.is_set() and asyncio.get_running_loop().time() < end:
        await asyncio.sleep(min(0.1, seconds))


class ClientHost:
    """Many clients on one event loop and one compute thread; ``run()`` blocks until all have left."""

    def __init__(self, clients: list[FederatedClient], stop: threading.Event | None = None, name: str = "host"):
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

