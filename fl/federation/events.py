"""A run's events and statuses, typed; and what each event says, in words.

Events travel as plain dicts (``{"type": ..., "t": ..., ...}``) so that
events.jsonl, the live state and the command line read them alike; their
``type`` is an ``EventType`` and client and run statuses are enums, so a
misspelt name is an error, not a silent mismatch. ``StrEnum`` members are
their own strings: JSON files and older readers see the same values.
"""

from __future__ import annotations

import math
import time
from enum import StrEnum
from typing import Any, Callable

from fl.wire.text import bounded, shown


class EventType(StrEnum):
    # the server's
    LISTENING = "listening"
    RESUMED = "resumed"  # a run continues from its checkpoint after round ``round``
    JOIN = "join"
    LEAVE = "leave"
    REFUSED = "refused"
    ROUND_START = "round_start"
    CLIENT_STATUS = "client_status"
    FAILURE = "failure"
    STRAGGLER = "straggler"
    CLIENT_RESULT = "client_result"
    FLAGGED = "flagged"  # an update far from the others (fl/federation/scrutiny.py)
    DATA_REPORT = "data_report"  # what the run's data is: rows and classes per site, columns used or dropped
    ROUND = "round"
    ERROR = "error"
    DONE = "done"
    # a client's own (its process prints them)
    WELCOME = "welcome"
    FIT = "fit"
    EVALUATE = "evaluate"
    CLIENT_ERROR = "client_error"
    RECONNECTING = "reconnecting"  # lost the server mid-run; trying to rejoin (``--reconnect``)
    SUMMARY_SENT = "summary_sent"  # told a server without data what its data holds (counts, never rows)


class ClientStatus(StrEnum):
    WAITING = "waiting"  # expected (a simulation), not connected yet
    CONNECTED = "connected"
    TRAINING = "training"
    EVALUATING = "evaluating"
    IDLE = "idle"
    GONE = "gone"  # lost mid-run
    FINISHED = "finished"  # left after the run's bye


class RunStatus(StrEnum):
    STARTING = "starting"
    WAITING = "waiting for clients"
    RUNNING = "running"
    COMPLETED = "completed"
    STOPPED = "stopped"
    FAILED = "failed"

    @property
    def ended(self) -> bool:
        return self in (RunStatus.COMPLETED, RunStatus.STOPPED, RunStatus.FAILED)


EventSink = Callable[[dict], None]


def make_event(kind: EventType, **fields: Any) -> dict:
    """An event dict stamped with the time; every string in it capped (``bounded``, fl/wire/text.py), since
    many carry a peer's words (a reason, an error message, a metric sent as text) into events.jsonl,
    clients.csv and the live state, which keep them for the whole run."""
    return {"type": kind, "t": round(time.time(), 3), **{k: bounded(v) for k, v in fields.items()}}


def _num(value: Any, digits: int = 3) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return f"{value:.{digits}f}"
    return "-"


def _pct(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return f"{100 * value:.1f}%"
    return "-"


def _client_result(e: dict) -> str:
    parts = [f"round {e.get('round')}: {e.get('status')}"]
    if e.get("train_accuracy") is not None:
        parts.append(f"train accuracy {_pct(e.get('train_accuracy'))}")
    if e.get("eval_accuracy") is not None:
        parts.append(f"global model on its data {_pct(e.get('eval_accuracy'))}")
    if e.get("reason"):
        parts.append(str(e["reason"]))
    return ", ".join(parts)


def _round(e: dict) -> str:
    text = (f"round {e.get('round')}: accuracy {_pct(e.get('accuracy'))}, loss {_num(e.get('loss'))}, "
            f"{e.get('n_fit_clients')} clients trained, {e.get('n_failures')} failed")
    if e.get("worst_client_accuracy") is not None:
        text += f", worst client {_pct(e.get('worst_client_accuracy'))}"
    return text


def _done(e: dict) -> str:
    final = e.get("final_metrics") or {}
    return f"run {e.get('status')}: accuracy {_pct(final.get('accuracy'))}" + (f" ({e['error']})" if e.get("error")
                                                                             else "")


SENTENCES: dict[str, Callable[[dict], str]] = {
    EventType.LISTENING: lambda e: f"listening on {e.get('host')}:{e.get('port')}",
    EventType.RESUMED: lambda e: f"resumed from the checkpoint of round {e.get('round')}: the rounds go on from "
                                 f"round {(e.get('round') or 0) + 1}",
    EventType.JOIN: lambda e: f"{e.get('client_id')} joined{' from ' + e['peer'] if e.get('peer') else ''} "
                              f"with {e.get('n_samples')} rows"
                              + (" of a single class" if e.get("n_classes") == 1 else ""),
    EventType.LEAVE: lambda e: f"{e.get('client_id')} left: {e.get('reason')}",
    EventType.REFUSED: lambda e: (f"refused a connection from {e.get('peer')} ({e.get('code')}): {e.get('message')}"
                                  if (e.get("count") or 1) <= 1 else
                                  f"refused {e['count']} more connections in {e.get('window_s', 5):g} s, the last "
                                  f"from {e.get('peer')} ({e.get('code')}): {e.get('message')}"),
    EventType.ROUND_START: lambda e: f"round {e.get('round')} started with {len(e.get('clients') or [])} clients",
    EventType.FAILURE: lambda e: f"round {e.get('round')}: {e.get('client_id')} failed: {e.get('reason')}",
    EventType.STRAGGLER: lambda e: f"round {e.get('open_round')}: late result of round {e.get('round')} from "
                                   f"{e.get('client_id')} ignored",
    EventType.CLIENT_RESULT: _client_result,
    EventType.FLAGGED: lambda e: f"round {e.get('round')}: {e.get('client_id')}'s update is far from the others "
                                 f"(robust z {_num(e.get('update_z'), 1)} above {_num(e.get('z_threshold'), 1)}, "
                                 f"norm {_num(e.get('update_norm'))}, "
                                 f"cosine to the aggregate {_num(e.get('update_cosine'), 2)})",
    EventType.ROUND: _round,
    EventType.ERROR: lambda e: f"error: {e.get('message')}",
    EventType.DONE: _done,
}


def describe_event(event: dict) -> str | None:
    """One sentence about an event, or None for bookkeeping events nobody needs to read (client statuses).

    One line of printable text: a peer's words in it (a reason, a refused
    hello's message) have their control characters escaped (``shown``), so
    they cannot drive the terminal or the log they are printed to.
    """
    say = SENTENCES.get(event.get("type"))  # type: ignore[arg-type]
    return shown(say(event)) if say is not None else None
