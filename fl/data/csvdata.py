"""CSV tables as features, identically on the server and on every client.

Numeric columns are used as they are (median-filled), text columns with few
values are one-hot encoded as "column=value", others are dropped, and
``describe_csv`` reports all of it before a run, from the same column plan
as ``frame_to_features``. A client rebuilds its matrix in the server's column
order with ``features_from_frame``. Reading bytes is fl.data.csvread's job,
labels fl.data.labels'.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fl.data.csvread import CsvTable, read_csv_bytes
from fl.data.labels import looks_continuous, prepare_target, target_rows, text_values
from fl.data.partition import DataError

MAX_CATEGORIES = 50    # text columns with more distinct values are dropped, not one-hot encoded


def _is_numeric(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)


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
        cats = [] if _is_numeric(s) else sorted(set(text_values(s).dropna()))
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
            text = text_values(df[p.column])
            columns += [(text == cat).to_numpy(dtype=np.float64) for cat in p.categories]
    if not columns:
        raise DataError(NO_FEATURES)
    return np.column_stack(columns).astype(np.float64), _feature_names(plans), _feature_notes(plans)


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
        name, keep = target_rows(df, target)
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
                            "distinct": int(text_values(df[col]).nunique()), "action": action})
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
            out[:, j] = (text_values(df[by_name[prefix]]) == name[len(prefix) + 1:]).to_numpy(dtype=np.float64)
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
