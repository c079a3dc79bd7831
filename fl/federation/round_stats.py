"""Per-round numbers the round loop derives from what clients sent: metadata rows, weighted means, spreads."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fl.wire import FitResult

METRIC_KEYS = ("accuracy", "loss", "f1_macro")


def metadata_fields(msg: FitResult) -> dict[str, Any]:
    """A result's metadata (the client's own account) for its clients.csv row."""
    meta = msg.metadata
    if meta is None:
        return {}
    return {"epoch_losses": meta.epoch_losses, "converged": meta.converged, "samples_used": meta.samples_used,
            "reported_update_norm": meta.update_norm}


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def weighted_mean(per_client: dict[str, dict]) -> dict[str, float]:
    """Sample-weighted mean of each metric over the clients that reported a finite value."""
    out = {}
    for key in METRIC_KEYS:
        pairs = [(s.get(key), s["n_samples"]) for s in per_client.values()]
        pairs = [(v, n) for v, n in pairs if finite(v) and n > 0]
        weight = sum(n for _, n in pairs)
        out[key] = sum(v * n for v, n in pairs) / weight if weight else math.nan
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
