"""Labels: normalised, checked, guessed, and binned when a continuous column is the target.

"1", 1.0 and 1 are one label everywhere (server and every client); the
target column is checked (missing labels dropped, one class or a continuous
column refused or flagged); a numeric target can be binned into quantile
classes whose edges the server sends to its clients.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fl.data.errors import DataError

MAX_CLASSES = 100      # a target with more labels is almost surely a continuous column

MAX_GUESS_CLASSES = 20  # guess_target only offers columns with at most this many labels



def text_values(s: pd.Series) -> pd.Series:
    """Category values as stripped text, missing as None, identical on server and clients."""
    return s.map(lambda v: None if pd.isna(v) else str(v).strip()).astype(object)


def _int_like(v: object) -> int | None:
    """The int a label stands for ("1", 1.0, 1), or None when it is not integer-like."""
    if isinstance(v, (bool, np.bool_)):
        return None  # True/False read better as text than as 1/0
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return int(v) if math.isfinite(v) and float(v).is_integer() else None
    if isinstance(v, str):
        s = v.strip()
        try:
            return int(s)
        except ValueError:
            pass
        try:
            f = float(s)
        except ValueError:
            return None
        return int(f) if math.isfinite(f) and f.is_integer() else None
    return None


def normalize_labels(y) -> np.ndarray:
    """Labels as int64 when all are integer-like, else as text, so "1", 1.0 and 1 agree everywhere.

    Text labels come back as an object array whose rows share one Python
    string per label (``text_labels``), never a fixed-width numpy string
    array: that one is as wide as the longest label on every row, so a single
    long label would cost rows × its length × 4 bytes.
    """
    raw = y.to_numpy() if hasattr(y, "to_numpy") else y
    # A list of strings would become a fixed-width array in np.asarray: read it as objects.
    arr = raw if isinstance(raw, np.ndarray) else np.array(list(raw), dtype=object)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr.ravel()
    if arr.ndim != 1:
        raise DataError(f"Labels must be one column, got an array of shape {arr.shape}.")
    if arr.size == 0:
        return np.empty(0, dtype=np.int64)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    if arr.dtype.kind == "f":
        if np.isnan(arr).any():
            raise DataError("Some labels are missing; drop those rows or fill in their labels.")
        if np.isfinite(arr).all() and (arr == np.round(arr)).all() and np.abs(arr).max() < 2 ** 62:
            return arr.astype(np.int64)
        return text_labels(str(v) for v in arr.tolist())
    values = [v.decode() if isinstance(v, bytes) else v for v in arr.tolist()]
    if any(v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)) for v in values):
        raise DataError("Some labels are missing; drop those rows or fill in their labels.")
    ints = [_int_like(v) for v in values]
    if all(i is not None and abs(i) < 2 ** 62 for i in ints):
        return np.array(ints, dtype=np.int64)
    return text_labels(str(v).strip() for v in values)


def text_labels(values: Iterable[str]) -> np.ndarray:
    """An object array of the given strings in which equal labels are one Python string: 8 bytes a row and
    one string per distinct label, whatever the longest label (a fixed-width array pays for it on every row)."""
    shared: dict[str, str] = {}
    items = [shared.setdefault(v, v) for v in values]
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


def label_counts(y: np.ndarray) -> tuple[list, list[int]]:
    """The distinct labels of ``y`` (sorted, plain Python values) and their row counts, by hashing: sorting an
    object array of strings (np.unique) compares Python strings and is ten times slower."""
    counts = pd.Series(np.asarray(y)).value_counts(sort=False)
    pairs = sorted(((_plain(v), int(n)) for v, n in counts.items()), key=lambda p: p[0])
    return [v for v, _ in pairs], [n for _, n in pairs]


def _plain(value: object) -> object:
    """A numpy scalar as the Python value it holds (a label shown or sent)."""
    return value.item() if isinstance(value, np.generic) else value


def _numbers(values: pd.Series) -> np.ndarray | None:
    """The non-missing values as float64, or None when some of them are not numbers."""
    s = pd.Series(values).dropna()
    if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
        return s.to_numpy(dtype=np.float64)
    nums = pd.to_numeric(s, errors="coerce")
    return None if nums.isna().any() else nums.to_numpy(dtype=np.float64)


def looks_continuous(values: pd.Series) -> bool:
    """Numeric with more than 20 distinct values, or non-integer with more than 10: a measurement, not a label."""
    nums = _numbers(values)
    if nums is None or pd.api.types.is_bool_dtype(pd.Series(values)):
        return False
    distinct = len(np.unique(nums))
    return distinct > 20 or (distinct > 10 and bool((nums != np.round(nums)).any()))


def _name(values: pd.Series) -> str:
    return str(values.name) if getattr(values, "name", None) is not None else "target"


def quantile_edges(values: pd.Series, n_bins: int) -> list[float]:
    """Inner edges of n_bins equal-sized classes; an edge at the maximum moves below it so no class is empty."""
    nums = _numbers(values)
    if nums is None:
        raise DataError(f"Only a numeric target can be binned; {_name(values)!r} holds text.")
    if len(nums) == 0 or nums.min() == nums.max():
        raise DataError(f"{_name(values)!r} has a single value, so it cannot be binned into classes; "
                        "choose another target.")
    top, below_top = nums.max(), nums[nums < nums.max()].max()
    qs = np.quantile(nums, [i / n_bins for i in range(1, n_bins)])
    return sorted({float(below_top if q >= top else q) for q in qs})


def apply_bins(values, edges: list[float]) -> np.ndarray:
    """Bin index 0..len(edges) of each value, right-closed: value <= edges[0] is 0, above edges[-1] is the last."""
    nums = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=np.float64)
    if np.isnan(nums).any():
        raise DataError("Some target values are missing or not numbers, so they cannot be binned; "
                        "drop those rows or fill in their values.")
    return np.searchsorted(np.asarray(edges, dtype=np.float64), nums, side="left").astype(np.int64)


def bin_labels_note(column: str, edges: list[float]) -> str:
    """'age' binned into 4 quantile classes: 0 = age ≤ 29, 1 = 29 < age ≤ 41, …, 3 = age > 55."""
    parts = [f"0 = {column} ≤ {edges[0]:g}"]
    parts += [f"{i} = {lo:g} < {column} ≤ {hi:g}" for i, (lo, hi) in enumerate(zip(edges, edges[1:]), start=1)]
    parts.append(f"{len(edges)} = {column} > {edges[-1]:g}")
    return f"'{column}' binned into {len(edges) + 1} quantile classes: " + ", ".join(parts)


def _check_bins(target_bins: int) -> None:
    if type(target_bins) is bool or not isinstance(target_bins, (int, np.integer)) \
            or not (target_bins == 0 or 2 <= target_bins <= MAX_CLASSES):
        raise DataError(f"The number of target bins must be 0 (no binning) or a whole number from 2 to "
                        f"{MAX_CLASSES}, got {target_bins!r}.")


@dataclass
class TargetSplit:
    """The target taken out of a frame: features, labels (bin indices when binned), and what happened."""

    features: pd.DataFrame
    y: np.ndarray
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    edges: list[float] | None = None
    raw: pd.Series | None = None  # the target's own values of the kept rows (a client bins them as the server says)


def target_rows(df: pd.DataFrame, target: str | None) -> tuple[str, pd.Series]:
    """The checked target name and the mask of rows that have a label."""
    listing = ", ".join(repr(c) for c in df.columns)
    target = target.strip() if isinstance(target, str) else target
    if not target:
        raise DataError(f"Choose the target (label) column; the CSV has columns {listing}.")
    if target not in df.columns:
        raise DataError(f"The CSV has no column {target!r}; choose the target from {listing}.")
    return target, df[target].notna() & (df[target].astype(str).str.strip() != "")


def _rare_classes(y: np.ndarray) -> list[str]:
    labels, counts = label_counts(y)
    rare = [repr(v) for v, n in zip(labels, counts) if n < 2]
    if not rare:
        return []
    shown = ", ".join(rare[:5]) + (", …" if len(rare) > 5 else "")
    if len(rare) == 1:
        return [f"The class {shown} has only 1 row, too few to be in both the training and the test rows; "
                "merge it into another class or drop that row."]
    return [f"{len(rare)} classes have only 1 row ({shown}), too few to be in both the training and the test rows; "
            "merge them into other classes or drop those rows."]


def prepare_target(df: pd.DataFrame, target: str | None, target_bins: int = 0,
                   target_edges: list[float] | None = None, max_classes: int | None = MAX_CLASSES,
                   min_classes: int = 2) -> TargetSplit:
    """Check the target, drop rows without a label, bin it when asked; every refusal is a DataError.

    target_edges (the server's) bin a client's labels exactly like the server's, whatever its own quantiles.
    ``max_classes=None`` (a client, whose classes the server's task decides) skips the too-many-classes check;
    ``min_classes=1`` lets a client hold a single class (only the union of the sites' labels needs two).
    """
    _check_bins(target_bins)
    target, keep = target_rows(df, target)
    notes, warnings = [], []
    if not keep.all():
        notes.append(f"dropped {int((~keep).sum())} rows with a missing target")
        df = df.loc[keep]
    if len(df) == 0:
        raise DataError(f"Every row has an empty target {target!r}; choose a column that holds the labels.")
    values, edges = df[target], None
    if target_bins or target_edges is not None:
        if _numbers(values) is None:
            raise DataError(f"Only a numeric target can be binned; {target!r} holds text.")
        edges = [float(e) for e in target_edges] if target_edges is not None else quantile_edges(values, target_bins)
        y = apply_bins(values, edges)
        notes.append(bin_labels_note(target, edges))
        if target_edges is None and len(edges) + 1 < target_bins:
            notes.append(f"'{target}' repeats values too often for {target_bins} equal-sized classes, "
                         f"so it has {len(edges) + 1}")
    else:
        y = normalize_labels(values)
        n_classes = len(label_counts(y)[0])
        if n_classes < min_classes:
            raise DataError(f"The target column {target!r} has only one class ({_plain(y[0])!r}); "
                            "choose a column with at least two different labels.")
        numeric = _numbers(values) is not None
        if max_classes is not None and n_classes > max_classes:
            advice = "bin it into quantile classes («target_bins») or choose" if numeric else "choose"
            raise DataError(f"The target column {target!r} has {n_classes} distinct values, which looks continuous; "
                            f"{advice} a column of class labels (at most {MAX_CLASSES}).")
        if looks_continuous(values):
            warnings.append(f"'{target}' has {n_classes} distinct numeric values and looks continuous; each value "
                            "becomes its own class. Bin it into quantile classes instead («target_bins»).")
    warnings += _rare_classes(y)
    return TargetSplit(df.drop(columns=[target]).reset_index(drop=True), y, notes, warnings, edges,
                       values.reset_index(drop=True))


def split_target(df: pd.DataFrame, target: str | None,
                 target_bins: int = 0) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    """Check the target column, drop rows without a label, return (features frame, y, notes)."""
    split = prepare_target(df, target, target_bins)
    return split.features, split.y, split.notes + split.warnings
