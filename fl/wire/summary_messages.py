"""The data-summary messages of protocol v1 (an extension negotiated in ``hello``), and their checks.

A server without data of its own cannot know the feature columns, their
scaling or the label set; it asks each client for a summary of its data
(``summarize``) and builds the task from what they say (``summary``: typed
JSON, counts and sums, never rows). A client offers this by listing
``"summary"`` in ``hello.features``; docs/protocol.md, "Data summaries",
is the contract. Kept apart from messages.py to keep both readable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from fl.wire.fields import NamedArrays, Frame, _check_type, _dict, _fail, _float, _int, _str, json_safe

SUMMARY_FEATURE = "summary"  # the capability a client lists in hello.features
MAX_SUMMARY_COLUMNS = 100_000
MAX_VALUES_PER_COLUMN = 1_000
MAX_LABELS = 10_000
COLUMN_KINDS = ("numeric", "category", "dropped")


@dataclass
class Summarize:
    """S→C, between ``hello`` and ``welcome``: summarise your data for the task the server will build.

    ``target`` names the label column (a client reading a CSV drops it from
    its features); a text value held by fewer than ``min_category_count``
    rows is pooled into ``other``, so a summary never names a rare value.
    """

    TYPE: ClassVar[str] = "summarize"
    min_category_count: int
    target: str | None = None
    local_test_size: float = 0.0  # the share the client will hold out: its column statistics leave those rows out

    def to_frame(self) -> tuple[dict, NamedArrays, bytes | None]:
        header = {"type": self.TYPE, "target": self.target, "min_category_count": self.min_category_count}
        if self.local_test_size:
            header["local_test_size"] = self.local_test_size
        return header, [], None

    @classmethod
    def from_frame(cls, frame: Frame) -> Summarize:
        """Validate an optional target string, min_category_count >= 1 and local_test_size in [0, 1)."""
        h = _check_type(frame, cls)
        share = _float(h, "local_test_size", cls.TYPE) if h.get("local_test_size") is not None else 0.0
        if not 0.0 <= share < 1.0:
            _fail(cls.TYPE, "'local_test_size' must be at least 0 and below 1")
        return cls(min_category_count=_int(h, "min_category_count", cls.TYPE, 1),
                   target=_str(h, "target", cls.TYPE, optional=True), local_test_size=share)


@dataclass
class Summary:
    """C→S: rows, per-column statistics and label counts of the client's data (docs/protocol.md)."""

    TYPE: ClassVar[str] = "summary"
    rows: int
    labels: list[list]  # [label, count] pairs: a label is a string or an integer
    columns: list[dict]
    report: dict = field(default_factory=dict)  # the site's own notes (columns excluded, leaks): shown, never used

    def to_frame(self) -> tuple[dict, NamedArrays, bytes | None]:
        header = {"type": self.TYPE, "rows": self.rows, "labels": json_safe(self.labels),
                  "columns": json_safe(self.columns)}
        if self.report:
            header["report"] = json_safe(self.report)
        return header, [], None

    @classmethod
    def from_frame(cls, frame: Frame) -> Summary:
        """Validate every field: counts are integers >= 0, sums finite, names unique, kinds known."""
        h = _check_type(frame, cls)
        t = cls.TYPE
        rows = _int(h, "rows", t, 0)
        labels = h.get("labels")
        if not isinstance(labels, list) or len(labels) > MAX_LABELS:
            _fail(t, f"'labels' must be a list of at most {MAX_LABELS} [label, count] pairs")
        for pair in labels:
            if not (isinstance(pair, list) and len(pair) == 2 and type(pair[0]) in (str, int)
                    and type(pair[1]) is int and pair[1] >= 1):
                _fail(t, f"each label must be [string or integer, count >= 1], got {pair!r}")
        if len({(type(p[0]).__name__, p[0]) for p in labels}) != len(labels):
            _fail(t, "a label is listed twice")
        columns = h.get("columns")
        if not isinstance(columns, list) or len(columns) > MAX_SUMMARY_COLUMNS:
            _fail(t, f"'columns' must be a list of at most {MAX_SUMMARY_COLUMNS} objects")
        names = [_column(c, t) for c in columns]
        if len(set(names)) != len(names):
            _fail(t, "a column is listed twice")
        return cls(rows=rows, labels=labels, columns=columns, report=_dict(h, "report", t, optional=True) or {})


def _column(c: Any, t: str) -> str:
    """Check one column entry; its name."""
    if not isinstance(c, dict):
        _fail(t, "each column must be a JSON object")
    name = _str(c, "name", t + " column")
    kind = c.get("kind")
    if kind not in COLUMN_KINDS:
        _fail(t, f"column {name!r}: 'kind' must be one of {', '.join(COLUMN_KINDS)}, got {kind!r}")
    _int(c, "missing", f"{t} column {name!r}", 0)
    if kind == "numeric":
        _int(c, "count", f"{t} column {name!r}", 0)
        for key in ("sum", "sum_sq", "min", "max"):
            value = c.get(key)
            if value is None and key in ("min", "max") and c["count"] == 0:
                continue
            if type(value) not in (int, float) or not math.isfinite(value):
                _fail(t, f"column {name!r}: {key!r} must be a finite number, got {value!r}")
    elif kind == "category":
        values = c.get("values")
        if not isinstance(values, dict) or len(values) > MAX_VALUES_PER_COLUMN:
            _fail(t, f"column {name!r}: 'values' must be an object of at most {MAX_VALUES_PER_COLUMN} counts")
        if any(type(n) is not int or n < 0 for n in values.values()):
            _fail(t, f"column {name!r}: every value count must be an integer >= 0")
        _int(c, "other", f"{t} column {name!r}", 0)
    else:
        _str(c, "reason", f"{t} column {name!r}", optional=True)
    return name
