"""Checks of one site's data summary before a coordinator admits it: pure functions that return a sentence.

A coordinator without data learns a site's data only from its summary, and
builds everyone's task from the summaries (columns, scaler, classes). So each
number must be one an honest client could have sent (``summarize_data``):
the counts are exact integers and must add up, the sums must be those of real
numbers between the stated minimum and maximum, and every text that reaches
the task, the data report or a terminal must be short printable UTF-8. The
float checks allow for rounding only (``SLACK``, relative); an honest summary
of any frame passes them all (tests/test_summary_checks.py draws random ones).

docs/protocol.md, "Data summaries", lists the same rules for other clients.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fl.data.csvdata import MAX_CATEGORIES
from fl.data.datasets import training_row_count
from fl.data.labels import MAX_CLASSES, normalize_labels
from fl.data.errors import DataError

MAX_TEXT = 256  # characters of a label, a column name or a category value
MAX_REPORT_ITEMS = 200  # entries of each list of a site's report
MAX_REPORT_TEXT = 500  # characters of each of its strings
MAX_COUNT = 2**53  # a count above it is not exact in a JSON double (fl.wire.fields.MAX_EXACT_INT)
MAX_VALUE = 1e150  # |min|, |max| of a numeric column: beyond, x² would not stay finite over many rows
SLACK = 1e-9  # relative rounding allowed in the float checks (sums of float64 over up to 2^53 values)
REPORT_KEYS = ("excluded", "leak_warnings", "notes")


def show(value: Any, limit: int = 40) -> str:
    """A piece of a hostile string fit to quote in a refusal: ASCII only (escapes, lone surrogates included)."""
    if type(value) is int and value.bit_length() > 64:
        return f"<an integer of {value.bit_length()} bits>"  # repr() of a huge one is slow, then refused
    text = value if isinstance(value, str) else repr(value)
    return ascii(text[:limit]) + ("..." if len(text) > limit else "")


def text_problem(value: Any, what: str, max_chars: int = MAX_TEXT, allow_empty: bool = False) -> str | None:
    """Why ``value`` is not a usable label, name or value: a string of at most ``max_chars`` printable characters
    that UTF-8 can encode (a lone surrogate cannot be sent on in ``welcome``); or None."""
    if not isinstance(value, str):
        return f"{what} must be text, got {type(value).__name__}"
    if not value and not allow_empty:
        return f"{what} is empty"
    if len(value) > max_chars:
        return f"{what} {show(value)} has {len(value)} characters (at most {max_chars})"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return f"{what} {show(value)} holds a lone surrogate, which UTF-8 cannot encode"
    if not value.isprintable():
        return f"{what} {show(value)} holds a character that is not printable (a control character, say)"
    return None


def _count(value: Any) -> bool:
    return type(value) is int and 0 <= value <= MAX_COUNT


def _number(value: Any) -> bool:
    """A finite JSON number that a float holds (an integer of 10^400 is not: float() would overflow)."""
    if type(value) is int:
        return value.bit_length() <= 1000
    return type(value) is float and math.isfinite(value)


def summary_problem(summary: dict, *, n_samples: int | None, local_test_size: float, min_category_count: int,
                    max_classes: int = MAX_CLASSES, max_values: int = MAX_CATEGORIES) -> str | None:
    """Why a site's summary (``rows``, ``labels``, ``columns``) cannot be true of any data, or None.

    ``n_samples`` is the site's ``hello.n_samples``; ``local_test_size`` and
    ``min_category_count`` are what ``summarize`` asked for. The invariants:
    1 <= rows <= n_samples; at most ``max_classes`` labels, each short
    printable text or an integer, whose counts add up to rows and that stay
    distinct once normalised; for every column, its counted cells plus its
    missing ones are the rows the site trains on,
    ``training_row_count(rows, local_test_size)``; see ``column_problem``.
    """
    if not isinstance(summary, dict):
        return "the summary must be an object"
    rows = summary.get("rows")
    if not _count(rows) or rows < 1:
        return f"rows must be a whole number from 1 to 2^53, got {show(rows)}"
    if n_samples is not None and rows > n_samples:
        return f"the summary counts {rows} rows but hello said the site holds {n_samples}"
    problem = labels_problem(summary.get("labels"), rows, max_classes)
    if problem:
        return problem
    columns = summary.get("columns")
    if not isinstance(columns, list):
        return "columns must be a list"
    train = training_row_count(rows, local_test_size)
    names: set[str] = set()
    for c in columns:
        problem = column_problem(c, train, min_category_count, max_values)
        if problem:
            return problem
        if c["name"] in names:
            return f"column {show(c['name'])} is listed twice"
        names.add(c["name"])
    return None


def labels_problem(labels: Any, rows: int, max_classes: int = MAX_CLASSES) -> str | None:
    """Why the ``[label, count]`` pairs cannot be a site's labels over its ``rows`` rows, or None."""
    if not isinstance(labels, list):
        return "labels must be a list of [label, count] pairs"
    if len(labels) > max_classes:
        return (f"the summary names {len(labels)} labels; a task has at most {max_classes} classes "
                "(as many as a CSV target may have)")
    total = 0
    for pair in labels:
        if not (isinstance(pair, list) and len(pair) == 2):
            return f"each label must be a [label, count] pair, got {show(pair)}"
        label, n = pair
        if type(label) is int:
            if abs(label) > MAX_COUNT:
                return f"the integer label {show(label)} is beyond +-2^53"
        else:
            problem = text_problem(label, "a label")
            if problem:
                return problem
        if not _count(n) or n < 1:
            return f"label {show(label)} has count {show(n)}, not a whole number of at least 1"
        total += n
    if total != rows:
        return f"the label counts add up to {total} rows, not to the {rows} rows the summary states"
    raw = [p[0] for p in labels]
    try:
        normal = normalize_labels(np.array(raw, dtype=object)).tolist() if raw else []
    except DataError as exc:
        return f"labels: {exc}"
    if len(set(normal)) != len(normal):
        seen: dict = {}
        for r, v in zip(raw, normal):
            if v in seen:
                return f"labels {show(seen[v])} and {show(r)} are the same label once normalised"
            seen[v] = r
    return None


def column_problem(c: Any, train: int, min_category_count: int, max_values: int = MAX_CATEGORIES) -> str | None:
    """Why one column entry cannot be a site's statistics over its ``train`` training rows, or None.

    Numeric: count + missing = train; no values means sums of 0 and no
    min/max; else min <= mean <= max, Σx² ≥ (Σx)²/count (a variance of at
    least 0) and at most what min and max allow (Bhatia–Davis: the variance
    is at most (max − mean)(mean − min)). Category: each named value held by
    at least ``min_category_count`` rows, at most ``max_values`` of them (an
    honest site's plan drops a text column of more distinct values), and
    named + other + missing = train. Dropped: missing <= train.
    """
    if not isinstance(c, dict):
        return "each column must be an object"
    name = c.get("name")
    problem = text_problem(name, "a column name")
    if problem:
        return problem
    col = f"column {show(name)}"
    missing, kind = c.get("missing"), c.get("kind")
    if not _count(missing):
        return f"{col}: missing must be a whole number from 0 to 2^53, got {show(missing)}"
    if kind == "numeric":
        return _numeric_problem(c, col, train, missing)
    if kind == "category":
        values, other = c.get("values"), c.get("other")
        if not isinstance(values, dict):
            return f"{col}: values must be an object of value counts"
        if len(values) > max_values:
            return (f"{col}: {len(values)} named values; a site names at most {max_values} (its own plan does not "
                    "one-hot encode a text column of more)")
        if not _count(other):
            return f"{col}: other must be a whole number from 0 to 2^53, got {show(other)}"
        named = 0
        for value, n in values.items():
            problem = text_problem(value, f"{col}: the value", allow_empty=True)
            if problem:
                return problem
            if not _count(n) or n < min_category_count:
                return (f"{col}: value {show(value)} is held by {show(n)} rows; a named value needs at least "
                        f"{min_category_count} (rarer ones are counted in other)")
            named += n
        if named + other + missing != train:
            return (f"{col}: its values ({named}), other ({other}) and missing ({missing}) cells add up to "
                    f"{named + other + missing}, not to the {train} rows the site trains on")
        return None
    if kind == "dropped":
        if missing > train:
            return f"{col}: {missing} missing cells, more than the {train} rows the site trains on"
        reason = c.get("reason")
        if reason is not None:
            return text_problem(reason, f"{col}: the reason", max_chars=MAX_REPORT_TEXT, allow_empty=True)
        return None
    return f"{col}: kind must be numeric, category or dropped, got {show(kind)}"


def _numeric_problem(c: dict, col: str, train: int, missing: int) -> str | None:
    count, s, sq, lo, hi = (c.get(k) for k in ("count", "sum", "sum_sq", "min", "max"))
    if not _count(count):
        return f"{col}: count must be a whole number from 0 to 2^53, got {show(count)}"
    if count + missing != train:
        return (f"{col}: count {count} + missing {missing} = {count + missing} cells, not the {train} rows "
                "the site trains on")
    if not (_number(s) and _number(sq)):
        return f"{col}: sum and sum_sq must be finite numbers"
    if count == 0:
        if s != 0 or sq != 0 or lo is not None or hi is not None:
            return f"{col}: no values (count 0) but a sum of {s:g}, a sum of squares of {sq:g} or a min or max"
        return None
    if not (_number(lo) and _number(hi)):
        return f"{col}: min and max must be finite numbers when count is above 0"
    s, sq, lo, hi = float(s), float(sq), float(lo), float(hi)
    if max(abs(lo), abs(hi)) > MAX_VALUE:
        return f"{col}: min {lo:g} or max {hi:g} is beyond +-{MAX_VALUE:g}"
    if lo > hi:
        return f"{col}: min {lo:g} is above max {hi:g}"
    if sq < 0:
        return f"{col}: a negative sum of squares ({sq:g})"
    mean, mean_sq = s / count, sq / count
    big = max(abs(lo), abs(hi))
    if not lo - SLACK * big <= mean <= hi + SLACK * big:
        return f"{col}: the mean {mean:g} (sum / count) is outside [min {lo:g}, max {hi:g}]"
    var, slack = mean_sq - mean * mean, SLACK * big * big
    if var < -slack:
        return f"{col}: sum_sq * count < sum^2 (a negative variance, {var:g})"
    if var > (hi - mean) * (mean - lo) + slack:
        return (f"{col}: a variance of {var:g}, more than values between min {lo:g} and max {hi:g} with mean "
                f"{mean:g} can have")
    return None


def clean_report(report: Any) -> tuple[dict, str | None]:
    """A site's report as the data report may show it: ``excluded`` (list of {column, reason}), ``leak_warnings``
    and ``notes`` (lists of strings), each list of at most MAX_REPORT_ITEMS short printable strings; other keys
    are ignored. A report that breaks these is dropped whole: ({}, why); the site stays (it is only for people)."""
    if report is None or report == {}:
        return {}, None
    if not isinstance(report, dict):
        return {}, "its report is not an object"
    out: dict[str, list] = {}
    for key in REPORT_KEYS:
        items = report.get(key, [])
        if not isinstance(items, list) or len(items) > MAX_REPORT_ITEMS:
            return {}, f"its report's {key} is not a list of at most {MAX_REPORT_ITEMS} entries"
        kept = []
        for item in items:
            if key == "excluded":
                if not isinstance(item, dict):
                    return {}, "its report's excluded entries must be objects {column, reason}"
                entry = {"column": item.get("column"), "reason": item.get("reason")}
                problem = text_problem(entry["column"], "an excluded column", MAX_TEXT) or \
                    text_problem(entry["reason"], "a reason", MAX_REPORT_TEXT, allow_empty=True)
            else:
                entry = item
                problem = text_problem(item, f"an entry of {key}", MAX_REPORT_TEXT, allow_empty=True)
            if problem:
                return {}, f"its report's {key}: {problem}"
            kept.append(entry)
        out[key] = kept
    return out, None
