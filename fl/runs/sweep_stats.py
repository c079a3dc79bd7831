"""The numbers of a sweep: one row per run (summary.csv), one row per grid cell over its seeds (cells.csv).

Pure functions of plain rows, so the worker process, the sweep's own thread,
the dashboard and the tests compute them the same way. A cell's statistics
take its completed runs only: a stopped or failed run ended early and its
final accuracy is not that of the settings.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

METRICS = ("final_accuracy", "best_accuracy", "final_loss", "final_f1_macro")
RUN_COLUMNS = ("cell", "seed", "run_id", "status", *METRICS, "rounds_done", "duration_s", "bytes_total", "epsilon")
# a sweep that audits its runs (fl/runs/audit.py): each run's membership-inference AUCs, and their cell statistics
AUDIT_METRICS = ("audit_auc", "audit_auc_calibrated")
STAT_SUFFIXES = ("mean", "std", "ci_low", "ci_high")
CONFIDENCE = 0.95


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def run_outcome(rounds: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What summary.csv says of one run, from its round records (the rows of its metrics.csv).

    Final numbers are the last round's (summary.json's final_metrics), the
    best accuracy is the highest of any round, bytes are sent plus received
    over every round, ε is the privacy spent by the end (inf with noise
    multiplier 0, None without differential privacy).
    """
    last = rounds[-1] if rounds else {}
    accuracies = [a for a in (_number(r.get("accuracy")) for r in rounds) if a is not None]
    return {
        "final_accuracy": _number(last.get("accuracy")),
        "best_accuracy": max(accuracies) if accuracies else None,
        "final_loss": _number(last.get("loss")),
        "final_f1_macro": _number(last.get("f1_macro")),
        "rounds_done": len(rounds),
        "bytes_total": int(sum((_number(r.get("bytes_sent")) or 0) + (_number(r.get("bytes_received")) or 0)
                               for r in rounds)),
        "epsilon": _epsilon(last.get("epsilon")),
    }


def _epsilon(value: Any) -> float | None:
    """ε as a number: math.inf stays (no noise, no privacy), anything else not a number is None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and (value == math.inf or math.isfinite(value)):
        return float(value)
    return None


def audit_outcome(report: Mapping[str, Any]) -> dict[str, Any]:
    """summary.csv's audit columns from an audit report: each attack's AUC (None where it could not run)."""
    attacks = report.get("attacks") or {}
    return {"audit_auc": _number((attacks.get("loss") or {}).get("auc")),
            "audit_auc_calibrated": _number((attacks.get("calibrated") or {}).get("auc"))}


def mean_std_ci(values: Iterable[Any], confidence: float = CONFIDENCE) -> tuple[float, float, float, float]:
    """Mean, sample std (ddof=1) and the Student-t confidence interval of the mean; NaN where undefined.

    One value has a mean but no spread: std and interval are NaN, not 0
    (one seed says nothing about the next).
    """
    x = np.array([v for v in (_number(v) for v in values) if v is not None], dtype=float)
    if len(x) == 0:
        return (math.nan,) * 4
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan, math.nan
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, df=len(x) - 1)) * std / math.sqrt(len(x))
    return mean, std, mean - half, mean + half


def summary_frame(rows: Sequence[Mapping[str, Any]], grid_keys: Sequence[str], audit: bool = False) -> pd.DataFrame:
    """summary.csv: one row per run, the grid values first, in the sweep's order (``audit``: and its AUCs)."""
    run_columns = [*RUN_COLUMNS, *(AUDIT_METRICS if audit else ())]
    columns = [*grid_keys, *run_columns]
    out = [{**{k: _csv_value(row["cell_values"].get(k)) for k in grid_keys},
            **{c: row.get(c) for c in run_columns}} for row in rows]
    return pd.DataFrame(out, columns=columns)


def cells_frame(rows: Sequence[Mapping[str, Any]], cells: Sequence[Mapping[str, Any]],
                grid_keys: Sequence[str], audit: bool = False) -> pd.DataFrame:
    """cells.csv: one row per grid cell, its finished seeds, and mean, std and 95% interval of each metric
    (``audit``: of the audit's AUCs too)."""
    metrics = (*METRICS, *(AUDIT_METRICS if audit else ()))
    columns = [*grid_keys, "cell", "n_seeds", *(f"{m}_{s}" for m in metrics for s in STAT_SUFFIXES)]
    out = []
    for index, cell in enumerate(cells):
        done = [row for row in rows if row["cell"] == index and row.get("status") == "completed"]
        record: dict[str, Any] = {**{k: _csv_value(cell.get(k)) for k in grid_keys}, "cell": index,
                                  "n_seeds": len(done)}
        for metric in metrics:
            for suffix, value in zip(STAT_SUFFIXES, mean_std_ci(row.get(metric) for row in done)):
                record[f"{metric}_{suffix}"] = value
        out.append(record)
    return pd.DataFrame(out, columns=columns)


def _csv_value(value: Any) -> Any:
    """A grid value as one CSV cell: JSON for a dict (model_params), the value itself otherwise."""
    if isinstance(value, dict):
        import json

        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return value


def accuracy_curves(curves: Mapping[str, pd.DataFrame], band: str = "std") -> pd.DataFrame:
    """Per round over one cell's seeds: mean accuracy and a band (mean ± std, or min to max).

    ``curves`` maps each run id to its metrics.csv frame; returns columns
    round, mean, low, high, n.
    """
    frames = [df[["round", "accuracy"]] for df in curves.values() if len(df) and "accuracy" in df]
    if not frames:
        return pd.DataFrame(columns=["round", "mean", "low", "high", "n"])
    pooled = pd.concat(frames)
    pooled = pooled.assign(accuracy=pd.to_numeric(pooled["accuracy"], errors="coerce")).dropna()
    grouped = pooled.groupby("round")["accuracy"]
    out = grouped.agg(mean="mean", std=lambda v: v.std(ddof=1) if len(v) > 1 else 0.0, low="min", high="max",
                      n="count").reset_index()
    if band == "std":
        out["low"], out["high"] = out["mean"] - out["std"], out["mean"] + out["std"]
    return out[["round", "mean", "low", "high", "n"]]
