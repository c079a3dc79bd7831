"""Admission before the handshake: caps on unauthenticated connections, refusals the event log can bear.

A connection is *pending* from the moment it is accepted until it has said a
valid ``hello`` or failed to (TLS handshake included). A pending connection
holds a socket and a little memory while proving nothing, so the server caps
them overall (``ServerSettings.max_pending_handshakes``) and per remote
address (``max_pending_per_address``). A connection over a cap is aborted in
``connection_made`` (fl/wire/aio.py), before a task, a read buffer or a byte
is spent on it.

Every refusal is a REFUSED event, but a flood of connections must not flood
the event log (events.jsonl grows on disk): ``RefusalLog`` lets through a few
events per key and window, counts the rest and reports them in one event with
a ``count`` when the window ends. Everything here runs on the server's event
loop thread only, so it needs no lock.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field
from typing import Any, Callable

from fl.wire.tls import refusal_reason

REFUSAL_WINDOW_S = 5.0  # refusals of one key are summarised over this many seconds
REFUSAL_BURST = 10  # refusal events of one key let through per window before counting starts
BUSY = "busy"  # the REFUSED code of a connection closed because a pending-handshake cap was hit


class PendingHandshakes:
    """How many connections are pending, overall and per remote address, against their caps."""

    def __init__(self, max_total: int, max_per_address: int):
        self.max_total = max_total
        self.max_per_address = max_per_address
        self.total = 0
        self.by_address: dict[str, int] = {}

    def admit(self, address: str) -> str | None:
        """Count one more pending connection from ``address``; or the name of the cap it would pass (not counted)."""
        if self.total >= self.max_total:
            return "max_pending_handshakes"
        if self.by_address.get(address, 0) >= self.max_per_address:
            return "max_pending_per_address"
        self.total += 1
        self.by_address[address] = self.by_address.get(address, 0) + 1
        return None

    def release(self, address: str) -> None:
        """The connection from ``address`` is past its handshake (or gone); call once per admitted connection."""
        n = self.by_address.get(address, 0)
        if n <= 0:
            return
        self.total -= 1
        if n == 1:
            del self.by_address[address]
        else:
            self.by_address[address] = n - 1

    def why(self, cap: str, address: str) -> str:
        """The sentence of a cap refusal."""
        if cap == "max_pending_handshakes":
            return (f"{self.max_total} connections are already waiting to finish their handshake "
                    "(max_pending_handshakes)")
        return (f"{self.max_per_address} connections from {address} are already waiting to finish their handshake "
                "(max_pending_per_address)")


@dataclass
class _Window:
    ends: float
    emitted: int = 0
    suppressed: int = 0
    last: dict[str, Any] = field(default_factory=dict)
    flush: asyncio.TimerHandle | None = None


class RefusalLog:
    """REFUSED events, at most ``burst`` per key and window; the others are summed into one event per window.

    The first refusals of a key are reported at once (``count`` 1). Once a key
    has had ``burst`` events in its window, further refusals are only counted;
    when the window ends one event reports them (``count`` N, the last peer
    and message), and a new window opens already spent, so a flood that goes
    on is reported once per window, however fast it comes.
    """

    def __init__(self, emit: Callable[..., None], loop: asyncio.AbstractEventLoop,
                 window_s: float = REFUSAL_WINDOW_S):
        self._emit = emit
        self._loop = loop
        self.window_s = window_s
        self._windows: dict[str, _Window] = {}

    def refuse(self, key: str, *, peer: str, code: str, message: str, burst: int = REFUSAL_BURST,
               **extra: Any) -> None:
        """Report one refusal now, or count it into its window's summary."""
        now = self._loop.time()
        window = self._windows.get(key)
        if window is None or (now >= window.ends and window.flush is None):
            window = self._windows[key] = _Window(ends=now + self.window_s)
        if window.emitted < burst:
            window.emitted += 1
            self._emit(peer=peer, code=code, message=message, count=1, **extra)
            return
        window.suppressed += 1
        window.last = {"peer": peer, "code": code, "message": message, **extra}
        if window.flush is None:
            window.flush = self._loop.call_at(window.ends, self._flush, key, burst)

    def _flush(self, key: str, burst: int) -> None:
        window = self._windows.get(key)
        if window is None or not window.suppressed:
            return
        self._emit(count=window.suppressed, window_s=self.window_s, **window.last)
        self._windows[key] = _Window(ends=self._loop.time() + self.window_s, emitted=burst)

    def flush_all(self) -> None:
        """Report every count still waiting for its window to end (the server is closing)."""
        for key, window in list(self._windows.items()):
            if window.flush is not None:
                window.flush.cancel()
                window.flush = None
                self._flush(key, window.emitted)


class Gate:
    """The accept side of one server: pending-handshake caps, TLS upgrades and refusals. Event loop only."""

    def __init__(self, max_pending: int, max_per_address: int, emit_refused: Callable[..., None],
                 loop: asyncio.AbstractEventLoop):
        self.pending = PendingHandshakes(max_pending, max_per_address)
        self.refusals = RefusalLog(emit_refused, loop, REFUSAL_WINDOW_S)

    def admit(self, peername: Any) -> bool:
        """On accept, before anything is made for the connection: is it within the caps? (counted if so)"""
        address = address_of(peername)
        cap = self.pending.admit(address)
        if cap is None:
            return True
        self.refusals.refuse(cap, burst=1, peer=address, code=BUSY, message=self.pending.why(cap, address), cap=cap)
        return False

    def release(self, peername: Any) -> None:
        """The connection admitted for ``peername`` is past its handshake, or gone."""
        self.pending.release(address_of(peername))

    def refuse(self, code: str, peer: str, message: str) -> None:
        self.refusals.refuse(code, peer=peer, code=code, message=message)

    async def start_tls(self, writer: asyncio.StreamWriter, context: ssl.SSLContext, deadline: float,
                        handshake_timeout: float) -> bool:
        """Upgrade the accepted stream to TLS before ``deadline``; False (reported when worth it) if it fails.

        Must be the connection handler's first await: reading is paused from
        accept (fl/wire/aio.py) until TLS takes the stream over.
        """
        try:
            async with asyncio.timeout_at(deadline):
                await writer.start_tls(context, ssl_handshake_timeout=handshake_timeout)
            return True
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            why = refusal_reason(exc)
            if why is not None:
                peer = writer.get_extra_info("peername")
                where = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else str(peer)
                self.refuse("tls", where, why)
            writer.transport.abort()
            return False


def address_of(peername: Any) -> str:
    """The remote address of a socket's peername (IPv4 or IPv6 tuple), the key of the per-address cap."""
    if isinstance(peername, tuple) and peername:
        return str(peername[0])
    return str(peername or "local")


def raise_open_file_limit() -> None:
    """Every client is a socket: lift the soft limit on open files (often 1,024) to the hard one."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):  # not on this platform, or not allowed: keep the default
        pass
