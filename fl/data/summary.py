"""Data summaries: what a site says about its data (counts and sums, never rows), and their merge.

A coordinator without data of its own builds the task from these: the
feature columns every site holds, the one-hot category sets (the union of
the values the sites name), the global scaler (mean and standard deviation
from the sums) and the label set (the union: one site may hold one class).
A site summarises exactly the columns ``plan_features`` would use, so the
summary and the features it later builds cannot disagree. The wire format is
``fl/wire/summary.py``; docs/protocol.md, "Data summaries", is the contract.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fl.data.csvdata import MAX_CATEGORIES, column_report, plan_features
from fl.data.labels import normalize_labels, text_values
from fl.data.partition import DataError

OTHER = "other"  # the pooled count of values rarer than min_category_count (never a feature)


def _label(value: Any) -> Any:
    """A label as JSON carries it: a plain int or a string."""
    return int(value) if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else str(value)


def summarize_data(frame: pd.DataFrame, y: np.ndarray, min_category_count: int, train_rows: np.ndarray | None = None,
                   report: dict | None = None) -> dict[str, Any]:
    """A site's summary of its raw feature ``frame`` and labels ``y``.

    Column statistics are over ``train_rows`` (the rows it will train on; all
    when None), label counts over every row (the task must know every label a
    site holds). A text value held by fewer than ``min_category_count`` rows
    is pooled into ``other``, so a summary never names a rare value. The
    ``report`` says which columns the site's own plan left out and why, and
    its likely leaks (fl.data.columns), for the run's data report.
    """
    rows = frame if train_rows is None else frame.iloc[train_rows].reset_index(drop=True)
    y_rows = np.asarray(y) if train_rows is None else np.asarray(y)[train_rows]
    # One site's rows: a column constant here may vary across the sites (whole_table=False keeps it);
    # a site holding one class cannot say whether a column predicts the label (no leak scores then).
    plans = plan_features(rows, y_rows if len(np.unique(y_rows)) > 1 else None, whole_table=False)
    own = column_report(plans, rows)
    site_report = {"excluded": [dict(e) for e in own.excluded], "leak_warnings": list(own.warnings),
                   "notes": list(own.notes), **(report or {})}
    columns: list[dict[str, Any]] = []
    for plan in plans:
        s = rows[plan.column]
        entry: dict[str, Any] = {"name": str(plan.column), "kind": plan.kind, "missing": int(s.isna().sum())}
        if plan.kind == "numeric":
            values = pd.to_numeric(s, errors="coerce").astype(np.float64).to_numpy()
            values = values[np.isfinite(values)]
            entry.update(count=int(values.size), sum=float(values.sum()), sum_sq=float(np.square(values).sum()),
                         min=float(values.min()) if values.size else None,
                         max=float(values.max()) if values.size else None)
        elif plan.kind == "category":
            counts = text_values(s).dropna().value_counts()
            named = {str(v): int(n) for v, n in counts.items() if n >= min_category_count}
            entry.update(values=dict(sorted(named.items())), other=int(counts.sum()) - sum(named.values()))
        else:
            entry.update(kind="dropped", reason=plan.action)
        columns.append(entry)
    labels, counts = np.unique(np.asarray(y), return_counts=True)
    return {"rows": int(len(frame)), "labels": [[_label(v), int(n)] for v, n in zip(labels.tolist(), counts)],
            "columns": columns, "report": site_report}


@dataclass
class MergedData:
    """What the sites' summaries add up to: the task's columns, scaling and labels, and the data report."""

    feature_names: list[str]
    mean: list[float]
    scale: list[float]
    classes: list
    columns: dict[str, str]  # raw column -> "numeric" | "category", the columns the task uses
    report: dict[str, Any] = field(default_factory=dict)


def merge_summaries(summaries: dict[str, dict], min_category_count: int,
                    max_categories: int = MAX_CATEGORIES) -> MergedData:
    """Merge the sites' summaries (by client id) into the global preprocessing; DataError when no task fits.

    A column is a feature when every site holds it with the same kind; the
    categories of a text column are the union of the values any site names
    (sorted); the scaler is the pooled mean and population standard deviation
    (a scale of 0 is sent as 1). Only the union of the labels needs two classes.
    """
    if not summaries:
        raise DataError("no site sent a summary of its data")
    sites = sorted(summaries)
    by_site = {cid: {c["name"]: c for c in summaries[cid]["columns"]} for cid in sites}
    order = list(dict.fromkeys(c["name"] for cid in sites for c in summaries[cid]["columns"]))
    names, mean, scale, used, col_rows = [], [], [], {}, []
    for col in order:
        entries = {cid: by_site[cid].get(col) for cid in sites}
        missing = sum(e["missing"] for e in entries.values() if e is not None)
        why, stats = _column_verdict(col, entries, max_categories)
        row = {"column": col, "kind": "dropped" if why else stats["kind"], "missing": missing,
               "used": why is None, "reason": why or stats["describe"]}
        col_rows.append(row)
        if why:
            continue
        used[col] = stats["kind"]
        if stats["kind"] == "numeric":
            names.append(col)
            mean.append(stats["mean"])
            scale.append(stats["scale"])
        else:
            for value in stats["categories"]:
                names.append(f"{col}={value}")
                share = stats["share"][value]  # one-hot columns are standardised like the rest
                mean.append(share)
                scale.append(math.sqrt(share * (1 - share)) or 1.0)
    if not names:
        raise DataError("the sites share no usable feature column (numeric, or text with few values): "
                        + "; ".join(f"{r['column']}: {r['reason']}" for r in col_rows))
    classes, site_rows, totals = _labels(summaries, sites)
    report = {"source": "summaries", "sites": site_rows, "classes": classes, "class_counts": totals,
              "columns": col_rows, "n_features": len(names), "feature_names": names,
              "min_category_count": min_category_count,
              "excluded": [dict(e, site=cid) for cid in sites for e in summaries[cid]["report"].get("excluded", [])],
              "leak_warnings": [f"{cid}: {w}" for cid in sites for w in summaries[cid]["report"].get("leak_warnings",
                                                                                                      [])]}
    return MergedData(names, mean, scale, classes, used, report)


def _column_verdict(col: str, entries: dict[str, dict | None], max_categories: int) -> tuple[str | None, dict]:
    """(why the column is left out, or None; its merged statistics)."""
    lacking = [cid for cid, e in entries.items() if e is None]
    if lacking:
        return f"not at every site (missing at {', '.join(lacking)})", {}
    dropped = {cid: e.get("reason") or "dropped" for cid, e in entries.items() if e["kind"] == "dropped"}
    if dropped:
        return "; ".join(f"{cid}: {why}" for cid, why in dropped.items()), {}
    kinds = {cid: e["kind"] for cid, e in entries.items()}
    if len(set(kinds.values())) > 1:
        return "numeric at some sites, text at others (" + ", ".join(f"{c}: {k}" for c, k in kinds.items()) + ")", {}
    es = list(entries.values())
    if es[0]["kind"] == "numeric":
        n = sum(e["count"] for e in es)
        if n == 0:
            return "no values at any site", {}
        mu = sum(e["sum"] for e in es) / n
        var = max(sum(e["sum_sq"] for e in es) / n - mu * mu, 0.0)
        sd = math.sqrt(var)
        return None, {"kind": "numeric", "mean": mu, "scale": sd if sd > 1e-12 * max(1.0, abs(mu)) else 1.0,
                      "describe": f"numeric: mean {mu:.4g}, std {sd:.4g} over {n} values"}
    counts: dict[str, int] = {}
    for e in es:
        for value, k in e["values"].items():
            counts[value] = counts.get(value, 0) + k
    rows = sum(e["other"] + sum(e["values"].values()) + e["missing"] for e in es)
    if not counts:
        return "every value is rarer than the minimum category count at each site", {}
    if len(counts) > max_categories:
        return f"{len(counts)} distinct text values across the sites (at most {max_categories})", {}
    cats = sorted(counts)
    pooled = sum(e["other"] for e in es)
    note = f", {pooled} rows of rare values pooled as '{OTHER}' (all-zero)" if pooled else ""
    return None, {"kind": "category", "categories": cats, "share": {c: counts[c] / max(rows, 1) for c in cats},
                  "describe": f"one-hot: {len(cats)} values ({', '.join(cats)}){note}"}


def _labels(summaries: dict[str, dict], sites: list[str]) -> tuple[list, list[dict], dict]:
    """The union of the labels (at least two), each site's class balance, and the pooled counts."""
    raw = [pair[0] for cid in sites for pair in summaries[cid]["labels"]]
    if not raw:
        raise DataError("the sites hold no labelled rows")
    normal = normalize_labels(np.array(raw, dtype=object)).tolist()
    lookup = dict(zip([(type(v).__name__, v) for v in raw], normal))
    totals: dict = {}
    site_rows = []
    for cid in sites:
        counts: dict = {}
        for value, n in summaries[cid]["labels"]:
            label = lookup[(type(value).__name__, value)]
            counts[label] = counts.get(label, 0) + n
            totals[label] = totals.get(label, 0) + n
        site_rows.append({"client_id": cid, "rows": summaries[cid]["rows"], "n_classes": len(counts),
                          "class_counts": {str(k): v for k, v in sorted(counts.items())},
                          "notes": list(summaries[cid]["report"].get("notes", []))})
    classes = sorted(totals)
    if len(classes) < 2:
        raise DataError(f"together the sites hold only one class ({classes[0]!r}); the task needs at least two")
    return classes, site_rows, {str(k): v for k, v in sorted(totals.items())}


def columns_problem(summary: dict, columns: dict[str, str]) -> str | None:
    """Why a site that joins after the task was built cannot build its features, naming the columns; or None.

    Columns it has beyond the task's are ignored; a column the task uses must
    be there, of the same kind (a numeric column numeric, a text column text).
    """
    have = {c["name"]: c["kind"] for c in summary["columns"]}
    lacking = [c for c in columns if c not in have]
    wrong = [f"{c} ({have[c]} here, {k} in the task)" for c, k in columns.items()
             if c in have and have[c] != k and not (have[c] == "dropped" and k == "category")]
    if not lacking and not wrong:
        return None
    parts = ([f"missing column(s) {', '.join(lacking)}"] if lacking else []) + \
        ([f"column(s) of another kind: {', '.join(wrong)}"] if wrong else [])
    extra = sorted(set(have) - set(columns))
    tail = f" (its other columns {', '.join(extra)} are ignored)" if extra else ""
    return f"the data's columns differ from the task's: {'; '.join(parts)}{tail}"


def report_lines(report: dict, max_sites: int = 20) -> list[str]:
    """The data report in a few lines for a terminal: sites, classes, columns dropped, leak warnings."""
    sites = report.get("sites") or []
    held = report.get("server_holds")
    if held and not sites:  # a server with its own data: its held-out rows; the sites' rows are theirs
        validation = f" and {held['validation_rows']} validation rows" if held.get("validation_rows") else ""
        lines = [f"data: the server holds {held.get('test_rows')} test rows{validation} of {held.get('name')} "
                 f"({len(report.get('classes') or [])} classes, {report.get('n_features')} features); "
                 "clients bring their own"]
    else:
        lines = [f"data: {len(sites)} sites, {sum(s.get('rows') or 0 for s in sites)} rows, "
                 f"{report.get('n_features')} features, classes {report.get('classes')}"]
    for s in sites[:max_sites]:
        one = " (1 class: trains on it, scored on it)" if s.get("n_classes") == 1 else ""
        balance = ", ".join(f"{k}: {v}" for k, v in (s.get("class_counts") or {}).items())
        lines.append(f"  {s.get('client_id')}: {s.get('rows')} rows, {balance}{one}")
    if len(sites) > max_sites:
        lines.append(f"  ... and {len(sites) - max_sites} more sites (data_report.json)")
    dropped = [f"{c['column']} ({c['reason']})" for c in report.get("columns") or [] if not c.get("used")]
    if dropped:
        lines.append("  columns left out: " + "; ".join(dropped))
    missing = [f"{c['column']}: {c['missing']}" for c in report.get("columns") or [] if c.get("missing")]
    if missing:
        lines.append("  missing values: " + ", ".join(missing))
    lines += [f"  possible leak: {w}" for w in report.get("leak_warnings") or []]
    return lines


def report_from_data(dataset: Any, sites: dict[str, np.ndarray] | None = None,
                     server_holds: dict[str, Any] | None = None) -> dict:
    """The data report of a run that holds its data (a simulation, a server with its own CSV): the same shape
    as the merged summaries' (``sites``, ``classes``, ``columns``, ``excluded``, ``leak_warnings``), from the
    dataset's own column report; ``sites`` maps client ids to their labels (a simulation's partitions);
    ``server_holds`` says what a hosting server keeps of it (``name``, ``test_rows``, ``validation_rows``)."""
    cr = dataset.column_report
    classes = [_label(c) for c in dataset.classes]
    site_rows = []
    for cid, y in (sites or {}).items():
        values, counts = np.unique(np.asarray(y), return_counts=True)
        site_rows.append({"client_id": cid, "rows": int(len(y)), "n_classes": int(len(values)),
                          "class_counts": {str(_label(v)): int(n) for v, n in zip(values, counts)}, "notes": []})
    values, counts = np.unique(np.asarray(dataset.y), return_counts=True)
    missing = dict(cr.missing) if cr is not None else {}
    columns = [{"column": name, "kind": "category" if "=" in name else "numeric", "missing": missing.get(name, 0),
                "used": True, "reason": "used"} for name in dataset.feature_names]
    if cr is not None:
        columns += [{"column": e["column"], "kind": "dropped", "missing": missing.get(e["column"], 0),
                     "used": False, "reason": e["reason"]} for e in cr.excluded]
    return {"source": "data", "dataset": dataset.name, "sites": site_rows, "classes": classes,
            "class_counts": {str(_label(v)): int(n) for v, n in zip(values, counts)}, "columns": columns,
            "n_features": len(dataset.feature_names), "feature_names": list(dataset.feature_names),
            "excluded": [dict(e) for e in cr.excluded] if cr is not None else [],
            "leak_warnings": list(cr.warnings) if cr is not None else [], "notes": list(dataset.notes),
            **({"server_holds": dict(server_holds)} if server_holds else {})}
