"""Heartbeats: who is still there, judged by silence, never by how long a fit takes.

A peer is heard whenever bytes of it arrive (a frame, a ping, a pong, or
part of a large frame still coming: ``AioConnection.last_heard``). The
server tells each client its timing in ``welcome`` (``heartbeat_s``,
``heartbeat_misses``); both sides then call a peer gone once it has been
silent for misses × interval (docs/protocol.md, "Heartbeats").

Server: one ``HeartbeatMonitor`` task on the server's event loop sweeps every
session a few times per interval (one task for all of them, not one per
client), pings those it has not heard from for an interval, and marks gone
those silent for misses × interval, which the round loop counts as a failure
at once. A client that has sent a ping of its own (the Python client does,
every interval) keeps its network loop running while it trains, so it is
held to that at all times; one that never pings (written before heartbeats)
answers only between messages, so while a round waits for its result only
the round timeout bounds it, and its window starts again when the round
stops waiting.

Client: ``keep_alive`` pings the server every interval and drops the
connection once the server has been silent for misses × interval (a paused
or unplugged server sends no FIN).

Both judge only time they could listen: a sweep that wakes late by more
than an interval (a paused process, a starved loop) restarts every window,
and frames that arrived meanwhile are read before anyone is judged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Callable

from fl.federation.events import ClientStatus
from fl.federation.client_registry import ClientSlot
from fl.wire import PeerClosed, Ping
from fl.wire.aio import AioConnection, encode_message

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 5.0
DEFAULT_MISSES = 3
SWEEPS_PER_INTERVAL = 4  # a silent peer is noticed within a quarter interval of its deadline
REPLACE_AFTER = 1.5  # intervals of silence after which a session may give way to a reconnect of its id


@dataclass(frozen=True)
class Heartbeat:
    """Heartbeat timing; an interval of 0 turns heartbeats off (no pings, nobody judged by silence)."""

    interval_s: float = DEFAULT_INTERVAL_S
    misses: int = DEFAULT_MISSES

    def __post_init__(self) -> None:
        if not (self.interval_s >= 0 and self.misses >= 1):
            raise ValueError(f"heartbeat interval must be >= 0 s and misses >= 1, got {self.interval_s}, {self.misses}")

    @property
    def on(self) -> bool:
        return self.interval_s > 0

    @property
    def limit_s(self) -> float:
        """Silence after which a peer is gone."""
        return self.interval_s * self.misses

    def gone_reason(self) -> str:
        return f"missed {self.misses} heartbeats ({self.limit_s:g} s)"


class _Clock:
    """Sleeps on the event loop; notices when this process could not listen (it woke late)."""

    def __init__(self, interval_s: float):
        self.interval_s = interval_s
        self.deaf_until = 0.0  # heard-times before this are not held against anyone

    async def sleep_until(self, when: float) -> float:
        """Sleep until ``when`` (monotonic); returns the time it woke."""
        await asyncio.sleep(max(0.0, when - time.monotonic()))
        now = time.monotonic()
        if now - when > self.interval_s:  # paused or starved: nobody could be heard meanwhile
            self.deaf_until = now
        return now

    def silence(self, conn: AioConnection, now: float, since: float = 0.0) -> float:
        return now - max(conn.last_heard, since, self.deaf_until)


class HeartbeatMonitor:
    """One task on the server's loop for every session: ping the quiet, drop the silent."""

    def __init__(self, timing: Heartbeat, slots: Callable[[], list[ClientSlot]],
                 gone: Callable[[str, str, AioConnection], None]):
        self.timing = timing
        self._slots = slots
        self._gone = gone
        self._clock = _Clock(timing.interval_s)

    async def run(self) -> None:
        """Sweep until cancelled (the server's close cancels every task on its loop)."""
        tick = self.timing.interval_s / SWEEPS_PER_INTERVAL
        now = time.monotonic()
        while True:
            now = await self._clock.sleep_until(now + tick)
            try:
                await self.sweep(now)
            except Exception:  # pragma: no cover - a bad sweep must not end liveness for the whole run
                log.exception("heartbeat sweep failed")

    async def sweep(self, now: float) -> None:
        interval, limit = self.timing.interval_s, self.timing.limit_s
        silent: list[ClientSlot] = []
        ping: tuple[list, int] | None = None
        for slot in self._slots():
            if slot.status == ClientStatus.GONE:
                continue
            if slot.conn.closed:  # its read loop reports it first, with its reason; never a ghost slot
                self._gone(slot.client_id, "connection closed", slot.conn)
                continue
            if slot.busy and not slot.pings_itself:
                slot.excused_at = now  # an old-style client answers only between messages: the round timeout
                continue
            quiet = self._clock.silence(slot.conn, now, slot.excused_at)
            if quiet >= limit:
                silent.append(slot)
            elif quiet >= interval and now - slot.pinged_at >= interval:
                ping = ping or encode_message(Ping(t=time.time()))
                try:
                    slot.conn.send_encoded(*ping)
                    slot.pinged_at = now
                except PeerClosed:
                    pass
        if not silent:
            return
        await asyncio.sleep(0)  # frames that came while this loop was busy are read before anyone is judged
        now = time.monotonic()
        for slot in silent:
            if slot.status != ClientStatus.GONE and self._clock.silence(slot.conn, now, slot.excused_at) >= limit:
                self._gone(slot.client_id, self.timing.gone_reason(), slot.conn)
                slot.conn.abort()

    def replaceable(self, slot: ClientSlot) -> bool:
        """Whether a session still marked connected may give way to a new one under its id: its connection
        is closed, or it has missed a heartbeat (silent for more than ``REPLACE_AFTER`` intervals; a live one
        is heard at least every interval plus a sweep, pinging or pinged)."""
        if slot.conn.closed:
            return True
        quiet = self._clock.silence(slot.conn, time.monotonic())
        return self.timing.on and quiet > REPLACE_AFTER * self.timing.interval_s


async def keep_alive(conn: AioConnection, timing: Heartbeat) -> str | None:
    """A client's side: ping the server every interval; once it has been silent for misses × interval,
    drop the connection and return why (None if the connection closed first).

    One task per session that wakes only when a ping is due or the silence
    limit would be reached, so a host of many clients stays cheap.
    """
    clock = _Clock(timing.interval_s)
    pinged, now = -float("inf"), time.monotonic()  # the first ping at once: it tells the server this client pings
    while not conn.closed:
        if now - pinged >= timing.interval_s:
            try:
                conn.send(Ping(t=time.time()))
            except PeerClosed:
                return None
            pinged = time.monotonic()
        quiet = clock.silence(conn, time.monotonic())
        if quiet >= timing.limit_s:
            await asyncio.sleep(0)  # read what came while this loop was busy before judging
            if clock.silence(conn, time.monotonic()) >= timing.limit_s and not conn.closed:
                conn.abort()
                return f"the server went silent: {timing.gone_reason()}"
        now = await clock.sleep_until(min(pinged + timing.interval_s, time.monotonic() + timing.limit_s - quiet))
    return None
