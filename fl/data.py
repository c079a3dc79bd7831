"""Datasets, the server's held-out split, global standardization and client partitions.

Everything is seeded and a pure function of its inputs, so the dashboard, the
server and a client on another machine that is told "partition i of N" all
rebuild the same rows. Partitioners live in `fl.partition` and are re-exported.
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn import datasets as skdatasets
from sklearn.model_selection import train_test_split

from fl.partition import PARTITIONERS, DataError, label_distribution, partition

__all__ = [
    "DataError", "DATASETS", "PARTITIONERS", "Dataset", "load_dataset", "features_from_frame",
    "load_client_csv", "normalize_labels", "Split", "split_server_holdout", "partition",
    "label_distribution", "standardization_stats", "apply_standardization", "FederatedData",
    "make_federated_data",
]

DATASETS = ("iris", "wine", "breast_cancer", "digits", "xor", "synthetic", "csv")

MAX_CATEGORIES = 50    # text columns with more distinct values are dropped, not one-hot encoded
MAX_CLASSES = 100      # a target with more labels is almost surely a continuous column
_SKLEARN_LOADERS = {
    "iris": skdatasets.load_iris,
    "wine": skdatasets.load_wine,
    "breast_cancer": skdatasets.load_breast_cancer,
    "digits": skdatasets.load_digits,
}


@dataclass
class Dataset:
    """A whole labelled dataset before any split; X is raw (unscaled) float64."""

    name: str
    X: np.ndarray
    y: np.ndarray
    feature_names: list[str]
    classes: list
    notes: list[str] = field(default_factory=list)


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


def _classes(y: np.ndarray) -> list:
    """Sorted unique labels as plain Python ints or strs (JSON-able)."""
    return [int(c) if y.dtype.kind in "iu" else str(c) for c in np.unique(y)]


def _load_sklearn(name: str) -> Dataset:
    bunch = _SKLEARN_LOADERS[name]()
    names = [str(n) for n in bunch.feature_names]
    y = normalize_labels(bunch.target)
    targets = [str(t) for t in getattr(bunch, "target_names", [])]
    notes = []
    if targets and targets != [str(i) for i in range(len(targets))]:
        notes.append("classes are " + ", ".join(f"{i}={t}" for i, t in enumerate(targets)))
    return Dataset(name, np.asarray(bunch.data, dtype=np.float64), y, names, _classes(y), notes)


def _load_xor(n_samples: int, seed: int) -> Dataset:
    """The 4-point XOR replicated with small noise: no line separates it, a tree does."""
    n = max(int(n_samples), 40)
    corners = np.array([[0.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    labels = np.array([0, 0, 1, 1], dtype=np.int64)
    rng = np.random.default_rng(seed)
    which = rng.permutation(np.arange(n) % 4)
    X = corners[which] + rng.normal(0.0, 0.1, size=(n, 2))
    y = labels[which]
    notes = [f"raised n_samples from {n_samples} to the minimum of 40"] if n != n_samples else []
    return Dataset("xor", X, y, ["x0", "x1"], _classes(y), notes)


def _load_synthetic(n_samples: int, n_features: int, n_classes: int, seed: int) -> Dataset:
    """make_classification with n_informative picked so sklearn accepts any valid request."""
    for value, label, low, high in ((n_samples, "n_samples", 20, 10**7), (n_features, "n_features", 2, 10**4),
                                    (n_classes, "n_classes", 2, 50)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
            raise DataError(f"{label} must be a whole number between {low} and {high}, got {value!r}.")
    if n_classes > 2 ** n_features:
        raise DataError(f"{n_classes} classes need at least {math.ceil(math.log2(n_classes))} features; "
                        "raise n_features or lower n_classes.")
    if n_samples < 2 * n_classes:
        raise DataError(f"{n_samples} samples are too few for {n_classes} classes; "
                        f"use at least {2 * n_classes} samples.")
    per_class = 2 if 2 * n_classes <= 2 ** n_features else 1
    needed = math.ceil(math.log2(n_classes * per_class))
    n_informative = min(n_features, max(needed, n_features // 2, 2))
    X, y = skdatasets.make_classification(
        n_samples=n_samples, n_features=n_features, n_informative=n_informative, n_redundant=0,
        n_classes=n_classes, n_clusters_per_class=per_class, random_state=seed)
    y = normalize_labels(y)
    return Dataset("synthetic", X.astype(np.float64), y, [f"x{i}" for i in range(n_features)], _classes(y),
                   [f"{n_informative} of {n_features} features are informative"])


def _read_csv(csv_path: str | None, csv_data: bytes | None) -> pd.DataFrame:
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


def _frame_to_features(df: pd.DataFrame) -> tuple[np.ndarray, list[str], list[str]]:
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


def _split_target(df: pd.DataFrame, target: str | None) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
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


def _load_csv(csv_path: str | None, csv_data: bytes | None, target: str | None) -> Dataset:
    df, y, notes = _split_target(_read_csv(csv_path, csv_data), target)
    X, names, feature_notes = _frame_to_features(df)
    return Dataset("csv", X, y, names, _classes(y), notes + feature_notes)


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
    df, y, _ = _split_target(_read_csv(csv_path, None), target)
    X, names, _ = _frame_to_features(df)
    return df, y, X, names


def load_client_csv(csv_path: str, target: str,
                    feature_names: list[str] | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A client's local CSV as (X, y, feature_names), built like load_dataset('csv') or in a given order."""
    df, y, _ = _split_target(_read_csv(csv_path, None), target)
    if feature_names is None:
        X, names, _ = _frame_to_features(df)
        return X, y, names
    return features_from_frame(df, list(feature_names)), y, list(feature_names)


def load_dataset(name: str, *, csv_path: str | None = None, csv_data: bytes | None = None,
                 target: str | None = None, n_samples: int = 1000, n_features: int = 20,
                 n_classes: int = 2, seed: int = 0) -> Dataset:
    """Load a built-in dataset, a synthetic one, or a CSV (path or uploaded bytes)."""
    if name in _SKLEARN_LOADERS:
        return _load_sklearn(name)
    if name == "xor":
        return _load_xor(n_samples, seed)
    if name == "synthetic":
        return _load_synthetic(n_samples, n_features, n_classes, seed)
    if name == "csv":
        return _load_csv(csv_path, csv_data, target)
    raise DataError(f"Unknown dataset {name!r}; choose one of {', '.join(DATASETS)}.")


@dataclass
class Split:
    """Train pool (partitioned across clients) and the server's own test and validation rows."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray


def _split(X: np.ndarray, y: np.ndarray, size: float, seed: int):
    """Stratified when every class allows it, plain otherwise (rare classes are not an error)."""
    try:
        return train_test_split(X, y, test_size=size, random_state=seed, stratify=y)
    except ValueError:
        pass
    try:
        return train_test_split(X, y, test_size=size, random_state=seed)
    except ValueError:
        raise DataError(f"{len(y)} rows are too few to hold out {size:.0%} of them; "
                        "use a larger dataset or a different split size.") from None


def split_server_holdout(ds: Dataset, *, test_size: float = 0.2, val_size: float = 0.0, seed: int = 0) -> Split:
    """Hold out the server's test (and stacking validation) rows; fractions are of the whole dataset."""
    if not 0 < test_size < 0.9:
        raise DataError(f"test_size must be between 0 and 0.9, got {test_size}.")
    if not 0 <= val_size < 0.5:
        raise DataError(f"val_size must be at least 0 and below 0.5, got {val_size}.")
    if test_size + val_size >= 0.9:
        raise DataError(f"test_size + val_size must stay below 0.9 so clients keep data, got "
                        f"{test_size + val_size:.2f}.")
    X_rest, X_test, y_rest, y_test = _split(ds.X, ds.y, test_size, seed)
    if val_size > 0:
        X_train, X_val, y_train, y_val = _split(X_rest, y_rest, val_size / (1 - test_size), seed)
    else:
        X_train, y_train = X_rest, y_rest
        X_val, y_val = np.empty((0, ds.X.shape[1])), np.empty(0, dtype=ds.y.dtype)
    return Split(X_train, y_train, X_test, y_test, X_val, y_val)


def standardization_stats(X: np.ndarray) -> dict:
    """Mean and scale of the training pool, shared with every client (never from test rows)."""
    X = np.asarray(X, dtype=np.float64)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = X.mean(axis=0) if len(X) else np.zeros(X.shape[1])
        std = X.std(axis=0) if len(X) else np.ones(X.shape[1])
    mean = np.where(np.isfinite(mean), mean, 0.0)
    scale = np.where(np.isfinite(std) & (std > 0), std, 1.0)
    return {"mean": [float(v) for v in mean], "scale": [float(v) for v in scale]}


def apply_standardization(X: np.ndarray, stats: dict | None) -> np.ndarray:
    """(X - mean) / scale as a new float64 array; accepts the task's {"standardize": {...}} too."""
    X = np.array(X, dtype=np.float64, copy=True)
    if stats is None:
        return X
    if "standardize" in stats:
        stats = stats["standardize"]
    mean = np.asarray(stats["mean"], dtype=np.float64)
    scale = np.asarray(stats["scale"], dtype=np.float64)
    if X.ndim != 2 or mean.shape != (X.shape[1],) or scale.shape != (X.shape[1],):
        raise DataError(f"Standardization statistics are for {mean.size} features but the data has shape "
                        f"{X.shape}; the client's columns do not match the task.")
    scale = np.where(np.isfinite(scale) & (scale != 0), scale, 1.0)
    return (X - mean) / scale


@dataclass
class FederatedData:
    """Everything a run needs: the dataset, the server split, client partitions, global stats."""

    dataset: Dataset
    split: Split
    parts: list[np.ndarray]
    stats: dict

    def client_data(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """RAW (unscaled) X, y of client i; clients scale with the shared stats themselves."""
        if not 0 <= i < len(self.parts):
            raise DataError(f"Client index {i} is out of range; there are {len(self.parts)} clients.")
        rows = self.parts[i]
        return self.split.X_train[rows], self.split.y_train[rows]


def make_federated_data(dataset: Dataset, *, n_clients: int, partition_method: str = "iid", alpha: float = 0.5,
                        shards_per_client: int = 2, quantity_skew: float = 1.5, min_samples: int = 2,
                        test_size: float = 0.2, val_size: float = 0.0, seed: int = 0) -> FederatedData:
    """Split, partition and compute stats; deterministic so remote clients can rebuild "i of N"."""
    split = split_server_holdout(dataset, test_size=test_size, val_size=val_size, seed=seed)
    parts = partition(split.y_train, n_clients, partition_method, alpha=alpha,
                      shards_per_client=shards_per_client, quantity_skew=quantity_skew,
                      min_samples=min_samples, seed=seed)
    return FederatedData(dataset, split, parts, standardization_stats(split.X_train))
