"""What the pages say about a run's baselines: values, help texts, reasons. Pure functions, no Streamlit.

A baseline that could not be computed carries a ``reason`` (fl/runs/baselines.py);
the page shows it instead of a bare dash, and the final banner measures the
model against the majority class, which a skewed label makes high.
"""

from __future__ import annotations

from typing import Any

from ui.format import is_number, pct

LABELS = {"centralized": "Centralized", "local_only": "Local only (mean)", "majority": "Majority class"}
HELP = {
    "centralized": "Same model trained on the union of the clients' data.",
    "local_only": "Each client's model trained on its own data alone, scored on the same test split.",
    "majority": "Always answering the most frequent label of the clients' training data, whatever the features: "
                "a model that scores at or below it has learned nothing useful.",
}
PENDING = {"computing": "Being computed beside the rounds.",
           "skipped": "The run was stopped before they were computed."}
MAX_NAMED_CLIENTS = 5


def class_name(label: Any) -> str:
    """A label as the page writes it: 3, or 'no'."""
    return f"'{label}'" if isinstance(label, str) else str(label)


def metric(snap: dict, kind: str) -> tuple[str, str]:
    """(value, help) of one baseline's accuracy for the headline: a number, '…' while computed, or '–' and why."""
    base = (snap.get("baselines") or {}).get(kind) or {}
    status = snap.get("baselines_status")
    value = base.get("accuracy")
    if is_number(value):
        return pct(value), " ".join(p for p in (HELP[kind], detail(base, kind)) if p)
    if base.get("reason"):
        return "–", f"Could not be computed: {base['reason']}."
    if status == "computing":
        return "…", f"{HELP[kind]} {PENDING['computing']}"
    why = PENDING.get(status or "") or "Not computed for this run."
    return "–", f"{HELP[kind]} {why}"


def detail(base: dict, kind: str) -> str:
    """What one computed baseline is over: the majority's class, the clients in the local-only mean."""
    if kind == "majority" and "class" in base:
        return f"Here: always answering class {class_name(base['class'])}."
    if kind == "local_only" and base.get("n_clients") is not None:
        total = base.get("clients_total") or base["n_clients"]
        over = f"{base['n_clients']} of {total}" if base["n_clients"] != total else f"all {total}"
        return f"Mean over {over} clients."
    return ""


def notes(baselines: dict | None) -> list[str]:
    """Sentences for what is missing: a baseline and its reason, clients left out of the local-only mean."""
    out = []
    for kind, label in LABELS.items():
        base = (baselines or {}).get(kind) or {}
        if base.get("reason"):
            out.append(f"{label}: could not be computed ({base['reason']}).")
    left_out = ((baselines or {}).get("local_only") or {}).get("left_out") or {}
    if left_out and is_number(((baselines or {}).get("local_only") or {}).get("accuracy")):
        named = [f"{cid} ({reason})" for cid, reason in list(left_out.items())[:MAX_NAMED_CLIENTS]]
        more = f" and {len(left_out) - MAX_NAMED_CLIENTS} more" if len(left_out) > MAX_NAMED_CLIENTS else ""
        out.append(f"Local only leaves out {len(left_out)} client{'s' if len(left_out) > 1 else ''} whose own "
                   f"model could not be trained: {', '.join(named)}{more}.")
    return out


def majority(snap: dict) -> dict | None:
    """The majority-class baseline when it was computed, else None."""
    base = (snap.get("baselines") or {}).get("majority") or {}
    return base if is_number(base.get("accuracy")) else None
