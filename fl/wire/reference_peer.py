"""A blocking peer of wire protocol v1, written from docs/protocol.md: used by tests and bench, never by the engine.

The engine speaks the protocol on an event loop (``fl.wire.aio``); this
module is a second, independent implementation of the same contract on
plain blocking sockets, so that tests and benchmarks can play a client or a
server by hand (hostile peers, raw hellos, frames cut in the middle) and
check the engine against the document rather than against itself. It shares
only the codec (``fl.wire.codec``: the bytes of a frame and their checks) and
``MessageStream`` (``send_error``, ``close``) with the production transport.

- ``read_frame`` / ``write_frame`` / ``send_buffers``: one frame over a socket,
  with per-call socket timeouts so a silent peer costs at most
  ``Limits.frame_timeout_s`` once a frame has started.
- ``Connection``: one framed socket with byte counters, shared by a reader and
  senders. Sends are serialised by a lock so frames never interleave; reads
  belong to one reader thread.
"""

from __future__ import annotations

import math
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterable

import numpy as np

from fl.wire.codec import (
    DEFAULT_FRAME_TIMEOUT_S, PREFIX_SIZE, Limits, build_frame, encode_frame, parse_header, parse_prefix,
)
from fl.wire.fields import BLOB_FORMAT_SKOPS, Frame, PeerClosed, ProtocolError
from fl.wire.messages import Message, MessageStream, parse_message

__all__ = ["POLL_S", "read_frame", "write_frame", "send_buffers", "Connection"]

# Longest a single socket call blocks. Deadlines are re-checked between calls,
# and a sender thread sharing the socket never waits longer than this per try.
POLL_S = 1.0
# Largest slice handed to one send(): keeps TLS writes small enough to finish
# within one socket timeout, so "no progress" really means a stalled peer.
_SEND_CHUNK = 256 << 10


def _recv_first(sock: socket.socket, view: memoryview, idle_timeout: float | None) -> int:
    """Wait up to idle_timeout for the first bytes of a frame; consume none on timeout."""
    deadline = math.inf if idle_timeout is None else time.monotonic() + max(idle_timeout, 0.0)
    while True:
        sock.settimeout(min(max(deadline - time.monotonic(), 1e-3), POLL_S))
        try:
            n = sock.recv_into(view, len(view))
        except TimeoutError:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no frame within {idle_timeout} s") from None
            continue
        if n == 0:
            raise PeerClosed("peer closed the connection")
        return n


class _FrameClock:
    """When a started frame has stalled: no byte of it for ``frame_timeout_s``."""

    def __init__(self, limits: Limits):
        self.stall_s = limits.frame_timeout_s
        self.until = time.monotonic() + self.stall_s

    def progress(self) -> None:
        self.until = time.monotonic() + self.stall_s


def _recv_exact(sock: socket.socket, view: memoryview, clock: _FrameClock) -> None:
    """Fill view completely (recv_into, no concatenation); every byte that comes re-arms the stall timeout."""
    got, size = 0, len(view)
    while got < size:
        remaining = clock.until - time.monotonic()
        if remaining <= 0:
            raise ProtocolError("timeout", "peer stalled mid-frame")
        sock.settimeout(min(remaining, POLL_S))
        try:
            n = sock.recv_into(view[got:], size - got)
        except TimeoutError:
            continue
        if n == 0:
            raise PeerClosed(f"peer closed the connection mid-frame ({got} of {size} bytes)")
        got += n
        clock.progress()


def read_frame(sock: socket.socket, limits: Limits = Limits(),
               idle_timeout: float | None = None) -> tuple[Frame, int]:
    """Read one frame; return it and the number of bytes it took (16 + header + body).

    Waits up to ``idle_timeout`` (None: forever) for the first byte and raises
    TimeoutError, consuming nothing, if none comes. From then on the frame
    must keep coming: no gap of ``limits.frame_timeout_s`` without a byte
    (else ProtocolError "timeout"). EOF raises PeerClosed. The body is one bytearray and the
    arrays are *writable* views into it (see ``build_frame``): no copy of a 100 MB
    model, at the price that all arrays of a frame keep the body alive.
    Leaves the socket in timeout mode (never blocking), see POLL_S.
    """
    prefix = memoryview(bytearray(PREFIX_SIZE))
    got = _recv_first(sock, prefix, idle_timeout)
    clock = _FrameClock(limits)
    _recv_exact(sock, prefix[got:], clock)
    header_len, body_len = parse_prefix(prefix, limits)
    raw_header = bytearray(header_len)
    _recv_exact(sock, memoryview(raw_header), clock)
    header, layout, blob_size = parse_header(raw_header, body_len, limits)
    # Allocated only now that body_len is proven consistent; np.empty, not
    # bytearray, because zero-filling 100 MB first costs half the read time.
    body = np.empty(body_len, dtype=np.uint8)
    _recv_exact(sock, memoryview(body), clock)
    return build_frame(header, layout, blob_size, body), PREFIX_SIZE + header_len + body_len


def send_buffers(sock: socket.socket, buffers: Iterable[bytes | memoryview], stall_timeout: float) -> int:
    """Send every buffer fully; TimeoutError if no byte goes out for stall_timeout.

    A loop of send() rather than sendall(): sendall's budget would be whatever
    timeout the reader thread last set on the shared socket.
    """
    total = 0
    for buf in buffers:
        view = memoryview(buf).cast("B")
        offset, last_progress = 0, time.monotonic()
        while offset < len(view):
            try:
                offset += sock.send(view[offset:offset + _SEND_CHUNK])
                last_progress = time.monotonic()
                continue
            except TimeoutError:
                pass
            except BlockingIOError:  # socket in non-blocking mode: wait here instead
                select.select([], [sock], [], POLL_S)
            if time.monotonic() - last_progress > stall_timeout:
                raise TimeoutError(f"peer accepted no data for {stall_timeout} s")
        total += len(view)
    return total


def write_frame(sock: socket.socket, header: dict, arrays: Iterable[tuple[str, np.ndarray]] = (),
                blob: bytes | None = None, blob_format: str = BLOB_FORMAT_SKOPS,
                stall_timeout: float = DEFAULT_FRAME_TIMEOUT_S) -> int:
    """Encode and send one frame; return bytes written.

    Raises TimeoutError if the peer accepts nothing for ``stall_timeout``
    (only detectable when the socket has a timeout, as Connection ensures).
    """
    return send_buffers(sock, encode_frame(header, arrays, blob, blob_format), stall_timeout)


class Connection(MessageStream):
    """One socket, framed. send() is thread-safe (a lock); recv() is meant for one reader thread."""

    def __init__(self, sock: socket.socket, limits: Limits = Limits()):
        self.sock = sock
        self.limits = limits
        self.bytes_sent = 0
        self.bytes_received = 0
        self.peer = self._peer_name(sock)
        self._send_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._closed = False
        # Timeout mode from the start: a send never blocks without bound.
        sock.settimeout(POLL_S)

    @staticmethod
    def _peer_name(sock: socket.socket) -> str:
        try:
            addr = sock.getpeername()
        except OSError:
            return "unknown"
        if isinstance(addr, tuple) and len(addr) >= 2:
            return f"{addr[0]}:{addr[1]}"
        return str(addr) or "local"

    def _gone(self, exc: OSError) -> PeerClosed:
        if isinstance(exc, PeerClosed):
            return exc
        return PeerClosed(f"{self.peer}: {exc}")

    def send(self, msg: Message) -> int:
        """Send one message; PeerClosed if the peer is gone or stops reading.

        After a failed send the stream may hold half a frame, so the
        connection is closed.
        """
        header, arrays, blob = msg.to_frame()
        buffers = encode_frame(header, arrays, blob, BLOB_FORMAT_SKOPS)
        with self._send_lock:
            if self._closed:
                raise PeerClosed(f"{self.peer}: connection is closed")
            try:
                n = send_buffers(self.sock, buffers, self.limits.frame_timeout_s)
            except TimeoutError as exc:
                self.close()
                raise PeerClosed(f"{self.peer}: {exc}") from None
            except OSError as exc:
                self.close()
                raise self._gone(exc) from None
        with self._stats_lock:
            self.bytes_sent += n
        return n

    def recv(self, idle_timeout: float | None = None) -> Message:
        """Read and parse one message.

        TimeoutError if nothing arrives within idle_timeout (the connection
        stays usable); PeerClosed on EOF or reset; ProtocolError on a bad
        frame, after which the stream position is lost: send_error + close.
        """
        if self._closed:
            raise PeerClosed(f"{self.peer}: connection is closed")
        try:
            if isinstance(self.sock, ssl.SSLSocket):
                frame, n = self._read_tls(idle_timeout)
            else:
                frame, n = read_frame(self.sock, self.limits, idle_timeout)
        except (TimeoutError, PeerClosed):
            raise
        except OSError as exc:  # reset, TLS failure, socket closed under us (EBADF)
            raise PeerClosed(f"{self.peer}: {exc}") from None
        with self._stats_lock:
            self.bytes_received += n
        return parse_message(frame)

    def _read_tls(self, idle_timeout: float | None) -> tuple:
        """read_frame for TLS: one thread at a time inside OpenSSL.

        An SSL object must not be read and written concurrently, so the
        reader waits for readability *outside* the send lock (select, which
        does not touch TLS state) and reads the frame *inside* it. Sends wait
        at most for the frame being read.
        """
        deadline = math.inf if idle_timeout is None else time.monotonic() + idle_timeout
        while True:
            if self._closed:
                raise PeerClosed(f"{self.peer}: connection is closed")
            if self.sock.pending() == 0:
                wait = min(POLL_S, max(0.0, deadline - time.monotonic()))
                try:
                    readable, _, _ = select.select([self.sock], [], [], wait)
                except (ValueError, OSError):  # closed under us by another thread (fd -1)
                    raise PeerClosed(f"{self.peer}: connection is closed") from None
                if not readable:
                    if time.monotonic() >= deadline:
                        raise TimeoutError(f"no frame within {idle_timeout} s")
                    continue
            with self._send_lock:
                try:
                    return read_frame(self.sock, self.limits, idle_timeout=0.05)
                except TimeoutError:  # a TLS record without application data (e.g. a ticket)
                    if time.monotonic() >= deadline:
                        raise

    def _release(self) -> None:
        """``close``: shutdown() first, so that a reader blocked in recv on another thread wakes up."""
        for step in (lambda: self.sock.shutdown(socket.SHUT_RDWR), self.sock.close):
            try:
                step()
            except OSError:
                pass

    @property
    def closed(self) -> bool:
        """True once close() ran (locally or after a failed send)."""
        return self._closed

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Connection(peer={self.peer!r}, sent={self.bytes_sent}, received={self.bytes_received})"
