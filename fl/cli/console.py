"""What the command line prints: a line per round, sentences for events, a client's own progress.

Lines meant for a person; the numbers themselves are in the run store.
Much of what is printed came from a peer (a client's reason for leaving, a
refused hello's message, the labels and columns of a site's data report, a
server's refusal): every such line goes through ``shown`` (fl/wire/text.py),
which escapes control characters, so a peer cannot drive the terminal (ANSI
escapes, carriage returns) or forge a line of its own.
"""

from __future__ import annotations

import math
import sys
import threading
from typing import Any, Callable

from fl.data.site_summary import report_lines
from fl.federation.events import EventType, describe_event
from fl.runs.words import for_cli
from fl.learning.privacy import NO_PRIVACY
from fl.wire.text import shown

SAID_ON_STDERR = (EventType.JOIN, EventType.LEAVE, EventType.REFUSED, EventType.FAILURE, EventType.STRAGGLER,
                  EventType.ERROR, EventType.RESUMED)


def fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}"


def round_line(event: dict, total_rounds: int) -> str:
    """The per-round line of simulate and server."""
    line = (f"round {event['round']}/{total_rounds}  accuracy {fmt(event.get('accuracy'))}  "
            f"loss {fmt(event.get('loss'))}  f1 {fmt(event.get('f1_macro'))}  "
            f"clients {event['n_fit_clients']} ({event['n_failures']} failed)  {event['duration_s']:.2f} s")
    if event.get("worst_client_accuracy") is not None:
        line += f"  worst client {fmt(event['worst_client_accuracy'])}"
    if event.get("epsilon") is not None:
        line += f"  epsilon {epsilon_text(event['epsilon'])}"
    return line


def epsilon_text(epsilon: float) -> str:
    """ε for a terminal: its value, or ``inf (no noise: no privacy)`` (noise multiplier 0)."""
    return f"inf ({NO_PRIVACY})" if epsilon == math.inf else fmt(epsilon, 2)


def progress_printer(total_rounds: int, quiet_joins: bool = False) -> Callable[[dict], None]:
    """One line per round on stdout, flushed, plus joins, leaves and failures on stderr.

    ``quiet_joins`` (simulations with many clients) counts joins instead of
    printing one line each.
    """
    joined = 0

    def on_event(event: dict) -> None:
        nonlocal joined
        kind = event.get("type")
        if kind == EventType.ROUND:
            print(round_line(event, total_rounds), flush=True)
            return
        if kind == EventType.JOIN and quiet_joins:
            joined += 1
            return
        text = None
        if kind == EventType.ROUND_START and event.get("round") == 1 and quiet_joins:
            text = f"{joined} clients joined; round 1 starts"
        elif kind in SAID_ON_STDERR:
            text = describe_event(event)
        elif kind == EventType.DATA_REPORT:  # once, before round 1: what the sites' data is (their own words)
            text = "\n".join(shown(line) for line in report_lines(event.get("report") or {}))
        if text:
            sys.stderr.write(for_cli(text) + "\n")  # one write: lines from threads never interleave
            sys.stderr.flush()

    return on_event


class HeldUntilReleased:
    """An event printer that holds what arrives before ``release()``, then prints it and the rest in order.

    A server prints ``listening on HOST:PORT`` as its first line (scripts
    read it for the port); what the run says before that (its data report,
    a resume) follows it instead of preceding it.
    """

    def __init__(self, on_event: Callable[[dict], None]):
        self._on_event = on_event
        self._lock = threading.Lock()  # events come from the server's threads; order is kept under it
        self._held: list[dict] | None = []

    def __call__(self, event: dict) -> None:
        with self._lock:
            if self._held is not None:
                self._held.append(event)
            else:
                self._on_event(event)

    def release(self) -> None:
        with self._lock:
            held, self._held = self._held or [], None
            for event in held:
                self._on_event(event)


def column_notes(plan: Any) -> list[str]:
    """A CSV's excluded columns (row numbers, IDs, constants) and likely leaks, for the person to read once."""
    data = getattr(plan, "data", None)
    report = getattr(data.dataset, "column_report", None) if data is not None else None
    return [f"data: {line}" for line in report.lines()] if report is not None else []


def split_note(config: Any, client_ids: list[str], asked: int | None = None) -> list[str]:
    """A column split's clients, said once: their number comes from the data, not from --clients."""
    if config.partition != "column":
        return []
    names = ", ".join(client_ids[:10]) + (", ..." if len(client_ids) > 10 else "")
    note = f"split by '{config.split_column}': {len(client_ids)} clients, one per value ({names})"
    if asked is not None and asked != len(client_ids):
        note += f"; --clients {asked} is ignored"
    return [note]


def baselines_lines(baselines: dict | None, status: str,
                    accuracy: float | None = None) -> tuple[str, list[str]]:
    """The baselines' line for stdout (each number, or '-' and why), and notes for stderr: the clients left
    out of the local-only mean (the first ten), and a final ``accuracy`` no better than the majority class."""
    if baselines is None:
        why = "the run was stopped first" if status in ("skipped", "computing") else "they could not be computed"
        return f"baselines: not computed ({why})", []
    parts = []
    for key, name in (("centralized", "centralized"), ("local_only", "local-only"), ("majority", "majority")):
        base = baselines.get(key) or {}
        if base.get("accuracy") is None:
            parts.append(f"{name} - ({base.get('reason') or 'not computed'})")
            continue
        text = f"{name} {fmt(base.get('accuracy'))}"
        if key == "local_only" and base.get("n_clients") is not None:
            total = base.get("clients_total") or base["n_clients"]
            text += f" ({base['n_clients']} of {total} clients)" if base["n_clients"] != total \
                else f" ({total} clients)"
        elif key == "majority" and "class" in base:
            text += f" (class {base['class']})"
        parts.append(text)
    left_out = list(((baselines.get("local_only") or {}).get("left_out") or {}).items())
    notes = [f"baselines: local-only leaves out {cid} ({reason})" for cid, reason in left_out[:10]]
    if len(left_out) > 10:
        notes.append(f"baselines: local-only leaves out {len(left_out) - 10} more clients")
    majority = baselines.get("majority") or {}
    if accuracy is not None and majority.get("accuracy") is not None and accuracy <= majority["accuracy"]:
        notes.append(f"note: the global model ({fmt(accuracy)}) does no better than always answering the majority "
                     f"class {majority.get('class')} ({fmt(majority['accuracy'])})")
    return "baselines: " + "  ".join(parts), notes


def client_printer(client_id: str) -> tuple[Callable[[int, str, float], None], Callable[[dict], None]]:
    """What a client process tells the person who started it: joining, each round, losing the server and
    each try to rejoin it, leaving."""

    def on_attempt(attempt: int, problem: str, seconds_left: float) -> None:
        print(f"{client_id}: waiting for the server (attempt {attempt}: {shown(problem)}); "
              f"trying {seconds_left:.0f} s more", file=sys.stderr, flush=True)

    def on_event(event: dict) -> None:
        kind = event.get("type")
        event = {k: shown(v) if isinstance(v, str) else v for k, v in event.items()}  # the server's words too
        if kind == EventType.WELCOME:
            print(f"{client_id}: {'rejoined' if event.get('rejoined') else 'joined'} run {event['run_id']} "
                  f"({event['model']}, {event['n_classes']} classes, {event['n_features']} features) with "
                  f"{event['n_samples']} local rows", flush=True)
        elif kind == EventType.SUMMARY_SENT:
            print(f"{client_id}: sent the server a summary of its {event.get('rows')} rows (counts and sums, "
                  "no rows); waiting for the task", flush=True)
        elif kind == EventType.RECONNECTING:
            print(f"{client_id}: lost the server ({event.get('reason')}); trying to rejoin for "
                  f"{event.get('seconds', 0):g} s", file=sys.stderr, flush=True)
        elif kind == EventType.FIT:
            print(f"{client_id}: round {event['round']}  trained in {event.get('train_time_s', 0):.2f} s  "
                  f"train accuracy {fmt(event.get('train_accuracy'))}  loss {fmt(event.get('train_loss'))}",
                  flush=True)
        elif kind == EventType.EVALUATE:
            print(f"{client_id}: round {event['round']}  global model on local data: accuracy "
                  f"{fmt(event.get('accuracy'))}  loss {fmt(event.get('loss'))}", flush=True)
        elif kind == EventType.CLIENT_ERROR:
            print(f"{client_id}: cannot take part ({event.get('code')}): {event.get('message')}", file=sys.stderr,
                  flush=True)

    return on_attempt, on_event
