"""Per-round numbers the round loop derives from what clients sent: metadata rows, summed counts, spreads.

Global metrics of a server without data are computed from the sites' summed
confusion matrices (fl/learning/metrics.py): the sum of counts is the count
of the pooled rows, so macro F1 and balanced accuracy equal those of the
pooled predictions. Accuracy and loss are per-row means, whose
sample-weighted mean is exact. When a site sent no counts (a client written
before them), the metrics that need counts are not available for the round
(None), never an average of per-site ratios.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fl.learning.metrics import metrics_from_confusion
from fl.wire import FitResult

METRIC_KEYS = ("accuracy", "loss", "f1_macro", "balanced_accuracy")
COUNT_METRICS = ("f1_macro", "balanced_accuracy")  # not a per-row mean: only from summed counts


UNIT = (0.0, 1.0)
NON_NEGATIVE = (0.0, math.inf)
# The metrics the server reads from results, and the range a true value lies in (docs/protocol.md).
EVAL_METRIC_RANGES = {"accuracy": UNIT, "loss": NON_NEGATIVE, "f1_macro": UNIT, "balanced_accuracy": UNIT}
FIT_METRIC_RANGES = {"train_time_s": NON_NEGATIVE, "train_loss": NON_NEGATIVE, "train_accuracy": UNIT}


def metric_problem(metrics: dict, ranges: dict[str, tuple[float, float]]) -> str | None:
    """Why a client's metrics cannot be true (a known one that is not a number, or out of its range), or None.

    null (and a missing key) means "not scored" and is fine; other keys are
    the client's own and are not read.
    """
    for key, (low, high) in ranges.items():
        value = metrics.get(key)
        if value is None:
            continue
        if not finite(value):
            return f"its {key} is not a number ({str(value)[:40]!r})"
        if not low <= value <= high:
            span = f"from {low:g} to {high:g}" if math.isfinite(high) else f"at least {low:g}"
            return f"its {key} {value:g} is impossible (it lies {span})"
    return None


def metadata_fields(msg: FitResult) -> dict[str, Any]:
    """A result's metadata (the client's own account) for its clients.csv row."""
    meta = msg.metadata
    if meta is None:
        return {}
    return {"epoch_losses": meta.epoch_losses, "converged": meta.converged, "samples_used": meta.samples_used,
            "reported_update_norm": meta.update_norm}


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def weighted_mean(per_client: dict[str, dict], key: str) -> float:
    """Sample-weighted mean of a per-row metric (accuracy, loss) over the clients that reported a finite value."""
    pairs = [(s.get(key), s["n_samples"]) for s in per_client.values()]
    pairs = [(v, n) for v, n in pairs if finite(v) and n > 0]
    weight = sum(n for _, n in pairs)
    return sum(v * n for v, n in pairs) / weight if weight else math.nan


def federated_metrics(per_client: dict[str, dict], n_classes: int) -> dict[str, Any]:
    """The global metrics of the sites' answers: accuracy, F1 and balanced accuracy from their summed confusion
    matrices (``confusion``, None when a site sent none), loss as the weighted mean of their per-row means.

    The summed matrix is returned as ``confusion`` (None when a site sent no
    counts: its F1 and balanced accuracy are then None, not an average).
    """
    scored = {cid: s for cid, s in per_client.items() if s.get("n_samples", 0) > 0}
    out: dict[str, Any] = {"loss": weighted_mean(scored, "loss"), "confusion": None}
    if scored and all(s.get("confusion") is not None for s in scored.values()):
        total = np.zeros((n_classes, n_classes), dtype=object)  # Python integers: no sum of counts wraps around
        for s in scored.values():
            total = total + s["confusion"].astype(object)
        out.update(metrics_from_confusion(total), confusion=total)
    else:
        out.update(accuracy=weighted_mean(scored, "accuracy"), **dict.fromkeys(COUNT_METRICS))
    return out


SPREAD_KEYS = ("worst_client_accuracy", "client_accuracy_p10", "client_accuracy_median", "client_accuracy_p90",
               "client_accuracy_std")


def client_spread(per_client: dict[str, dict]) -> dict[str, float | None]:
    """How the global model serves the clients, on their own held-out rows: the worst, percentiles, spread.

    Kept in each round's record, so a page can draw a thousand clients as a
    band without reading a thousand rows.
    """
    values = np.array([s.get("accuracy") for s in per_client.values() if finite(s.get("accuracy"))])
    if not len(values):
        return dict.fromkeys(SPREAD_KEYS)
    p10, p50, p90 = np.percentile(values, [10, 50, 90])
    return dict(zip(SPREAD_KEYS, (float(values.min()), float(p10), float(p50), float(p90), float(values.std()))))
