"""Who may join as whom, and how often: certificate names, expected sites, join rates.

The token says only that a peer is one of the federation: everyone who
holds it can say any client id. Three rules narrow that, checked on a
``hello`` after the token (``FederatedServer._handshake``), each refused with
an ``error`` the client can read and a ``refused`` event:

* **The certificate's name** (mutual TLS, ``--tls-client-ca``): a client may
  join only under a name its certificate was issued to
  (``fl.wire.tls.peer_names``), so a site's certificate is its identity and
  no other site can take its id. Code ``auth``.
* **Expected sites** (``ServerSettings.expected_clients``, ``--expect-clients``,
  the Deploy page's "Expected sites"): only those ids may join. Without
  mutual TLS this keeps strangers' ids out, but cannot tell one token holder
  from another: whoever says ``biscoe`` first holds it while connected.
  Code ``auth``.
* **Join rates per remote address** (``JoinRate``): at most
  ``max_joins_per_client`` joins of one id and ``max_joins_per_address``
  joins of any ids from one address in any ``JOIN_WINDOW_S``. A join is a
  hello admitted (a session opened), so a peer cycling join/leave is cut off
  after a few cycles while each honest client, which joins once (and again
  only when its connection drops), never comes near; the per-address limit
  is generous (by default twice the run's ``max_clients``, at least 20)
  because one address may host hundreds of partition clients
  (``client_new.py --partition-id 0-249``), or be a NAT. Code ``rate``; a
  Python client waits and tries again within its connect window.

Every id a run has admitted keeps its slot (its numbers, its bytes) and its
row in the live state for the whole run, so new ids are bounded too: one
remote address may bring at most ``max_clients`` ids the run has not seen
(it cannot hold more at once), and the run admits at most four times
``max_clients`` in all, from however many addresses. An id seen before may
always come back (subject to the rates). Code ``full``. Fresh ids from one
address thus cannot lock out a site at another; only very many addresses
could, and with expected sites no fresh id joins at all.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Callable, Sequence

from fl.wire import CLIENT_ID_PATTERN

JOIN_WINDOW_S = 60.0  # the join limits count the joins of the last this many seconds
MAX_JOINS_PER_CLIENT = 12  # joins of one id from one address per window: a session every 5 s is not a client's
MIN_JOINS_PER_ADDRESS = 20  # the default per-address limit is twice max_clients, and never below this
NEW_IDS_PER_CLIENT = 4  # distinct ids a run admits in all, per client it may hold at once (max_clients)
RATE = "rate"  # the error code of a join over a join limit


def joins_per_address(max_joins_per_address: int | None, max_clients: int) -> int:
    """The per-address join limit: as set, or (None) twice ``max_clients`` and at least 20: one address may
    host every client of the run, each joining and rejoining once in a window."""
    return max_joins_per_address or max(2 * max_clients, MIN_JOINS_PER_ADDRESS)


def parse_client_ids(text: str) -> tuple[str, ...]:
    """The expected sites as typed (``biscoe,dream,torgersen``: commas or spaces); ValueError in words for an
    id a client could not use, or one given twice. The command line's ``--expect-clients`` and the Deploy
    page's "Expected sites" both read it here."""
    ids = tuple(part for part in text.replace(",", " ").split() if part)
    for cid in ids:
        if not CLIENT_ID_PATTERN.fullmatch(cid):
            raise ValueError(f"{cid!r} is not a client id: 1-64 chars of A-Z a-z 0-9 _ . -")
    twice = sorted({cid for cid in ids if ids.count(cid) > 1})
    if twice:
        raise ValueError(f"{', '.join(twice)} given twice")
    return ids


def identity_problem(client_id: str, cert_names: Sequence[str] | None,
                     expected: Sequence[str]) -> tuple[str, str] | None:
    """(code, why) when ``client_id`` may not join: not a name of its certificate (``cert_names``; None when
    the server asks for no client certificate) or not one of the ``expected`` ids (empty: any id)."""
    if cert_names is not None and client_id not in cert_names:
        if not cert_names:
            return "auth", (f"client id {client_id!r} cannot be checked: its certificate names nobody (no common "
                            "name): under mutual TLS a client joins under its certificate's name")
        named = " or ".join(repr(n) for n in cert_names[:4])
        return "auth", (f"client id {client_id!r} is not the name in its certificate ({named}): under mutual TLS "
                        "a client joins under the name its certificate was issued to")
    if expected and client_id not in expected:
        return "auth", (f"client id {client_id!r} is not one of the {len(expected)} sites this server expects "
                        "(--expect-clients)")
    return None


class JoinRate:
    """Joins of the last ``window_s`` per remote address and per (address, client id), and the client ids a
    run has admitted (per address and in all), against their limits.

    Each key keeps the times of its recent joins, at most its limit of them,
    and keys with no join in the last window are forgotten once a window, so
    that memory is bounded by the joins of about two windows. The ids ever
    admitted are kept for the run (the registry keeps a slot for each), at
    most ``new_ids`` of them. Runs on the server's event loop only.
    """

    def __init__(self, per_address: int, per_client: int, window_s: float = JOIN_WINDOW_S,
                 clock: Callable[[], float] = time.monotonic, new_ids_per_address: int | None = None,
                 new_ids: int | None = None):
        self.per_address = per_address
        self.per_client = per_client
        self.window_s = window_s
        self.new_ids_per_address = new_ids_per_address
        self.new_ids = new_ids
        self._clock = clock
        self._address: dict[str, deque[float]] = {}
        self._client: dict[tuple[str, str], deque[float]] = {}
        self._swept = clock()
        self._known: set[str] = set()  # every id admitted this run
        self._introduced: dict[str, int] = {}  # how many of them each address brought first

    def _recent(self, table: dict, key: object, now: float) -> deque[float]:
        times = table.get(key)
        if times is None:
            return deque()
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            del table[key]
        return times

    def problem(self, address: str, client_id: str) -> tuple[str, str] | None:
        """(code, why) if one more join of ``client_id`` from ``address`` would pass a limit: ``rate`` for the
        joins of the window, ``full`` for an id the run has not seen when no new id may join."""
        now = self._clock()
        if len(self._recent(self._client, (address, client_id), now)) >= self.per_client:
            return RATE, (f"client id {client_id!r} joined {self.per_client} times from {address} in the last "
                          f"{self.window_s:g} s (max_joins_per_client): wait, then join again")
        if len(self._recent(self._address, address, now)) >= self.per_address:
            return RATE, (f"{self.per_address} clients joined from {address} in the last {self.window_s:g} s "
                          "(max_joins_per_address): wait, then join again")
        if client_id not in self._known:
            if self.new_ids_per_address is not None and \
                    self._introduced.get(address, 0) >= self.new_ids_per_address:
                return "full", (f"{self.new_ids_per_address} client ids have joined this run from {address} "
                                "(max_clients): a new id may not join from there (one seen before may)")
            if self.new_ids is not None and len(self._known) >= self.new_ids:
                return "full", (f"{len(self._known)} client ids have joined this run ({NEW_IDS_PER_CLIENT} x "
                                "max_clients): a new id may not join (one seen before may)")
        return None

    def joined(self, address: str, client_id: str) -> None:
        """Count an admitted join (a refused hello is not one: a client retrying a refusal never spends them)."""
        now = self._clock()
        if now - self._swept > self.window_s:  # forget the keys whose joins are all older than the window
            self._swept = now
            for table in (self._address, self._client):
                for stale in [key for key, times in table.items() if times[-1] <= now - self.window_s]:
                    del table[stale]
        for table, key, limit in ((self._client, (address, client_id), self.per_client),
                                  (self._address, address, self.per_address)):
            times = table.setdefault(key, deque(maxlen=max(limit, 1)))
            times.append(now)
        if client_id not in self._known:
            self._known.add(client_id)
            self._introduced[address] = self._introduced.get(address, 0) + 1
