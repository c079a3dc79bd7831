"""Columns that cannot fake a result: row numbers, IDs and constants excluded, one-column leaks flagged.

A CSV exported with its row number (1, 2, 3, ... in a file sorted by label)
lets a model read the label off the row number: measured, accuracy 0.98
instead of 0.83, and nothing warned. So the one column plan that the
features, the report and the clients' column names all come from
(``fl.data.csvdata.plan_features``) asks ``exclusion_reason`` about every
column and leaves out row numbers, IDs and constants unless the user keeps
them. A column that alone predicts the label almost perfectly may be a
genuinely strong feature, so it is flagged (``leak_score``), not excluded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

MIN_ROWS = 20          # uniqueness and near-perfect scores say nothing about fewer rows
LEAK_SCORE = 0.99      # a one-column split this accurate is flagged as a likely leak
LEAK_SAMPLE = 20_000   # rows the leak check looks at (a seeded sample of longer tables)
ID_SHARE = 0.5         # a column named like an ID is one when at least this share of its rows differ

_INDEX_NAMES = {"id", "ids", "index", "idx", "rownames", "rowname", "row", "rows", "rowid", "rownum",
                "rownumber", "rowno", "rowindex", "obs", "uuid", "guid"}
_ID_TOKENS = {"id", "ids", "uuid", "guid", "idx"}
_ARTEFACT = re.compile(r"unnamed:\s*\d+|\.\.\.\d+")  # pandas' and readr's names for an unnamed index


def parse_columns(value: str | Iterable[str] | None) -> list[str]:
    """Column names from "a, b" (the command line's --keep-columns) or a list; empty names dropped."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    return [v.strip() for v in items if v.strip()]


def exclusions(exclude: Mapping[str, str] | Iterable[str] | None) -> dict[str, str]:
    """Columns a caller leaves out (the split column, say) with the reason; a plain list gets a generic one."""
    if exclude is None:
        return {}
    if isinstance(exclude, Mapping):
        return {str(c).strip(): str(why) for c, why in exclude.items()}
    return {c: "left out by the run" for c in parse_columns(exclude)}


def _tokens(name: str) -> list[str]:
    """'PatientID' -> patient, id; 'row_id' -> row, id; 'Unnamed: 0' -> unnamed, 0."""
    return [t.lower() for t in re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+", str(name))]


def id_like_name(name: str) -> bool:
    """Named like a row index or an identifier: id, index, rownames, row_id, PatientID, Unnamed: 0, ...1."""
    low = str(name).strip().lower()
    squashed = re.sub(r"[^a-z0-9]", "", low)
    tokens = _tokens(name)
    return (squashed in _INDEX_NAMES or bool(_ARTEFACT.fullmatch(low))
            or bool(tokens and (tokens[-1] in _ID_TOKENS or tokens[0] in _ID_TOKENS)))


def _show(value: Any) -> str:
    """7, 2.5 or 'yes': numbers as numbers, text quoted."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        return repr(str(value))
    return f"{int(value)}" if float(value).is_integer() else f"{float(value):g}"


def _integer_index(values: np.ndarray) -> str | None:
    """Why unique whole numbers are a row number: an arithmetic progression once sorted, or monotonic."""
    if not np.all(np.isfinite(values)) or not np.all(values == np.round(values)):
        return None
    ordered = np.sort(values)
    steps = np.diff(ordered)
    if steps.size and steps.min() > 0 and steps.min() == steps.max():
        order = "" if np.all(np.diff(values) > 0) else ", in another order"
        return (f"a row number: {_show(ordered[0])} to {_show(ordered[-1])} in steps of {_show(steps[0])}, "
                f"one per row{order}")
    moves = np.diff(values)
    if np.all(moves > 0) or np.all(moves < 0):
        way = "rise" if moves[0] > 0 else "fall"
        return f"whole numbers that {way} row by row, one per row: a row number or an ID"
    return None


def exclusion_reason(s: pd.Series, name: str, *, whole_table: bool = True, date: bool = False) -> str | None:
    """Why this feature column cannot be trusted (a row number, an ID, one value), or None to use it.

    A float measurement is unique per row too, so uniqueness alone is not
    enough: a number column must hold whole numbers that form a progression
    (1, 2, 3 or 10, 20, 30, in any order) or rise row by row; a text column
    must differ in every row; otherwise a name like ``id`` or ``Unnamed: 0``
    with mostly distinct values. ``whole_table=False`` (one site's share of
    the data) skips constants: a column may vary across sites and not at one.
    Dates (``date``) grow row by row in a time series and are not row numbers.
    """
    numeric = pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)
    values = s.dropna()
    n, distinct = len(s), int(values.nunique())
    if whole_table and n >= 2 and distinct == 1 and (numeric or len(values) == n):
        extra = f" and {n - len(values)} missing" if len(values) < n else " in every row"
        return f"one value ({_show(values.iloc[0])}){extra}"
    if n < MIN_ROWS or len(values) < n * 0.9:
        return None
    if numeric and not date and len(values) == n and distinct == n:
        reason = _integer_index(pd.to_numeric(values).to_numpy(dtype=np.float64))
        if reason:
            return reason
    if not numeric and not date and len(values) == n and distinct == n:
        return "text that differs in every row: an ID or a name"
    if id_like_name(name) and distinct >= ID_SHARE * n:
        return f"named like an ID or a row index, with {distinct} distinct values in {n} rows"
    return None


def _codes(y: np.ndarray) -> tuple[np.ndarray, int]:
    _, codes = np.unique(np.asarray(y), return_inverse=True)
    return codes.ravel().astype(np.int64), int(codes.max()) + 1 if codes.size else 0


def stump_score(x: np.ndarray, codes: np.ndarray, n_classes: int) -> float:
    """Accuracy of the best one-threshold split of numbers x (a depth-1 tree), each side its majority class."""
    order = np.argsort(x, kind="stable")
    xs, ys = x[order], codes[order]
    cum = np.zeros((len(xs), n_classes), dtype=np.int64)
    cum[np.arange(len(xs)), ys] = 1
    cum = cum.cumsum(axis=0)
    total = cum[-1]
    best = int(total.max())
    cuts = np.nonzero(xs[:-1] != xs[1:])[0]
    if cuts.size:
        left = cum[cuts]
        best = max(best, int((left.max(axis=1) + (total - left).max(axis=1)).max()))
    return best / len(xs)


def category_score(text: pd.Series, codes: np.ndarray) -> float:
    """Accuracy of predicting each value's majority class (missing is one more value)."""
    table = pd.crosstab(text.fillna("\0missing").to_numpy(), codes)
    return float(table.max(axis=1).sum()) / len(codes)


def leak_rows(n: int) -> np.ndarray:
    """The rows the leak check looks at: all, or a seeded sample of LEAK_SAMPLE (the same on every call)."""
    if n <= LEAK_SAMPLE:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, LEAK_SAMPLE, replace=False))


def leak_score(values: np.ndarray | pd.Series, y: np.ndarray, *, category: bool = False) -> float | None:
    """The column's one-feature score when it is a likely leak, else None.

    Likely leak: at least LEAK_SCORE, and at most half the errors of always
    answering the most common class (so a 99.5 % majority flags nothing). A
    text column needs about five rows per value, or chance alone scores high.
    """
    codes, k = _codes(y)
    n = len(codes)
    if n < MIN_ROWS or k < 2:
        return None
    if n > LEAK_SAMPLE:
        rows = leak_rows(n)
        values = values.iloc[rows] if isinstance(values, pd.Series) else values[rows]
        codes, n = codes[rows], len(rows)
    if category:
        text = pd.Series(values).reset_index(drop=True)
        if text.nunique(dropna=False) > n / 5:
            return None
        score = category_score(text, codes)
    else:
        score = stump_score(np.asarray(values, dtype=np.float64), codes, k)
    majority = np.bincount(codes, minlength=k).max() / n
    return round(score, 4) if score >= LEAK_SCORE and (1 - score) <= 0.5 * (1 - majority) else None


@dataclass
class ColumnReport:
    """Columns left out and why, columns kept on request, likely leaks, missing values: for the user and JSON."""

    excluded: list[dict] = field(default_factory=list)   # {"column", "reason"}: excluded or dropped
    leaks: list[dict] = field(default_factory=list)      # {"column", "score"}
    missing: dict[str, int] = field(default_factory=dict)
    kept: list[dict] = field(default_factory=list)       # {"column", "reason"}: would be excluded, kept on request
    notes: list[str] = field(default_factory=list)       # what was excluded or kept, in sentences
    warnings: list[str] = field(default_factory=list)    # the likely leaks, in sentences

    def lines(self) -> list[str]:
        """Every sentence a person should read before trusting the result (the CLI prints them once)."""
        return self.notes + self.warnings

    def to_dict(self) -> dict[str, Any]:
        """For data_report.json."""
        return {"excluded": [dict(e) for e in self.excluded], "leaks": [dict(e) for e in self.leaks],
                "missing": dict(self.missing), "kept": [dict(e) for e in self.kept]}


def exclusion_note(excluded: list[tuple[str, str]]) -> str:
    """excluded 'column_1' (a row number ...) so it cannot fake the result; ... keep it (a «keep_columns» marker:
    fl/runs/words.py renders it as a flag or a page setting)."""
    listed = "; ".join(f"'{c}' ({why})" for c, why in excluded)
    which = ",".join(c for c, _ in excluded)
    one = len(excluded) == 1
    return (f"excluded column{'' if one else 's'} {listed}, so {'it' if one else 'they'} cannot fake the result; "
            f"to use {'it' if one else 'them'} anyway keep {'it' if one else 'them'} "
            f"(«keep_columns={which}»)")


def kept_note(kept: list[tuple[str, str]]) -> str:
    listed = "; ".join(f"'{c}' ({why})" for c, why in kept)
    one = len(kept) == 1
    return (f"kept on request column{'' if one else 's'} {listed}; check the result does not rest on "
            f"{'it' if one else 'them'}")


def leak_warning(column: str, score: float) -> str:
    return (f"'{column}' alone predicts the label for {score:.1%} of the rows (one split on its values): a likely "
            "leak (a copy of the label, or something known only after it); check it before trusting the accuracy")
