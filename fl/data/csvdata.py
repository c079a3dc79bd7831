"""CSV tables as features, identically on the server and on every client.

Numeric columns are used as they are (median-filled), text columns with few
values are one-hot encoded as "column=value", others are dropped, row
numbers, IDs and constants are excluded (fl.data.columns says which), and
``describe_csv`` reports all of it before a run, from the same column plan
as ``frame_to_features``. A client rebuilds its matrix in the server's column
order with ``features_from_frame``. Reading bytes is fl.data.csvread's job,
labels fl.data.labels'.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from fl.data.columns import (
    ColumnReport, exclusion_note, exclusion_reason, exclusions, kept_note, leak_rows, leak_score, leak_warning,
    parse_columns,
)
from fl.data.csvread import CsvTable, read_csv_bytes
from fl.data.labels import label_counts, looks_continuous, prepare_target, target_rows, text_values
from fl.data.errors import DataError

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
    kind: str              # "numeric", "category", "dropped" (cannot be a feature) or "excluded" (must not be)
    missing: int
    distinct: int
    action: str
    median: float = 0.0
    categories: list[str] = field(default_factory=list)
    kept: str = ""         # why it would have been excluded, when kept on request
    leak: float | None = None  # its one-column score, when that flags a likely leak
    asked: bool = False    # excluded because the caller said so (a split column), not found by the checks


Columns = Iterable[str] | str | None


def _base_plan(col: str, s: pd.Series) -> ColumnPlan:
    """Numeric (median-filled), one-hot category, or dropped (empty or too many values)."""
    missing = int(s.isna().sum())
    cats = [] if _is_numeric(s) else sorted(set(text_values(s).dropna()))
    if s.isna().all() or not (cats or _is_numeric(s)):
        return ColumnPlan(col, "dropped", missing, 0, "dropped: no values")
    if _is_numeric(s):
        median = float(np.nanmedian(pd.to_numeric(s, errors="coerce").astype(np.float64)))
        action = f"{missing} missing filled with the median {median:g}" if missing else "used as is"
        return ColumnPlan(col, "numeric", missing, int(s.nunique()), action, median)
    if len(cats) > MAX_CATEGORIES:
        return ColumnPlan(col, "dropped", missing, len(cats), f"dropped: {len(cats)} distinct text values")
    action = f"one-hot: {len(cats)} values" + (f", {missing} missing set to all zeros" if missing else "")
    return ColumnPlan(col, "category", missing, len(cats), action, categories=cats)


def plan_features(df: pd.DataFrame, y: np.ndarray | None = None, *, keep: Columns = (),
                  exclude: Mapping[str, str] | Columns = (), whole_table: bool = True) -> list[ColumnPlan]:
    """One plan per column, the single source of the features, the report and the task's column names.

    Numeric columns are used (median-filled), text with few values one-hot,
    the rest dropped; row numbers, IDs and constants are excluded unless named
    in ``keep``; ``exclude`` (column -> reason) leaves out what the caller
    says (a split column). With labels ``y`` (one per row of ``df``) a used
    column that alone predicts them almost perfectly carries its ``leak``
    score. ``whole_table=False`` for one site's rows: constants are not excluded.
    """
    kept, left_out = set(parse_columns(keep)), exclusions(exclude)
    dates = set(df.attrs.get("date_columns", ()))
    sample = leak_rows(len(df)) if y is not None and len(y) == len(df) else None  # long tables: a sample
    plans = []
    for col in df.columns:
        s = df[col]
        if str(col) in left_out:
            plans.append(ColumnPlan(col, "excluded", int(s.isna().sum()), int(s.nunique()),
                                    f"excluded: {left_out[str(col)]}", asked=True))
            continue
        plan = _base_plan(col, s)
        reason = None if plan.kind == "dropped" else \
            exclusion_reason(s, str(col), whole_table=whole_table, date=col in dates)
        if reason and str(col) not in kept:
            plan = ColumnPlan(col, "excluded", plan.missing, plan.distinct, f"excluded: {reason}")
        elif reason:
            plan.kept, plan.action = reason, f"{plan.action} (kept on request: {reason})"
        if sample is not None and plan.kind in ("numeric", "category"):
            rows = s.iloc[sample]
            values = pd.to_numeric(rows, errors="coerce").astype(np.float64).fillna(plan.median).to_numpy() \
                if plan.kind == "numeric" else text_values(rows)
            plan.leak = leak_score(values, np.asarray(y)[sample], category=plan.kind == "category")
        plans.append(plan)
    return plans


def unknown_columns(df: pd.DataFrame, keep: Columns) -> str | None:
    """Why ``keep`` cannot be honoured (it names a column the data lacks), or None."""
    missing = [c for c in parse_columns(keep) if c not in {str(col) for col in df.columns}]
    if not missing:
        return None
    listing = ", ".join(repr(str(c)) for c in df.columns)
    return (f"keep_columns names {', '.join(repr(c) for c in missing)}, which the CSV does not have; "
            f"its columns are {listing}.")


def column_report(plans: list[ColumnPlan], frame: pd.DataFrame | None = None) -> ColumnReport:
    """What the plan leaves out and why, what it keeps on request, likely leaks, missing values per column."""
    left_out = [(str(p.column), p.action.split(": ", 1)[-1]) for p in plans if p.kind in ("excluded", "dropped")]
    excluded = [(str(p.column), p.action.split(": ", 1)[-1]) for p in plans if p.kind == "excluded" and not p.asked]
    asked = [f"'{p.column}' ({p.action.split(': ', 1)[-1]})" for p in plans if p.asked]
    kept = [(str(p.column), p.kept) for p in plans if p.kept]
    leaks = [(str(p.column), float(p.leak)) for p in plans if p.leak is not None]
    missing = ({str(c): int(n) for c, n in frame.isna().sum().items()} if frame is not None
               else {str(p.column): p.missing for p in plans})
    return ColumnReport([{"column": c, "reason": why} for c, why in left_out],
                        [{"column": c, "score": score} for c, score in leaks], missing,
                        [{"column": c, "reason": why} for c, why in kept],
                        ([f"left out {', '.join(asked)}: not a feature"] if asked else [])
                        + ([exclusion_note(excluded)] if excluded else []) + ([kept_note(kept)] if kept else []),
                        [leak_warning(c, score) for c, score in leaks])


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


def no_features(plans: list[ColumnPlan]) -> str:
    """NO_FEATURES, naming the excluded columns the user could keep."""
    excluded = [str(p.column) for p in plans if p.kind == "excluded" and not p.asked]
    if not excluded:
        return NO_FEATURES
    return (f"{NO_FEATURES} Excluded as row numbers, IDs or constants: {', '.join(repr(c) for c in excluded)}; "
            f"keep them only if they are real measurements («keep_columns={','.join(excluded)}»).")


def frame_to_features(df: pd.DataFrame, y: np.ndarray | None = None, *, keep: Columns = (),
                      exclude: Mapping[str, str] | Columns = (), whole_table: bool = True,
                      plans: list[ColumnPlan] | None = None) -> tuple[np.ndarray, list[str], list[str]]:
    """X, its column names and notes, from ``plans`` (else plan_features with these arguments)."""
    plans = plan_features(df, y, keep=keep, exclude=exclude, whole_table=whole_table) if plans is None else plans
    columns: list[np.ndarray] = []
    for p in plans:
        if p.kind == "numeric":
            values = pd.to_numeric(df[p.column], errors="coerce").astype(np.float64).to_numpy(copy=True)
            columns.append(np.where(np.isnan(values), p.median, values))
        elif p.kind == "category":
            text = text_values(df[p.column])
            columns += [(text == cat).to_numpy(dtype=np.float64) for cat in p.categories]
    if not columns:
        raise DataError(no_features(plans))
    report = column_report(plans)
    notes = _feature_notes(plans) + report.notes + report.warnings
    return np.column_stack(columns).astype(np.float64), _feature_names(plans), notes


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
    column_report: ColumnReport = field(default_factory=ColumnReport)

    def to_dict(self) -> dict:
        """The report as JSON (data_report.json): rows, classes, columns, excluded, leaks, missing, notes."""
        return {"rows": self.n_rows, "rows_used": self.n_rows_used, "class_counts": {str(k): v for k, v in
                                                                                     self.class_counts.items()},
                "columns": [dict(c) for c in self.columns], "feature_names": list(self.feature_names),
                **self.column_report.to_dict(), "notes": list(self.notes), "warnings": list(self.warnings),
                "problems": list(self.problems)}


def describe_csv(df: pd.DataFrame | CsvTable, target: str | None, target_bins: int = 0, *, keep: Columns = (),
                 exclude: Mapping[str, str] | Columns = ()) -> CsvReport:
    """Column by column, what loading will do (same plan as load_dataset), without raising for target problems.

    Pass the CsvTable (or the frame read_csv_bytes returned) so the reading notes are included.
    ``keep`` and ``exclude`` are load_dataset's keep_columns and a caller's own exclusions.
    """
    table = df if isinstance(df, CsvTable) else CsvTable(df, list(df.attrs.get("csv_notes", [])),
                                                         bool(df.attrs.get("header_missing", False)))
    df = table.frame
    warnings = table.notes[:1] if table.header_missing else []  # read_csv_table puts the header note first
    notes, problems = table.notes[len(warnings):], []
    split, features, name, n_used = None, df, None, len(df)
    try:
        name, labelled = target_rows(df, target)
        features, n_used = (df.loc[labelled] if labelled.any() else df).drop(columns=[name]), int(labelled.sum())
        split = prepare_target(df, name, target_bins)
    except DataError as exc:
        problems.append(str(exc))
    unknown = unknown_columns(df, keep)
    if unknown:
        problems.append(unknown)
    plan_list = plan_features(features, split.y if split is not None else None, keep=keep, exclude=exclude)
    plans = {p.column: p for p in plan_list}
    if not any(p.kind in ("numeric", "category") for p in plan_list):
        problems.append(no_features(plan_list))
    class_counts: dict = {}
    if split is not None:
        notes += split.notes
        warnings += split.warnings
        class_counts = dict(zip(*label_counts(split.y)))
    report = column_report(plan_list, df)
    notes += _feature_notes(plan_list) + report.notes
    warnings += report.warnings
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
                            "action": p.action} | ({"leak": p.leak} if p.leak is not None else {}))
    return CsvReport(
        n_rows=len(df), n_rows_used=n_used,
        columns=columns, class_counts=class_counts, notes=notes, warnings=warnings, problems=problems,
        target_continuous=name is not None and looks_continuous(df[name]),
        feature_names=_feature_names(plan_list), target_edges=split.edges if split else None,
        column_report=report)


def features_from_frame(df: pd.DataFrame, feature_names: list[str], fill: list[float] | None = None) -> np.ndarray:
    """Build X in exactly the server's column order, so clients with different CSVs agree.

    "col=value" is a one-hot column (all zeros for a category this client never
    saw); column names may contain "=", so the longest existing prefix wins.
    A numeric feature whose column holds no number here (empty, or text at this
    site while the others hold numbers) takes ``fill`` (the task's mean: this
    site knows nothing of it, so it stays neutral); without ``fill`` an empty
    numeric column is zeros and a text one a DataError.
    """
    by_name = {str(c).strip(): c for c in df.columns}
    out = np.empty((len(df), len(feature_names)), dtype=np.float64)
    for j, name in enumerate(feature_names):
        if name in by_name and _is_numeric(df[by_name[name]]):
            if fill is not None and not df[by_name[name]].notna().any():
                out[:, j] = fill[j]
                continue
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
            if fill is not None:
                out[:, j] = fill[j]
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
    class count is not checked here: the task says which classes there are
    (a site may hold a single class; only the union of the sites' needs two).
    """
    split = prepare_target(read_csv_bytes(csv_path, None), target, max_classes=None, min_classes=1)
    X, names, _ = frame_to_features(split.features, whole_table=False)  # a site's constant may vary elsewhere
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
