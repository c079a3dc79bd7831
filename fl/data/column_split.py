"""The natural split: one client per value of a column (a hospital, a region, a store, a device).

Cross-silo benchmarks split the rows where they were collected (FLamby's
natural splits, covertype by wilderness area), and a CSV often says where in
one column. The groups are that column's distinct values in a stable order
(numbers by value, text alphabetically, missing values last as one group of
their own, ``missing``), so a client told "partition i of N" on another
machine rebuilds the same site. The column itself is never a feature: the
site a row comes from says nothing a model could use on a new site.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fl.data.errors import DataError

MIN_GROUPS, MAX_GROUPS = 2, 50
MISSING_GROUP = "missing"
SPLIT_REASON = "the split column: one client per value"  # why the data report leaves it out of the features
SITE_WORDS = ("site", "hospital", "clinic", "center", "centre", "region", "area", "store", "shop", "device",
              "country", "state", "city", "location", "island", "source", "silo", "client")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
MAX_ID = 64


@dataclass
class ColumnGroups:
    """Which group each row is in (``codes``, an index into ``values``), the values and the client ids."""

    column: str
    codes: np.ndarray
    values: list[str]
    names: list[str]


def _is_missing(v: object) -> bool:
    return v is None or (not isinstance(v, str) and bool(pd.isna(v))) or (isinstance(v, str) and not v.strip())


def _display(v: object) -> str:
    """A value as its client is named: 3.0 reads "3", text is stripped."""
    if isinstance(v, (float, np.floating)) and math.isfinite(v) and float(v).is_integer():
        return str(int(v))
    return str(v).strip()


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _ordered(values: set[str]) -> list[str]:
    """Numbers by value when every value is one (2 before 10), else alphabetically (case aside)."""
    if all(_number(v) is not None for v in values):
        return sorted(values, key=lambda v: (_number(v), v))
    return sorted(values, key=lambda v: (v.casefold(), v))


def _values(s: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Each row's group (an index into the values; -1 when missing) and the distinct values in client order.

    Works on the column's unique values (pandas' factorize), so a long file costs one pass; a column with
    far more than MAX_GROUPS distinct values is not spelled out (its count is all anyone needs).
    """
    codes, uniques = pd.factorize(s, use_na_sentinel=True)
    if len(uniques) > 4 * MAX_GROUPS:
        return codes, [str(i) for i in range(len(uniques))]
    shown = [None if _is_missing(v) else _display(v) for v in uniques.tolist()]
    distinct = _ordered({v for v in shown if v is not None})
    index = {v: i for i, v in enumerate(distinct)}
    lookup = np.array([index[v] if v is not None else -1 for v in shown] + [-1], dtype=np.int64)
    return lookup[codes], distinct  # codes of -1 (NaN) pick the trailing -1


def group_count(s: pd.Series) -> int:
    """How many clients splitting by this column makes (its missing values are one more group)."""
    rows, distinct = _values(s)
    return len(distinct) + bool((rows < 0).any())


def site_ids(values: list[str]) -> list[str]:
    """Client ids for the values: letters, digits, ``_ . -`` only (``North East`` -> ``North_East``), unique."""
    out: list[str] = []
    taken: set[str] = set()
    for value in values:
        text = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode()
        base = _UNSAFE.sub("_", text).strip("_")[:MAX_ID]
        if not base.strip("."):
            base = "site"
        name, k = base, 2
        while name in taken:
            suffix = f"_{k}"
            name, k = base[:MAX_ID - len(suffix)] + suffix, k + 1
        taken.add(name)
        out.append(name)
    return out


def split_candidates(frame: pd.DataFrame, exclude: tuple[str, ...] = ()) -> dict[str, int]:
    """Columns a run can be split by (2 to 50 groups), with their group counts, in the file's order."""
    counts = {str(c): group_count(frame[c]) for c in frame.columns if str(c) not in exclude}
    return {c: n for c, n in counts.items() if MIN_GROUPS <= n <= MAX_GROUPS}


def guess_split_column(candidates: dict[str, int]) -> str | None:
    """The candidate named like a site (hospital, region, ...), else the first one."""
    for name in candidates:
        if any(word in name.lower() for word in SITE_WORDS):
            return name
    return next(iter(candidates), None)


def column_groups(frame: pd.DataFrame, column: str) -> ColumnGroups:
    """The groups of ``column``; a DataError (one sentence) when it is absent or has too few or many values."""
    column = column.strip()
    if column not in frame.columns:
        usable = ", ".join(repr(c) for c in split_candidates(frame)) or "none"
        raise DataError(f"The data has no column {column!r} to split by; columns with {MIN_GROUPS} to "
                        f"{MAX_GROUPS} values: {usable}.")
    rows, distinct = _values(frame[column])
    values = distinct + ([MISSING_GROUP] if (rows < 0).any() else [])
    if len(values) < MIN_GROUPS:
        only = repr(values[0]) if values else "none"
        raise DataError(f"The split column {column!r} has only one value ({only}); splitting by a column needs "
                        f"{MIN_GROUPS} to {MAX_GROUPS}: choose another column.")
    if len(values) > MAX_GROUPS:
        raise DataError(f"The split column {column!r} has {len(values)} distinct values; splitting by a column "
                        f"makes one client per value and needs {MIN_GROUPS} to {MAX_GROUPS}: choose another column.")
    codes = np.where(rows < 0, len(distinct), rows).astype(np.int64)
    return ColumnGroups(column, codes, values, site_ids(values))
