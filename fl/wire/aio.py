"""The wire protocol on an asyncio event loop: one loop serves every connection of a process.

This is the production transport. ``read_frame_async`` runs the codec's
checks (``fl.wire.codec``: magic and lengths before the header, the header
before the body is allocated) and adds the stall rule (a started frame must
keep coming: no gap of ``Limits.frame_timeout_s`` without a byte). ``AioConnection`` is one framed
stream: ``recv`` on the loop, ``send`` from any thread (the frame is encoded
by the caller and written by the loop), byte counters for the round
statistics, and a ``Meter`` of when the peer was last heard (heartbeats).
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Callable

import numpy as np

from fl.wire.codec import PREFIX_SIZE, Limits, build_frame, encode_frame, parse_header, parse_prefix
from fl.wire.fields import BLOB_FORMAT_SKOPS, Frame, PeerClosed, ProtocolError
from fl.wire.messages import Message, MessageStream, parse_message

WRITE_BUFFER_FACTOR = 2  # a peer whose unsent bytes pass twice the largest frame is not reading: drop it


class Meter:
    """Bytes received on a connection and when the last ones came (``time.monotonic()``).

    Counted as they arrive, mid-frame too: a peer sending a large frame
    slowly is heard all along, though it cannot answer a ping until the
    frame is done.
    """

    __slots__ = ("count", "heard_at")

    def __init__(self) -> None:
        self.count = 0
        self.heard_at = time.monotonic()

    def add(self, n: int) -> None:
        self.count += n
        self.heard_at = time.monotonic()


async def read_frame_async(reader: asyncio.StreamReader, limits: Limits, idle_timeout: float | None = None,
                           meter: Meter | None = None) -> tuple[Frame, int]:
    """Read one frame; TimeoutError (nothing consumed) if no byte comes within ``idle_timeout``.

    Once its first byte is in, the frame fails (ProtocolError "timeout") only
    when no byte of it has come for ``limits.frame_timeout_s``. Before judging, the
    bytes that arrived while this loop was busy elsewhere are read: a busy
    receiver never takes its own slowness for a stalled peer.

    No task is made per frame: the first byte waits under ``asyncio.timeout``
    and the rest under a ``_StallWatch`` timer, so a frame already in the
    buffer is read in one step (a frame's reading was 3 tasks and 2 timers).
    """
    meter = meter if meter is not None else Meter()
    try:
        if idle_timeout is None:
            first = await reader.readexactly(1)
        else:
            async with asyncio.timeout(idle_timeout):
                first = await reader.readexactly(1)
    except asyncio.IncompleteReadError:
        raise PeerClosed("peer closed the connection") from None
    meter.add(1)
    watch = _StallWatch(limits.frame_timeout_s, meter)
    try:
        return await _rest_of_frame(reader, first, limits, meter)
    except asyncio.IncompleteReadError as exc:
        raise PeerClosed(f"peer closed the connection mid-frame ({len(exc.partial)} bytes of a part)") from None
    except asyncio.CancelledError:
        if watch.stalled and watch.task.uncancel() == 0:
            raise ProtocolError("timeout", "peer stalled mid-frame") from None
        raise
    finally:
        watch.stop()


class _StallWatch:
    """Cancels the reading task when a period of ``timeout_s`` passes without a byte of the frame.

    A period that saw no byte gets one more turn of the loop first (a timer
    due at once runs after the reads the same wake-up brought in): bytes that
    came while the loop was busy count before the peer is judged.
    """

    __slots__ = ("loop", "task", "timeout_s", "meter", "seen", "stalled", "_grace", "_handle")

    def __init__(self, timeout_s: float, meter: Meter):
        self.loop = asyncio.get_running_loop()
        self.task = asyncio.current_task()
        self.timeout_s = timeout_s
        self.meter = meter
        self.seen = meter.count
        self.stalled = False
        self._grace = False
        self._handle: asyncio.TimerHandle | None = self.loop.call_later(timeout_s, self._check)

    def _check(self) -> None:
        if self.meter.count != self.seen:
            self.seen, self._grace = self.meter.count, False
            self._handle = self.loop.call_later(self.timeout_s, self._check)
        elif not self._grace:
            self._grace = True
            self._handle = self.loop.call_later(0, self._check)
        else:
            self._handle = None
            self.stalled = True
            if self.task is not None:
                self.task.cancel()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


async def _rest_of_frame(reader: asyncio.StreamReader, first: bytes, limits: Limits,
                         meter: Meter) -> tuple[Frame, int]:
    prefix = first + bytes(await _read(reader, PREFIX_SIZE - 1, meter))
    header_len, body_len = parse_prefix(prefix, limits)
    header, layout, blob_size = parse_header(await _read(reader, header_len, meter), body_len, limits)
    body = await _read(reader, body_len, meter) if body_len else b""
    return build_frame(header, layout, blob_size, body), PREFIX_SIZE + header_len + body_len


async def _read(reader: asyncio.StreamReader, n: int, meter: Meter) -> bytes | np.ndarray:
    """Exactly ``n`` bytes, counting each piece as it comes (usually all of it in one piece)."""
    data = await reader.read(n)
    got = len(data)
    meter.add(got)
    if got == n:
        return data
    out = np.empty(n, dtype=np.uint8)  # not bytearray: zero-filling 100 MB first costs more than the read
    view = memoryview(out)
    view[:got] = data
    while got < n:
        if not data:
            raise asyncio.IncompleteReadError(bytes(view[:got]), n)
        data = await reader.read(n - got)
        view[got:got + len(data)] = data
        got += len(data)
        meter.add(len(data))
    return out


def encode_message(msg: Message) -> tuple[list[bytes | memoryview], int]:
    """A message's frame as send buffers, and its size: encode once, send to many."""
    header, arrays, blob = msg.to_frame()
    buffers = encode_frame(header, arrays, blob, BLOB_FORMAT_SKOPS)
    return buffers, sum(len(memoryview(b).cast("B")) for b in buffers)


class AioConnection(MessageStream):
    """One framed stream on an event loop. ``recv`` runs on the loop; ``send`` (and ``send_error``, ``close``)
    may be called from any thread."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, limits: Limits = Limits()):
        self.reader = reader
        self.writer = writer
        self.limits = limits
        self.loop = asyncio.get_running_loop()
        self.bytes_sent = 0
        self.bytes_received = 0
        self.meter = Meter()  # every byte that comes in, when it comes: what liveness is judged on
        self._closed = False
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else str(peer or "local")

    @property
    def closed(self) -> bool:
        return self._closed or self.writer.transport.is_closing()

    @property
    def last_heard(self) -> float:
        """``time.monotonic()`` of the last byte received (of any frame, finished or not)."""
        return self.meter.heard_at

    async def recv(self, idle_timeout: float | None = None) -> Message:
        """One message: TimeoutError when none starts within ``idle_timeout`` (nothing consumed, the stream
        stays usable), PeerClosed when the peer is gone, ProtocolError for a bad frame (the stream's position
        is then lost: answer with ``send_error`` and ``close``)."""
        if self._closed:
            raise PeerClosed(f"{self.peer}: connection is closed")
        try:
            frame, n = await read_frame_async(self.reader, self.limits, idle_timeout, self.meter)
        except (ConnectionError, OSError) as exc:
            if isinstance(exc, TimeoutError):
                raise
            raise PeerClosed(f"{self.peer}: {exc}") from None
        self.bytes_received += n
        return parse_message(frame)

    def send(self, msg: Message) -> int:
        """Encode in the calling thread, write on the loop; PeerClosed if the connection is gone."""
        buffers, size = encode_message(msg)
        return self.send_encoded(buffers, size)

    def send_encoded(self, buffers: list[bytes | memoryview], size: int) -> int:
        if self.closed:
            raise PeerClosed(f"{self.peer}: connection is closed")
        if _on_loop(self.loop):
            self._write(buffers, size)
        else:
            self.loop.call_soon_threadsafe(self._write, buffers, size)
        return size

    @staticmethod
    def send_encoded_to_all(conns: list[AioConnection], buffers: list[bytes | memoryview], size: int) -> None:
        """``send_encoded`` to many connections with one wake-up of each loop, not one per connection: a
        broadcast from the round thread to a thousand clients is one hand-off. Closed connections are
        skipped (the caller checks ``closed`` first to say which could not be reached)."""
        by_loop: dict[asyncio.AbstractEventLoop, list[AioConnection]] = {}
        for conn in conns:
            by_loop.setdefault(conn.loop, []).append(conn)
        for loop, group in by_loop.items():
            if _on_loop(loop):
                _write_all(group, buffers, size)
            else:
                loop.call_soon_threadsafe(_write_all, group, buffers, size)

    def _write(self, buffers: list[bytes | memoryview], size: int) -> None:
        if self.closed:
            return
        self.writer.writelines(buffers)
        self.bytes_sent += size
        if self.writer.transport.get_write_buffer_size() > WRITE_BUFFER_FACTOR * self.limits.max_message_bytes:
            self._abort()  # the peer accepts no data: it would hold our memory forever

    async def drain(self, timeout: float) -> None:
        """Wait (bounded) until what was written has left for the peer."""
        try:
            await asyncio.wait_for(self.writer.drain(), timeout)
        except (TimeoutError, ConnectionError, OSError):
            pass

    def _release(self) -> None:
        """``close``: the writer closes on the loop, whichever thread asked."""
        if _on_loop(self.loop):
            self._close_now()
        else:
            try:
                self.loop.call_soon_threadsafe(self._close_now)
            except RuntimeError:  # the loop is already closed: so is the transport
                pass

    def _close_now(self) -> None:
        try:
            self.writer.close()
        except (ConnectionError, OSError, RuntimeError):
            pass

    def abort(self) -> None:
        """Drop the connection at once, unsent bytes and all: for a peer that is gone or silent, whose
        socket buffer may never drain (a plain close waits for it). From any thread, never raises."""
        if _on_loop(self.loop):
            self._abort()
        else:
            self._closed = True
            try:
                self.loop.call_soon_threadsafe(self._abort)
            except RuntimeError:  # the loop is already closed: so is the transport
                pass

    def _abort(self) -> None:
        self._closed = True
        self.writer.transport.abort()

    def __repr__(self) -> str:
        return f"AioConnection(peer={self.peer!r}, sent={self.bytes_sent}, received={self.bytes_received})"


class _GatedProtocol(asyncio.StreamReaderProtocol):
    """A stream protocol that asks ``admit(peername)`` first: a refused connection is aborted on the spot,
    before a task, a stream buffer or a read is spent on it."""

    def __init__(self, admit: Callable[[Any], bool], on_connection: Callable[..., Any], pause: bool):
        super().__init__(asyncio.StreamReader(), on_connection)
        self._admit = admit
        self._pause = pause

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._admit(transport.get_extra_info("peername")):
            transport.abort()  # type: ignore[attr-defined]
            return
        if self._pause:  # TLS comes next (StreamWriter.start_tls): no byte may reach the plain stream first
            transport.pause_reading()  # type: ignore[attr-defined]
        super().connection_made(transport)


async def start_gated_server(on_connection: Callable[..., Any], admit: Callable[[Any], bool], host: str, port: int,
                             *, pause_reading: bool = False, **kwargs: Any) -> asyncio.Server:
    """``asyncio.start_server``, with ``admit(peername)`` deciding each connection before anything is made for it.

    ``pause_reading``: the handler upgrades every connection to TLS itself
    (``writer.start_tls``), so that the TLS handshake counts as part of the
    connection's handshake time and its failures reach the handler.
    """
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: _GatedProtocol(admit, on_connection, pause_reading), host, port,
                                    **kwargs)


def _write_all(conns: list[AioConnection], buffers: list[bytes | memoryview], size: int) -> None:
    for conn in conns:
        conn._write(buffers, size)


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


class LoopThread:
    """An event loop running in a thread of its own, for code that is not async itself (the round loop)."""

    def __init__(self, name: str):
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
        self.loop.close()

    def call(self, coro: Any, timeout: float | None = None) -> Any:
        """Run a coroutine on the loop and wait for its result from this (other) thread."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)
