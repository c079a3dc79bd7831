"""Data summaries: what a site says about its data (counts and sums, never rows), and their merge.

A coordinator without data of its own builds the task from these: the
feature columns every site holds, the one-hot category sets (the union of
the values the sites name), the global scaler (mean and standard deviation
from the sums) and the label set (the union: one site may hold one class).
A site summarises exactly the columns ``plan_features`` would use, so the
summary and the features it later builds cannot disagree. The wire format is
``fl/wire/summary_messages.py``; docs/protocol.md, "Data summaries", is the contract.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fl.data.csvdata import MAX_CATEGORIES, column_report, plan_features
from fl.data.labels import MAX_CLASSES, label_counts, normalize_labels, text_values
from fl.data.errors import DataError
from fl.data.summary_checks import MAX_REPORT_ITEMS, MAX_REPORT_TEXT, MAX_TEXT, text_problem

OTHER = "other"  # the pooled count of values rarer than min_category_count (never a feature)
KIND_WORDS = {"numeric": "numeric", "category": "text"}  # a column kind as people say it


def _label(value: Any) -> Any:
    """A label as JSON carries it: a plain int or a string."""
    return int(value) if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else str(value)


def fit_text(value: Any, limit: int) -> str:
    """A string a summary may carry: printable characters only (others become '?'), at most ``limit`` of them."""
    return "".join(ch if ch.isprintable() else "?" for ch in str(value)[:limit])


def summarize_data(frame: pd.DataFrame, y: np.ndarray, min_category_count: int, train_rows: np.ndarray | None = None,
                   report: dict | None = None) -> dict[str, Any]:
    """A site's summary of its raw feature ``frame`` and labels ``y`` (one per row of ``frame``).

    Column statistics are over ``train_rows`` (the rows it will train on; all
    when None), label counts over every row (the task must know every label a
    site holds). A text value held by fewer than ``min_category_count`` rows
    is pooled into ``other``, so a summary never names a rare value. The
    ``report`` says which columns the site's own plan left out and why, and
    its likely leaks (fl.data.columns), for the run's data report.

    The result passes ``summary_checks.summary_problem`` by construction: a
    numeric column's ``missing`` counts every cell without a finite number, so
    count + missing is the training rows; a value or a column name the checks
    would refuse (long, not printable) is pooled or left out here instead.
    """
    rows = frame if train_rows is None else frame.iloc[train_rows].reset_index(drop=True)
    y_rows = np.asarray(y) if train_rows is None else np.asarray(y)[train_rows]
    # One site's rows: a column constant here may vary across the sites (whole_table=False keeps it);
    # a site holding one class cannot say whether a column predicts the label (no leak scores then).
    plans = plan_features(rows, y_rows if len(label_counts(y_rows)[0]) > 1 else None, whole_table=False)
    own = column_report(plans, rows)
    notes = list(own.notes)
    columns: list[dict[str, Any]] = []
    unnamed = 0
    for plan in plans:
        name = str(plan.column)
        if text_problem(name, "name"):
            unnamed += 1
            continue
        s = rows[plan.column]
        entry: dict[str, Any] = {"name": name, "kind": plan.kind, "missing": int(s.isna().sum())}
        if plan.kind == "numeric":
            values = pd.to_numeric(s, errors="coerce").astype(np.float64).to_numpy()
            values = values[np.isfinite(values)]
            entry.update(missing=len(rows) - int(values.size), count=int(values.size), sum=float(values.sum()),
                         sum_sq=float(np.square(values).sum()),
                         min=float(values.min()) if values.size else None,
                         max=float(values.max()) if values.size else None)
        elif plan.kind == "category":
            counts = text_values(s).dropna().value_counts()
            named = {str(v): int(n) for v, n in counts.items()
                     if n >= min_category_count and not text_problem(str(v), "value", allow_empty=True)}
            entry.update(values=dict(sorted(named.items())), other=int(counts.sum()) - sum(named.values()))
        else:
            entry.update(kind="dropped", reason=fit_text(plan.action, MAX_REPORT_TEXT))
        columns.append(entry)
    if unnamed:
        notes.append(f"{unnamed} column(s) whose name is not printable text of at most {MAX_TEXT} characters "
                     "left out of the summary")
    site_report = {"excluded": [{"column": fit_text(e["column"], MAX_TEXT), "reason": fit_text(e["reason"],
                                                                                           MAX_REPORT_TEXT)}
                                for e in own.excluded][:MAX_REPORT_ITEMS],
                   "leak_warnings": [fit_text(w, MAX_REPORT_TEXT) for w in own.warnings][:MAX_REPORT_ITEMS],
                   "notes": [fit_text(n, MAX_REPORT_TEXT) for n in notes][:MAX_REPORT_ITEMS], **(report or {})}
    labels, counts = label_counts(np.asarray(y))
    return {"rows": int(len(frame)), "labels": [[_label(v), int(n)] for v, n in zip(labels, counts)],
            "columns": columns, "report": site_report}


@dataclass
class MergedData:
    """What the sites' summaries add up to: the task's columns, scaling and labels, and the data report.

    ``left_out`` names the sites that cannot build this task (a column it
    uses that they lack; labels beyond the classes a task may have): code and
    reason, for the server to refuse them before round 1.
    """

    feature_names: list[str]
    mean: list[float]
    scale: list[float]
    classes: list
    columns: dict[str, str]  # raw column -> "numeric" | "category", the columns the task uses
    report: dict[str, Any] = field(default_factory=dict)
    left_out: dict[str, tuple[str, str]] = field(default_factory=dict)


def merge_summaries(summaries: dict[str, dict], min_category_count: int, max_categories: int = MAX_CATEGORIES,
                    max_classes: int = MAX_CLASSES) -> MergedData:
    """Merge the sites' checked summaries (by client id) into the global preprocessing; DataError when no task fits.

    Every decision is weighted by the sites' rows, so a site sways the task
    no more than its rows allow. A column is a feature, of kind K, when the
    sites holding it as K have more than half of all the rows; a site holding
    it otherwise (dropped, the other kind, too many values) trains with it
    but adds nothing to its statistics, and the data report names it. A site
    lacking a feature column altogether cannot build the task: it is left
    out (``left_out``), one at a time, the smallest first, and the rest is
    merged again; as is a site whose labels would take the classes beyond
    ``max_classes`` (the larger sites' labels first). The categories of a
    text column are the values the agreeing sites name (the ``max_categories``
    most frequent when there are more); the scaler is the pooled mean and
    population standard deviation of the agreeing sites (a scale of 0 is sent
    as 1); only the union of the labels needs two classes.
    """
    if not summaries:
        raise DataError("no site sent a summary of its data")
    active = sorted(summaries)
    left_out: dict[str, tuple[str, str]] = {}
    while True:
        col_rows, features = _plan_columns(summaries, active, max_categories)
        candidates: dict[str, tuple[str, str]] = {}
        for f in features:
            for cid in f["lacking"]:
                why = candidates.get(cid, ("shape", ""))[1]
                candidates[cid] = ("shape", f"{why}, {f['column']}" if why else f["column"])
        candidates = {cid: ("shape", f"its data lacks column(s) {why}, which the task uses (the sites holding them "
                                     "have most of the rows)") for cid, (_, why) in candidates.items()}
        overflow = _label_overflow(summaries, active, max_classes)
        if overflow is not None:
            candidates.setdefault(overflow[0], ("labels", overflow[1]))
        if not candidates:
            break
        gone = min(candidates, key=lambda cid: (summaries[cid]["rows"], cid))  # the smallest goes first
        left_out[gone] = candidates[gone]
        active.remove(gone)
    names, mean, scale, used = [], [], [], {}
    for f in features:
        used[f["column"]] = f["kind"]
        if f["kind"] == "numeric":
            names.append(f["column"])
            mean.append(f["mean"])
            scale.append(f["scale"])
            continue
        for value in f["categories"]:
            names.append(f"{f['column']}={value}")
            share = f["share"][value]  # one-hot columns are standardised like the rest
            mean.append(share)
            scale.append(math.sqrt(share * (1 - share)) or 1.0)
    if not names:
        raise DataError("the sites share no usable feature column (numeric, or text with few values): "
                        + "; ".join(f"{r['column']}: {r['reason']}" for r in col_rows))
    classes, site_rows, totals = _labels(summaries, active)
    disagreements = [d for f in features for d in f["disagreements"]]
    for row in site_rows:
        cid = row["client_id"]
        row["notes"] += [d["sentence"] for d in disagreements if d["site"] == cid]
    reports = {cid: summaries[cid].get("report") or {} for cid in active}
    report = {"source": "summaries", "sites": site_rows, "classes": classes, "class_counts": totals,
              "columns": col_rows, "n_features": len(names), "feature_names": names,
              "min_category_count": min_category_count,
              "excluded": [dict(e, site=cid) for cid in active for e in reports[cid].get("excluded", [])],
              "leak_warnings": [f"{cid}: {w}" for cid in active for w in reports[cid].get("leak_warnings", [])],
              "disagreements": [{k: v for k, v in d.items()} for d in disagreements],
              "left_out": [{"client_id": cid, "code": code, "reason": why} for cid, (code, why) in left_out.items()]}
    return MergedData(names, mean, scale, classes, used, report, left_out)


def _vote(entry: dict | None, max_categories: int) -> str:
    """What one site says a column is: numeric, category, dropped, or absent (it has no such column)."""
    if entry is None:
        return "absent"
    if entry["kind"] == "category" and len(entry["values"]) > max_categories:
        return "dropped"
    return entry["kind"]


def _sent_as(entry: dict | None, max_categories: int) -> str:
    """How a site sent a column, in words, for the data report."""
    if entry is None:
        return "missing"
    if entry["kind"] == "dropped":
        return f"dropped ({entry.get('reason') or 'no reason given'})"
    if entry["kind"] == "category" and len(entry["values"]) > max_categories:
        return f"text with {len(entry['values'])} named values (at most {max_categories})"
    return f"as {KIND_WORDS[entry['kind']]}"


def _plan_columns(summaries: dict[str, dict], active: list[str],
                  max_categories: int) -> tuple[list[dict], list[dict]]:
    """The data report's column rows, and the feature columns with their statistics, among the ``active`` sites."""
    by_site = {cid: {c["name"]: c for c in summaries[cid]["columns"]} for cid in active}
    weight = {cid: summaries[cid]["rows"] for cid in active}
    total = sum(weight.values())
    order = list(dict.fromkeys(c["name"] for cid in active for c in summaries[cid]["columns"]))
    col_rows, features = [], []
    for col in order:
        entries = {cid: by_site[cid].get(col) for cid in active}
        votes = {cid: _vote(e, max_categories) for cid, e in entries.items()}
        held = {k: sum(weight[cid] for cid, v in votes.items() if v == k) for k in ("numeric", "category")}
        kind = next((k for k, n in held.items() if 2 * n > total), None)
        missing = sum(e["missing"] for e in entries.values() if e is not None)
        if kind is None:
            why = _no_majority(entries, votes, held, total, max_categories)
            stats = None
        else:
            agree = [entries[cid] for cid, v in votes.items() if v == kind]
            why, stats = (_numeric_stats(agree) if kind == "numeric" else
                          _category_stats(agree, max_categories))
        row = {"column": col, "kind": "dropped" if why else kind, "missing": missing, "used": why is None,
               "reason": why or stats["describe"]}
        if why is None:
            others = [cid for cid, v in votes.items() if v not in (kind, "absent")]
            word = KIND_WORDS[kind]
            disagreements = [{"site": cid, "column": col, "sent": _sent_as(entries[cid], max_categories),
                              "task": word,
                              "sentence": f"disagreed on column {col} (sent {_sent_as(entries[cid], max_categories)}"
                                          f"; the others: {word}): it trains with the column and adds nothing to its "
                                          "statistics"} for cid in others]
            if others:
                row["reason"] += f"; {', '.join(others)} disagreed (left out of its statistics)"
                row["disagreed"] = others
            features.append({"column": col, "kind": kind, **stats, "disagreements": disagreements,
                             "lacking": [cid for cid, v in votes.items() if v == "absent"]})
        col_rows.append(row)
    return col_rows, features


def _no_majority(entries: dict[str, dict | None], votes: dict[str, str], held: dict[str, int], total: int,
                 max_categories: int) -> str:
    """Why a column is not a feature: no kind holds more than half of the rows; who said what."""
    if all(v == "dropped" for v in votes.values()):
        return _grouped(entries, max_categories, "; ")
    said = _grouped(entries, max_categories, ", ")
    return (f"no kind held by sites with more than half of the {total} rows (numeric: {held['numeric']}, "
            f"text: {held['category']}); {said}")


def _grouped(entries: dict[str, dict | None], max_categories: int, sep: str) -> str:
    """Who sent a column how, each way said once: "every site: dropped (...)", or "a, b: ...; c: ..."."""
    ways: dict[str, list[str]] = {}
    for cid, e in entries.items():
        ways.setdefault(_sent_as(e, max_categories), []).append(cid)
    if len(ways) == 1 and len(entries) > 1:
        return f"every site: {next(iter(ways))}"
    return sep.join(f"{', '.join(sites)}: {way}" for way, sites in ways.items())


def _numeric_stats(agree: list[dict]) -> tuple[str | None, dict]:
    """Pooled mean and population standard deviation of the agreeing sites: from each site's mean and variance,
    weighted by its count (no sum of squares of all the sites, which could overflow)."""
    parts = [e for e in agree if e["count"] > 0]
    n = sum(e["count"] for e in parts)
    if n == 0:
        return "no values at any site", {}
    means = [e["sum"] / e["count"] for e in parts]
    weights = [e["count"] / n for e in parts]
    mu = math.fsum(w * m for w, m in zip(weights, means))
    var = math.fsum(w * (max(e["sum_sq"] / e["count"] - m * m, 0.0) + (m - mu) ** 2)
                    for w, m, e in zip(weights, means, parts))
    sd = math.sqrt(var)
    return None, {"mean": mu, "scale": sd if sd > 1e-12 * max(1.0, abs(mu)) else 1.0,
                  "describe": f"numeric: mean {mu:.4g}, std {sd:.4g} over {n} values"}


def _category_stats(agree: list[dict], max_categories: int) -> tuple[str | None, dict]:
    """The one-hot values of a text column: those the agreeing sites name, the most frequent when too many."""
    counts: dict[str, int] = {}
    for e in agree:
        for value, k in e["values"].items():
            counts[value] = counts.get(value, 0) + k
    rows = sum(e["other"] + sum(e["values"].values()) + e["missing"] for e in agree)
    if not counts:
        return "every value is rarer than the minimum category count at each site", {}
    cats = sorted(counts)
    note = ""
    if len(cats) > max_categories:
        top = sorted(counts, key=lambda v: (-counts[v], v))[:max_categories]
        note = (f", the {max_categories} most frequent of {len(cats)} values (the other "
                f"{len(cats) - max_categories} all-zero)")
        cats = sorted(top)
    pooled = sum(e["other"] for e in agree)
    if pooled:
        note += f", {pooled} rows of rare values pooled as '{OTHER}' (all-zero)"
    return None, {"categories": cats, "share": {c: counts[c] / max(rows, 1) for c in cats},
                  "describe": f"one-hot: {len(cats)} values ({', '.join(cats)}){note}"}


def _normal_labels(summaries: dict[str, dict], sites: list[str]) -> dict[tuple[str, Any], Any]:
    """Each raw label of the sites -> the label the task uses ("1", 1.0 and 1 agree), from Python values alone."""
    raw = list(dict.fromkeys((type(p[0]).__name__, p[0]) for cid in sites for p in summaries[cid]["labels"]))
    normal = normalize_labels(np.array([v for _, v in raw], dtype=object)).tolist() if raw else []
    return dict(zip(raw, normal))


def _label_overflow(summaries: dict[str, dict], sites: list[str], max_classes: int) -> tuple[str, str] | None:
    """The first site, the larger sites first, whose labels would take the classes beyond ``max_classes``."""
    lookup = _normal_labels(summaries, sites)
    union: set = set()
    for cid in sorted(sites, key=lambda c: (-summaries[c]["rows"], c)):
        union |= {lookup[(type(p[0]).__name__, p[0])] for p in summaries[cid]["labels"]}
        if len(union) > max_classes:
            return cid, (f"with its labels the sites would hold {len(union)} classes, more than a task may have "
                         f"({max_classes})")
    return None


def _labels(summaries: dict[str, dict], sites: list[str]) -> tuple[list, list[dict], dict]:
    """The union of the labels (at least two), each site's class balance, and the pooled counts."""
    lookup = _normal_labels(summaries, sites)
    if not lookup:
        raise DataError("the sites hold no labelled rows")
    totals: dict = {}
    site_rows = []
    for cid in sites:
        counts: dict = {}
        for value, n in summaries[cid]["labels"]:
            label = lookup[(type(value).__name__, value)]
            counts[label] = counts.get(label, 0) + n
            totals[label] = totals.get(label, 0) + n
        report = summaries[cid].get("report") or {}
        site_rows.append({"client_id": cid, "rows": summaries[cid]["rows"], "n_classes": len(counts),
                          "class_counts": {str(k): v for k, v in sorted(counts.items())},
                          "notes": list(report.get("notes", [])) + [f"its report was left out: {why}" for why in
                                                                      [summaries[cid].get("report_dropped")] if why]})
    classes = sorted(totals)
    if len(classes) < 2:
        raise DataError(f"together the sites hold only one class ({classes[0]!r}); the task needs at least two")
    return classes, site_rows, {str(k): v for k, v in sorted(totals.items())}


def columns_problem(summary: dict, columns: dict[str, str]) -> str | None:
    """Why a site that joins after the task was built cannot build its features, naming the columns; or None.

    Columns it has beyond the task's are ignored; a column the task uses must
    be there. One it holds as another kind (or dropped) it builds as well as
    it can, as a site of the first cohort does (``column_disagreements``).
    """
    have = {c["name"] for c in summary["columns"]}
    lacking = [c for c in columns if c not in have]
    if not lacking:
        return None
    extra = sorted(have - set(columns))
    shown = ", ".join(extra[:10]) + (f" and {len(extra) - 10} more" if len(extra) > 10 else "")
    tail = f" (its other columns {shown} are ignored)" if extra else ""
    return f"the data's columns differ from the task's: missing column(s) {', '.join(lacking)}{tail}"


def column_disagreements(summary: dict, columns: dict[str, str], max_categories: int = MAX_CATEGORIES) -> list[str]:
    """The task's columns a site holds otherwise than the task (dropped, the other kind), in words."""
    have = {c["name"]: c for c in summary["columns"]}
    return [f"{col} (sent {_sent_as(have[col], max_categories)}; the task: {KIND_WORDS[kind]})"
            for col, kind in columns.items() if col in have and _vote(have[col], max_categories) != kind]


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
    lines += [f"  left out: {d.get('client_id')} ({d.get('code')}): {d.get('reason')}"
              for d in (report.get("left_out") or [])[:max_sites]]
    lines += [f"  {d.get('site')} {d.get('sentence')}" for d in (report.get("disagreements") or [])[:max_sites]]
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
