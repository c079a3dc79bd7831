"""The wire protocol on an asyncio event loop: one loop serves every connection of a process.

``read_frame_async`` runs exactly the checks of ``read_frame`` (magic and
lengths before the header, the header before the body is allocated, the
whole frame within ``Limits.frame_timeout_s`` once its first byte has come),
so the server and a client host on an event loop speak the same protocol v1
as the blocking code. ``AioConnection`` is one framed stream: ``recv`` on
the loop, ``send`` from any thread (the frame is encoded by the caller and
written by the loop), byte counters for the round statistics.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from fl.wire.frames import PREFIX_SIZE, Limits, _build, _check_prefix, _parse_header, encode_frame
from fl.wire.fields import BLOB_FORMAT_SKOPS, Frame, PeerClosed, ProtocolError
from fl.wire.messages import Error, Message, parse_message

WRITE_BUFFER_FACTOR = 2  # a peer whose unsent bytes pass twice the largest frame is not reading: drop it


async def read_frame_async(reader: asyncio.StreamReader, limits: Limits,
                           idle_timeout: float | None = None) -> tuple[Frame, int]:
    """Read one frame; TimeoutError (nothing consumed) if no byte comes within ``idle_timeout``."""
    try:
        first = await asyncio.wait_for(reader.readexactly(1), idle_timeout)
    except asyncio.IncompleteReadError:
        raise PeerClosed("peer closed the connection") from None
    try:
        return await asyncio.wait_for(_rest_of_frame(reader, first, limits), limits.frame_timeout_s)
    except TimeoutError:
        raise ProtocolError("timeout", "peer stalled mid-frame") from None
    except asyncio.IncompleteReadError as exc:
        raise PeerClosed(f"peer closed the connection mid-frame ({len(exc.partial)} bytes of a part)") from None


async def _rest_of_frame(reader: asyncio.StreamReader, first: bytes, limits: Limits) -> tuple[Frame, int]:
    prefix = first + await reader.readexactly(PREFIX_SIZE - 1)
    header_len, body_len = _check_prefix(prefix, limits)
    header, layout, blob_size = _parse_header(await reader.readexactly(header_len), body_len, limits)
    body = await reader.readexactly(body_len) if body_len else b""
    return _build(header, layout, blob_size, body), PREFIX_SIZE + header_len + body_len


def encode_message(msg: Message) -> tuple[list[bytes | memoryview], int]:
    """A message's frame as send buffers, and its size: encode once, send to many."""
    header, arrays, blob = msg.to_frame()
    buffers = encode_frame(header, arrays, blob, BLOB_FORMAT_SKOPS)
    return buffers, sum(len(memoryview(b).cast("B")) for b in buffers)


class AioConnection:
    """One framed stream on an event loop. ``recv`` runs on the loop; ``send`` may be called from any thread."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, limits: Limits = Limits()):
        self.reader = reader
        self.writer = writer
        self.limits = limits
        self.loop = asyncio.get_running_loop()
        self.bytes_sent = 0
        self.bytes_received = 0
        self._closed = False
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else str(peer or "local")

    @property
    def closed(self) -> bool:
        return self._closed or self.writer.transport.is_closing()

    async def recv(self, idle_timeout: float | None = None) -> Message:
        """Read and parse one message (TimeoutError, PeerClosed, ProtocolError as ``Connection.recv``)."""
        if self._closed:
            raise PeerClosed(f"{self.peer}: connection is closed")
        try:
            frame, n = await read_frame_async(self.reader, self.limits, idle_timeout)
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

    def send_error(self, code: str, message: str) -> None:
        """Tell the peer why it is being dropped; best effort, never raises."""
        try:
            self.send(Error(code=code, message=message))
        except Exception:
            pass

    def close(self) -> None:
        """Close the stream; idempotent, from any thread, never raises."""
        if self._closed:
            return
        self._closed = True
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

    def _abort(self) -> None:
        self._closed = True
        self.writer.transport.abort()

    def __repr__(self) -> str:
        return f"AioConnection(peer={self.peer!r}, sent={self.bytes_sent}, received={self.bytes_received})"


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
