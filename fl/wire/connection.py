"""Connection: one framed socket with byte counters, shared by a reader and senders.

Sends are serialised by a lock so frames never interleave; reads belong to
one reader thread. Byte counters feed the per-round bytes_sent/received.
"""

from __future__ import annotations

import math
import select
import socket
import ssl
import threading
import time

from fl.wire.fields import BLOB_FORMAT_SKOPS, PeerClosed
from fl.wire.messages import Error, Message, parse_message
from fl.wire.frames import POLL_S, Limits, encode_frame, read_frame, send_buffers


class Connection:
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

    def send_error(self, code: str, message: str) -> None:
        """Tell the peer why it is being dropped; best effort, never raises."""
        try:
            self.send(Error(code=code, message=message))
        except Exception:
            pass

    def close(self) -> None:
        """Shut down and close the socket; idempotent, never raises.

        shutdown() first so a reader blocked in recv on another thread wakes up.
        """
        if self._closed:
            return
        self._closed = True
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
