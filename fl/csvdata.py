"""CSV files as features and labels, identically on the server and on every client.

Numeric columns are used as they are (median-filled), text columns with few
values are one-hot encoded as "column=value", the target's labels are
normalised so that "1", 1.0 and 1 agree. A client rebuilds its matrix in the
server's column order with ``features_from_frame``.
"""

from __future__ import annotations

import csv
import io
import math

import numpy as np
import pandas as pd

from fl.partition import DataError

MAX_CATEGORIES = 50    # text columns with more distinct values are dropped, not one-hot encoded
MAX_CLASSES = 100      # a target with more labels is almost surely a continuous column


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


def read_csv_bytes(csv_path: str | None, csv_data: bytes | None) -> pd.DataFrame:
    """Parse a CSV file or upload; every failure becomes one DataError sentence."""
    if csv_data is None and csv_path is None:
        raise DataError("Choose a CSV file to upload (or give a CSV path) for the csv dataset.")
    if csv_data is None:
        try:
            with open(csv_path, "rb") as fh:  # type: ignore[arg-type]
                csv_data = fh.read()
        except OSError as exc:
            raise DataError(f"Cannot read the CSV file {csv_path!r} ({exc.strerror}); check the path.") from None
    if not csv_data.strip():
        raise DataError("The CSV file is empty; upload a file with a header row and data rows.")
    if b"\x00" in csv_data[:65536]:
        raise DataError("The file does not look like a CSV text file; upload a comma-separated text file.")
    try:
        text = csv_data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = csv_data.decode("latin-1")
    try:
        df = pd.read_csv(io.StringIO(text))
        if df.shape[1] == 1 and any(sep in str(df.columns[0]) for sep in (";", "\t", "|")):
            df = pd.read_csv(io.StringIO(text), sep=None, engine="python")  # sniff ; or tab
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError, csv.Error) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"The CSV file cannot be parsed ({first}); check that it is a valid CSV.") from None
    df.columns = [str(c).strip() for c in df.columns]
    if df.columns.duplicated().any():
        raise DataError("The CSV has repeated column names; give every column a distinct name.")
    if len(df) == 0:
        raise DataError("The CSV file has a header but no data rows; upload a file with data.")
    return df


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


def frame_to_features(df: pd.DataFrame) -> tuple[np.ndarray, list[str], list[str]]:
    """Numeric columns as they are (median-filled), small text columns one-hot, big ones dropped."""
    columns: list[np.ndarray] = []
    names: list[str] = []
    notes: list[str] = []
    filled: dict[str, int] = {}
    dropped: list[str] = []
    for col in df.columns:
        s = df[col]
        if _is_numeric(s):
            if s.isna().all():
                dropped.append(f"'{col}' (no values)")
                continue
            values, n_missing = _median_fill(s)
            if n_missing:
                filled[col] = n_missing
            columns.append(values)
            names.append(col)
            continue
        text = _text(s)
        cats = sorted(set(text.dropna()))
        if not cats:
            dropped.append(f"'{col}' (no values)")
        elif len(cats) > MAX_CATEGORIES:
            dropped.append(f"'{col}' ({len(cats)} distinct text values)")
        else:
            for cat in cats:
                columns.append((text == cat).to_numpy(dtype=np.float64))
                names.append(f"{col}={cat}")
    if filled:
        detail = ", ".join(f"{c}: {n}" for c, n in filled.items())
        notes.append(f"filled {sum(filled.values())} missing values with column medians ({detail})")
    if dropped:
        notes.append(f"dropped column(s) {', '.join(dropped)}")
    if not columns:
        raise DataError("The CSV has no usable feature column besides the target; it needs numeric columns "
                        f"or text columns with at most {MAX_CATEGORIES} distinct values.")
    return np.column_stack(columns).astype(np.float64), names, notes


def split_target(df: pd.DataFrame, target: str | None) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    """Check the target column, drop rows without a label, return (features frame, y, notes)."""
    listing = ", ".join(repr(c) for c in df.columns)
    target = target.strip() if isinstance(target, str) else target
    if not target:
        raise DataError(f"Choose the target (label) column; the CSV has columns {listing}.")
    if target not in df.columns:
        raise DataError(f"The CSV has no column {target!r}; choose the target from {listing}.")
    notes = []
    keep = df[target].notna() & (df[target].astype(str).str.strip() != "")
    if not keep.all():
        notes.append(f"dropped {int((~keep).sum())} rows with a missing target")
        df = df.loc[keep]
    if len(df) == 0:
        raise DataError(f"Every row has an empty target {target!r}; choose a column that holds the labels.")
    y = normalize_labels(df[target])
    n_classes = len(np.unique(y))
    if n_classes < 2:
        raise DataError(f"The target column {target!r} has only one class ({y[0]!r}); "
                        "choose a column with at least two different labels.")
    if n_classes > MAX_CLASSES:
        raise DataError(f"The target column {target!r} has {n_classes} distinct values, which looks continuous; "
                        f"choose a column of class labels (at most {MAX_CLASSES}).")
    return df.drop(columns=[target]).reset_index(drop=True), y, notes


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


def load_client_frame(csv_path: str, target: str) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, list[str]]:
    """A client's CSV as (raw feature frame, labels, X, feature names).

    X and the names are the client's own encoding; the raw frame lets it
    rebuild X in any task's column order once the server says which.
    """
    df, y, _ = split_target(read_csv_bytes(csv_path, None), target)
    X, names, _ = frame_to_features(df)
    return df, y, X, names


def load_client_csv(csv_path: str, target: str,
                    feature_names: list[str] | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A client's local CSV as (X, y, feature_names), built like load_dataset('csv') or in a given order."""
    df, y, _ = split_target(read_csv_bytes(csv_path, None), target)
    if feature_names is None:
        X, names, _ = frame_to_features(df)
        return X, y, names
    return features_from_frame(df, list(feature_names)), y, list(feature_names)


