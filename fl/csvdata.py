"""CSV files as features and labels, identically on the server and on every client.

Numeric columns are used as they are (median-filled), text columns with few
values are one-hot encoded as "column=value", the target's labels are
normalised so that "1", 1.0 and 1 agree, and a continuous target can be binned
into quantile classes. ``describe_csv`` reports all of it before a run, using
the same column plan as ``frame_to_features``. A client rebuilds its matrix in
the server's column order with ``features_from_frame``. Reading bytes into a
frame lives in ``fl.csvread``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fl.csvread import CsvTable, read_csv_bytes, read_csv_table
from fl.partition import DataError

__all__ = [
    "MAX_CATEGORIES", "MAX_CLASSES", "CsvTable", "read_csv_table", "read_csv_bytes", "normalize_labels",
    "ColumnPlan", "plan_features", "frame_to_features", "TargetSplit", "prepare_target", "split_target",
    "guess_target", "looks_continuous", "quantile_edges", "apply_bins", "bin_labels_note", "CsvReport",
    "describe_csv", "features_from_frame", "load_client_frame", "load_client_csv",
]

MAX_CATEGORIES = 50    # text columns with more distinct values are dropped, not one-hot encoded
MAX_CLASSES = 100      # a target with more labels is almost surely a continuous column
MAX_GUESS_CLASSES = 20  # guess_target only offers columns with at most this many labels
_LABEL_NAMES = ("label", "labels", "target", "class", "outcome", "species", "diagnosis", "category", "type")


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
    """Labels as int64 when all are integer-like, else as str, so "1", 1.0 and 1 agree everywhere."""
    arr = np.asarray(y.to_numpy() if hasattr(y, "to_numpy") else y)
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
        return arr.astype(str)
    values = [v.decode() if isinstance(v, bytes) else v for v in arr.tolist()]
    if any(v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)) for v in values):
        raise DataError("Some labels are missing; drop those rows or fill in their labels.")
    ints = [_int_like(v) for v in values]
    if all(i is not None and abs(i) < 2 ** 62 for i in ints):
        return np.array(ints, dtype=np.int64)
    return np.array([str(v).strip() for v in values], dtype=str)


def _is_numeric(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)


def _text(s: pd.Series) -> pd.Series:
    """Category values as stripped text, missing as None, identical on server and clients."""
    return s.map(lambda v: None if pd.isna(v) else str(v).strip()).astype(object)


def _median_fill(values: pd.Series) -> tuple[np.ndarray, int]:
    col = pd.to_numeric(values, errors="coerce").astype(np.float64).to_numpy(copy=True)
    missing = np.isnan(col)
    if missing.any():
        col[missing] = np.nanmedian(col) if (~missing).any() else 0.0
    return col, int(missing.sum())


@dataclass
class ColumnPlan:
    """What frame_to_features does with one column, so the report and the features cannot disagree."""

    column: str
    kind: str              # "numeric", "category" or "dropped"
    missing: int
    distinct: int
    action: str
    median: float = 0.0
    categories: list[str] = field(default_factory=list)


def plan_features(df: pd.DataFrame) -> list[ColumnPlan]:
    """One plan per column: numeric (median-filled), one-hot category, or dropped (empty or too many values)."""
    plans = []
    for col in df.columns:
        s = df[col]
        missing = int(s.isna().sum())
        cats = [] if _is_numeric(s) else sorted(set(_text(s).dropna()))
        if s.isna().all() or not (cats or _is_numeric(s)):
            plans.append(ColumnPlan(col, "dropped", missing, 0, "dropped: no values"))
        elif _is_numeric(s):
            median = float(np.nanmedian(pd.to_numeric(s, errors="coerce").astype(np.float64)))
            action = f"{missing} missing filled with the median {median:g}" if missing else "used as is"
            plans.append(ColumnPlan(col, "numeric", missing, int(s.nunique()), action, median))
        elif len(cats) > MAX_CATEGORIES:
            plans.append(ColumnPlan(col, "dropped", missing, len(cats), f"dropped: {len(cats)} distinct text values"))
        else:
            action = f"one-hot: {len(cats)} values" + (f", {missing} missing set to all zeros" if missing else "")
            plans.append(ColumnPlan(col, "category", missing, len(cats), action, categories=cats))
    return plans


def _feature_names(plans: list[ColumnPlan]) -> list[str]:
    return [name for p in plans
            for name in ([p.column] if p.kind == "numeric" else [f"{p.column}={c}" for c in p.categories])]


def _feature_notes(plans: list[ColumnPlan]) -> list[str]:
    notes = []
    filled = {p.column: p.missing for p in plans if p.kind == "numeric" and p.missing}
    if filled:
        detail = ", ".join(f"{c}: {n}" for c, n in filled.items())
        notes.append(f"filled {sum(filled.values())} missing values with column medians ({detail})")
    dropped = [f"'{p.column}' ({p.action.removeprefix('dropped: ')})" for p in plans if p.kind == "dropped"]
    if dropped:
        notes.append(f"dropped column(s) {', '.join(dropped)}")
    return notes


NO_FEATURES = ("The CSV has no usable feature column besides the target; it needs numeric columns "
               f"or text columns with at most {MAX_CATEGORIES} distinct values.")


def frame_to_features(df: pd.DataFrame) -> tuple[np.ndarray, list[str], list[str]]:
    """Numeric columns as they are (median-filled), small text columns one-hot, big ones dropped."""
    plans = plan_features(df)
    columns: list[np.ndarray] = []
    for p in plans:
        if p.kind == "numeric":
            values = pd.to_numeric(df[p.column], errors="coerce").astype(np.float64).to_numpy(copy=True)
            columns.append(np.where(np.isnan(values), p.median, values))
        elif p.kind == "category":
            text = _text(df[p.column])
            columns += [(text == cat).to_numpy(dtype=np.float64) for cat in p.categories]
    if not columns:
        raise DataError(NO_FEATURES)
    return np.column_stack(columns).astype(np.float64), _feature_names(plans), _feature_notes(plans)


# ---------------------------------------------------------------- the target

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


def _target_rows(df: pd.DataFrame, target: str | None) -> tuple[str, pd.Series]:
    """The checked target name and the mask of rows that have a label."""
    listing = ", ".join(repr(c) for c in df.columns)
    target = target.strip() if isinstance(target, str) else target
    if not target:
        raise DataError(f"Choose the target (label) column; the CSV has columns {listing}.")
    if target not in df.columns:
        raise DataError(f"The CSV has no column {target!r}; choose the target from {listing}.")
    return target, df[target].notna() & (df[target].astype(str).str.strip() != "")


def _rare_classes(y: np.ndarray) -> list[str]:
    labels, counts = np.unique(y, return_counts=True)
    rare = [repr(v.item()) for v, n in zip(labels, counts) if n < 2]
    if not rare:
        return []
    shown = ", ".join(rare[:5]) + (", …" if len(rare) > 5 else "")
    if len(rare) == 1:
        return [f"The class {shown} has only 1 row, too few to be in both the training and the test rows; "
                "merge it into another class or drop that row."]
    return [f"{len(rare)} classes have only 1 row ({shown}), too few to be in both the training and the test rows; "
            "merge them into other classes or drop those rows."]


def prepare_target(df: pd.DataFrame, target: str | None, target_bins: int = 0,
                   target_edges: list[float] | None = None, max_classes: int | None = MAX_CLASSES) -> TargetSplit:
    """Check the target, drop rows without a label, bin it when asked; every refusal is a DataError.

    target_edges (the server's) bin a client's labels exactly like the server's, whatever its own quantiles.
    ``max_classes=None`` (a client, whose classes the server's task decides) skips the too-many-classes check.
    """
    _check_bins(target_bins)
    target, keep = _target_rows(df, target)
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
        n_classes = len(np.unique(y))
        if n_classes < 2:
            raise DataError(f"The target column {target!r} has only one class ({y[0].item()!r}); "
                            "choose a column with at least two different labels.")
        numeric = _numbers(values) is not None
        if max_classes is not None and n_classes > max_classes:
            advice = "bin it into quantile classes (target bins) or choose" if numeric else "choose"
            raise DataError(f"The target column {target!r} has {n_classes} distinct values, which looks continuous; "
                            f"{advice} a column of class labels (at most {MAX_CLASSES}).")
        if looks_continuous(values):
            warnings.append(f"'{target}' has {n_classes} distinct numeric values and looks continuous; each value "
                            "becomes its own class. Bin it into quantile classes instead (target bins).")
    warnings += _rare_classes(y)
    return TargetSplit(df.drop(columns=[target]).reset_index(drop=True), y, notes, warnings, edges,
                       values.reset_index(drop=True))


def split_target(df: pd.DataFrame, target: str | None,
                 target_bins: int = 0) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    """Check the target column, drop rows without a label, return (features frame, y, notes)."""
    split = prepare_target(df, target, target_bins)
    return split.features, split.y, split.notes + split.warnings


def _label_like_name(name: str) -> bool:
    low = str(name).strip().lower()
    return low == "y" or any(re.fullmatch(rf"(.*[^a-z0-9])?{word}", low) for word in _LABEL_NAMES)


def guess_target(df: pd.DataFrame) -> str | None:
    """The column that most looks like a label: complete, 2..20 classes, a label-like name, else the last such."""
    best, best_key = None, None
    for position, col in enumerate(df.columns):
        s = df[col]
        if s.isna().any() or s.nunique() > 2 * MAX_GUESS_CLASSES or looks_continuous(s):
            continue  # cheap checks first: _text is slow on long columns
        text = _text(s)
        if (text == "").any() or not (2 <= text.nunique() <= MAX_GUESS_CLASSES and text.nunique() < len(df) / 2):
            continue
        key = (_label_like_name(col), position)
        if best_key is None or key > best_key:
            best, best_key = col, key
    return best


# ---------------------------------------------------------------- the report shown before a run

@dataclass
class CsvReport:
    """What load_dataset('csv') will do with a file and a target, for the page to show before Start.

    ``problems`` are reasons the chosen target cannot be used (the page shows
    them with the table); ``warnings`` are things that work but deserve a look.
    """

    n_rows: int
    n_rows_used: int
    columns: list[dict]
    class_counts: dict
    notes: list[str]
    warnings: list[str]
    problems: list[str]
    target_continuous: bool
    feature_names: list[str] = field(default_factory=list)
    target_edges: list[float] | None = None


def describe_csv(df: pd.DataFrame | CsvTable, target: str | None, target_bins: int = 0) -> CsvReport:
    """Column by column, what loading will do (same helpers as load_dataset), without raising for target problems.

    Pass the CsvTable (or the frame read_csv_bytes returned) so the reading notes are included.
    """
    table = df if isinstance(df, CsvTable) else CsvTable(df, list(df.attrs.get("csv_notes", [])),
                                                         bool(df.attrs.get("header_missing", False)))
    df = table.frame
    warnings = table.notes[:1] if table.header_missing else []  # read_csv_table puts the header note first
    notes, problems = table.notes[len(warnings):], []
    split, features, name, n_used = None, df, None, len(df)
    try:
        name, keep = _target_rows(df, target)
        features, n_used = (df.loc[keep] if keep.any() else df).drop(columns=[name]), int(keep.sum())
        split = prepare_target(df, name, target_bins)
    except DataError as exc:
        problems.append(str(exc))
    plans = {p.column: p for p in plan_features(features)}
    if not any(p.kind != "dropped" for p in plans.values()):
        problems.append(NO_FEATURES)
    class_counts: dict = {}
    if split is not None:
        notes += split.notes
        warnings += split.warnings
        labels, counts = np.unique(split.y, return_counts=True)
        class_counts = {v.item(): int(n) for v, n in zip(labels, counts)}
    notes += _feature_notes(list(plans.values()))
    columns = []
    for col in df.columns:
        if col == name:
            kind = "quantile classes" if target_bins else "classes"
            action = f"label ({len(class_counts)} {kind})" if split is not None else "label (not usable)"
            columns.append({"column": col, "kind": "target", "missing": int(df[col].isna().sum()),
                            "distinct": int(_text(df[col]).nunique()), "action": action})
        else:
            p = plans[col]
            columns.append({"column": col, "kind": p.kind, "missing": p.missing, "distinct": p.distinct,
                            "action": p.action})
    return CsvReport(
        n_rows=len(df), n_rows_used=n_used,
        columns=columns, class_counts=class_counts, notes=notes, warnings=warnings, problems=problems,
        target_continuous=name is not None and looks_continuous(df[name]),
        feature_names=_feature_names(list(plans.values())), target_edges=split.edges if split else None)


def features_from_frame(df: pd.DataFrame, feature_names: list[str]) -> np.ndarray:
    """Build X in exactly the server's column order, so clients with different CSVs agree.

    "col=value" is a one-hot column (all zeros for a category this client never
    saw); column names may contain "=", so the longest existing prefix wins.
    """
    by_name = {str(c).strip(): c for c in df.columns}
    out = np.empty((len(df), len(feature_names)), dtype=np.float64)
    for j, name in enumerate(feature_names):
        if name in by_name and _is_numeric(df[by_name[name]]):
            out[:, j] = _median_fill(df[by_name[name]])[0]
            continue
        prefix = next((name[:k] for k in range(len(name) - 1, -1, -1)
                       if name[k] == "=" and name[:k] in by_name), None)
        if prefix is not None:
            out[:, j] = (_text(df[by_name[prefix]]) == name[len(prefix) + 1:]).to_numpy(dtype=np.float64)
            continue
        if name in by_name:
            values = pd.to_numeric(df[by_name[name]], errors="coerce")
            if values.notna().any():
                out[:, j] = _median_fill(values)[0]
                continue
            raise DataError(f"Column {name!r} holds no numbers here but the task needs it numeric; fix that column.")
        raw = name.split("=", 1)[0]
        needed = f" (needed for the one-hot feature {name!r})" if raw != name else ""
        raise DataError(f"The data is missing column {raw!r}{needed}; add it so the columns match the server's task.")
    return out


@dataclass
class ClientCsv:
    """A client's own CSV: raw feature frame, labels, its own encoding X and names, the raw target values."""

    frame: pd.DataFrame
    y: np.ndarray
    X: np.ndarray
    names: list[str]
    target_values: pd.Series


def load_client_frame(csv_path: str, target: str) -> ClientCsv:
    """A client's CSV, read before it knows the server's task.

    X and the names are the client's own encoding; the raw frame lets it
    rebuild X in any task's column order once the server says which, and the
    raw target values let it bin its labels with the server's edges. The
    class count is not checked here: the task says which classes there are.
    """
    split = prepare_target(read_csv_bytes(csv_path, None), target, max_classes=None)
    X, names, _ = frame_to_features(split.features)
    assert split.raw is not None
    return ClientCsv(split.features, split.y, X, names, split.raw)


def load_client_csv(csv_path: str, target: str, feature_names: list[str] | None = None,
                    target_edges: list[float] | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A client's local CSV as (X, y, feature_names), built like load_dataset('csv') or in a given order."""
    split = prepare_target(read_csv_bytes(csv_path, None), target, target_edges=target_edges)
    if feature_names is None:
        X, names, _ = frame_to_features(split.features)
        return X, split.y, names
    return features_from_frame(split.features, list(feature_names)), split.y, list(feature_names)
