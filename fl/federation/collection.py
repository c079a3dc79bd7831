"""What comes back for the round loop's requests: each client's answer, its departure, stragglers, and what
arrives early for the round ahead (whose fit went out while the current round is evaluated)."""

from __future__ import annotations

import queue
import time
from typing import Any, Callable

from fl.federation.events import EventType
from fl.federation.server import FederatedServer, Inbox
from fl.wire import FitResult


class Collector:
    """Reads the server's inbox for the round loop; ``sessions`` is the connection each client's last request
    went out on (``FederatedServer.broadcast`` keeps it), ``stragglers`` the late answers counted so far."""

    def __init__(self, server: FederatedServer, timeout: float, stop_if_asked: Callable[[], None]):
        self.server = server
        self.timeout = timeout
        self.stop_if_asked = stop_if_asked
        self.sessions: dict[str, Any] = {}
        self.stragglers = 0
        self._early: list[tuple[Any, str, Any, Any]] = []  # inbox items of the round ahead, come during evaluation

    def collect(self, round_no: int, kind: type, waiting: list[str],
                ahead: tuple[int, list[str]] | None = None) -> tuple[dict[str, Any], dict[str, str]]:
        """Results of ``kind`` for ``round_no`` until all arrived or the round timeout.

        Results of other rounds are stragglers: counted and reported, never merged.
        Only the session a request went out on can answer it or fail it (by
        leaving, or by missing its heartbeats: at once, not at the timeout);
        a client that reconnected is not charged for its earlier session.
        With ``ahead`` (the next round's number and the clients its fit went
        to, sent while this round is evaluated), what those clients send for
        it, or their leaving, is kept for its own collection.
        """
        results: dict[str, Any] = {}
        failures: dict[str, str] = {}
        pending = set(waiting)
        early, self._early = self._early, []  # what came for this exchange while the previous one was collected
        ahead_round, ahead_ids = (ahead[0], set(ahead[1])) if ahead is not None else (None, set())
        deadline = time.monotonic() + self.timeout
        while pending:
            self.stop_if_asked()
            if early:
                item_kind, cid, payload, conn = early.pop(0)
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    for cid in pending:
                        failures[cid] = f"no answer within {self.timeout:g} s"
                    break
                try:
                    item_kind, cid, payload, conn = self.server.inbox.get(timeout=min(remaining, 0.1))
                except queue.Empty:
                    continue
            asked = cid in pending and conn is self.sessions.get(cid)
            if cid in ahead_ids and conn is self.sessions.get(cid) and (
                    item_kind == Inbox.GONE or (isinstance(payload, FitResult) and payload.round == ahead_round)):
                self._early.append((item_kind, cid, payload, conn))  # the next round's: kept for it
                if item_kind != Inbox.GONE:
                    continue
            if item_kind == Inbox.GONE:
                if asked:
                    pending.discard(cid)
                    failures[cid] = f"left mid-round: {payload}"
                continue  # another session's departure (an earlier one, or one not asked this round)
            if not asked and not self.server.is_current(cid, conn):
                continue  # from an earlier session under this id (e.g. one refused for its data)
            if not asked or payload.round != round_no or not isinstance(payload, kind):
                self.stragglers += 1
                self.server.emit(EventType.STRAGGLER, client_id=cid, round=payload.round, open_round=round_no)
                continue
            pending.discard(cid)
            results[cid] = payload
        return results, failures
