"""What a run's events say, in words: one line per event for the CLI and the event log.

Events are plain dicts (``{"type": ..., "t": ..., ...}``) so they can be
written to events.jsonl as they are; this module is the one place that turns
them into sentences, so the command line and the dashboard say the same thing.
"""

from __future__ import annotations

import math
from typing import Any


def _num(value: Any, digits: int = 3) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return f"{value:.{digits}f}"
    return "-"


def _pct(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return f"{100 * value:.1f}%"
    return "-"


def describe_event(event: dict) -> str | None:
    """One sentence about an event, or None for bookkeeping events nobody needs to read."""
    kind, cid = event.get("type"), event.get("client_id")
    if kind == "listening":
        return f"listening on {event.get('host')}:{event.get('port')}"
    if kind == "join":
        peer = f" from {event['peer']}" if event.get("peer") else ""
        return f"{cid} joined{peer} with {event.get('n_samples')} rows"
    if kind == "leave":
        return f"{cid} left: {event.get('reason')}"
    if kind == "refused":
        return f"refused a connection from {event.get('peer')} ({event.get('code')}): {event.get('message')}"
    if kind == "round_start":
        return f"round {event.get('round')} started with {len(event.get('clients') or [])} clients"
    if kind == "failure":
        return f"round {event.get('round')}: {cid} failed: {event.get('reason')}"
    if kind == "straggler":
        return f"round {event.get('open_round')}: late result of round {event.get('round')} from {cid} ignored"
    if kind == "client_result":
        parts = [f"round {event.get('round')}: {event.get('status')}"]
        if event.get("train_accuracy") is not None:
            parts.append(f"train accuracy {_pct(event.get('train_accuracy'))}")
        if event.get("eval_accuracy") is not None:
            parts.append(f"global model on its data {_pct(event.get('eval_accuracy'))}")
        if event.get("reason"):
            parts.append(str(event["reason"]))
        return ", ".join(parts)
    if kind == "round":
        text = (f"round {event.get('round')}: accuracy {_pct(event.get('accuracy'))}, loss "
                f"{_num(event.get('loss'))}, {event.get('n_fit_clients')} clients trained, "
                f"{event.get('n_failures')} failed")
        if event.get("worst_client_accuracy") is not None:
            text += f", worst client {_pct(event.get('worst_client_accuracy'))}"
        return text
    if kind == "error":
        return f"error: {event.get('message')}"
    if kind == "done":
        final = event.get("final_metrics") or {}
        text = f"run {event.get('status')}: accuracy {_pct(final.get('accuracy'))}"
        return text + (f" ({event['error']})" if event.get("error") else "")
    return None
