"""The server's registry of clients: one slot per client id, with its session's connection, status and liveness.

What the round loop asks of the server about its clients (who is
connected, send one message to many, which session answered) lives here, as
``ClientRegistry``, a base class of ``FederatedServer`` (fl/federation/server.py
accepts connections and runs the handshake). Slots are read and written
under the registry lock; the heartbeat monitor (fl/federation/liveness.py)
reads their liveness fields on the event loop.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Callable

from fl.federation.events import ClientStatus, EventType
from fl.wire.aio import AioConnection, encode_message

REPLACED = "replaced by a reconnect"  # why a dead session ended when its client id joined again
ALREADY_CONNECTED = "is already connected"  # refusing a live id's double; a reconnecting client retries on it


@dataclass
class ClientSlot:
    """What the server knows of one client session; never its data."""

    client_id: str
    conn: AioConnection
    n_samples: int
    peer: str
    status: ClientStatus = ClientStatus.CONNECTED
    joined_at: float = field(default_factory=time.time)
    # Liveness (fl/federation/liveness.py), written on the event loop only.
    pings_itself: bool = False  # it has sent a ping of its own: it answers while it trains, so it is held to it
    excused_at: float = 0.0  # monotonic time of the last sweep that let it be silent (busy, never pinging)
    pinged_at: float = 0.0  # monotonic time of the server's last ping to it

    @property
    def busy(self) -> bool:
        """A round is waiting for its fit_result or evaluate_result."""
        return self.status in (ClientStatus.TRAINING, ClientStatus.EVALUATING)


class ServerStopped(Exception):
    """The server was asked to stop; the round loop unwinds."""


class Inbox(StrEnum):
    """What the event loop hands the round loop: a result, or news that a client's session is gone."""

    RESULT = "result"
    GONE = "gone"


class ClientRegistry:
    """Slots by client id and what the round loop needs of them.

    The server sets the attributes declared here in its ``__init__``; its
    ``emit`` reports events. Items on ``inbox`` are (kind, client_id,
    payload, connection): the connection tells a message of one session from
    one of an earlier or later session under the same id.
    """

    _lock: threading.Lock
    _clients: dict[str, ClientSlot]
    inbox: queue.Queue
    stop_requested: threading.Event
    start_now: threading.Event
    accepting: threading.Event
    last_leave_reason: str | None
    settings: Any  # ServerSettings: wait_for_clients, join_timeout_s
    clients_alive: Callable[[], bool] | None  # a simulation's: whether any of its client workers still runs
    join_note: Callable[[], str | None] | None = None  # a simulation's: where its clients run (a failed join says)

    def emit(self, kind: EventType, **fields: Any) -> None:  # pragma: no cover - the server's
        raise NotImplementedError

    def wait_for_clients(self, min_clients: int) -> None:
        """Block until enough clients joined (or a manual start / timeout).

        Raises ServerStopped on stop and RuntimeError when the timeout passes
        with fewer than ``min_clients`` connected, or fewer than the settings'
        ``fewest_to_start`` (a simulation: every client, unless the user
        allowed fewer); the error then says where the clients were to come
        from (``join_note``, a simulation's hosts on a cluster).
        """
        wanted = max(min_clients, self.settings.wait_for_clients)
        needed = max(min_clients, getattr(self.settings, "fewest_to_start", 0) or 0)
        deadline = time.monotonic() + self.settings.join_timeout_s
        while True:
            if self.stop_requested.is_set():
                raise ServerStopped()
            with self._lock:
                n = self._n_active()  # not active_ids(): sorting 10,000 ids 20 times a second slowed their joins
            if n >= wanted or (self.start_now.is_set() and n >= min_clients):
                return
            if self.clients_alive is not None and not self.clients_alive() and n < wanted:
                if n >= needed:
                    return
                why = f" (the last one: {self.last_leave_reason})" if self.last_leave_reason else ""
                raise RuntimeError(f"every client left before the first round{why}{self._join_note()}")
            if time.monotonic() > deadline:
                if n >= needed:
                    return
                raise RuntimeError(
                    f"only {n} of the {needed} required clients joined within "
                    f"{self.settings.join_timeout_s:g} s{self._join_note()}"
                )
            time.sleep(0.05)

    def _join_note(self) -> str:
        """Where the missing clients were to come from, when the run can say (``join_note``), after a '; '."""
        note = getattr(self, "join_note", None)
        try:
            text = note() if note is not None else None
        except Exception as exc:  # saying why must never hide the failure itself
            text = f"(where the clients run could not be read: {exc})"
        return f"; {text}" if text else ""

    def slots(self) -> list[ClientSlot]:
        with self._lock:
            return list(self._clients.values())

    def _n_active(self) -> int:
        """How many sessions are not gone (the registry lock is held)."""
        return sum(1 for s in self._clients.values() if s.status != ClientStatus.GONE)

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

    def broadcast(self, client_ids: list[str], msg: Any,
                  sessions: dict[str, AioConnection] | None = None) -> tuple[list[str], dict[str, str]]:
        """Send one request (fit, evaluate) to many clients, encoded once; (sent to, {client: why not}).

        ``sessions`` gets the connection each went out on: only that session
        can answer it, or fail it by leaving.
        """
        buffers, size = encode_message(msg)
        sent, failed, conns = [], {}, []
        for cid in client_ids:
            slot = self.slot(cid)
            if slot is None or slot.status == ClientStatus.GONE:
                failed[cid] = "gone before the round"
                continue
            if slot.conn.closed:
                failed[cid] = f"send failed: {slot.conn.peer}: connection is closed"
                continue
            conns.append(slot.conn)
            sent.append(cid)
            if sessions is not None:
                sessions[cid] = slot.conn
        AioConnection.send_encoded_to_all(conns, buffers, size)  # one wake-up of the loop for all of them
        return sent, failed

    def is_current(self, client_id: str, conn: AioConnection) -> bool:
        """Whether ``conn`` is the client's live session (not an earlier one under the same id)."""
        slot = self.slot(client_id)
        return slot is not None and slot.conn is conn

    def _mark_gone(self, client_id: str, reason: str, conn: AioConnection) -> None:
        """Mark the session on ``conn`` gone; a newer session under the same id is left alone."""
        with self._lock:
            slot = self._clients.get(client_id)
            was_here = slot is not None and slot.conn is conn and slot.status != ClientStatus.GONE
            if was_here:
                slot.status = ClientStatus.GONE
        if was_here:
            self._report_gone(client_id, reason, conn)

    def _replace_dead(self, old: ClientSlot) -> None:
        """End a dead session whose client id is joining again (the registry lock is held by the caller).

        Its GONE item and LEAVE event name the old connection, so nothing of
        it is charged to the session that replaces it; the event goes out
        before the new session's JOIN.
        """
        old.status = ClientStatus.GONE
        old.conn.abort()
        self._report_gone(old.client_id, REPLACED, old.conn)

    def _report_gone(self, client_id: str, reason: str, conn: AioConnection) -> None:
        self.last_leave_reason = f"{client_id}: {reason}"
        self.inbox.put((Inbox.GONE, client_id, reason, conn))
        if not self.stop_requested.is_set() and self.accepting.is_set():
            self.emit(EventType.LEAVE, client_id=client_id, reason=reason)
