"""Datasets, the server's held-out split, global standardization and client partitions.

Everything is seeded and a pure function of its inputs, so the dashboard, the
server and a client on another machine that is told "partition i of N" all
rebuild the same rows. Import the data layer's names from ``fl.data``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
from sklearn import datasets as skdatasets
from sklearn.model_selection import train_test_split

from fl.data.column_split import SPLIT_REASON, ColumnGroups, column_groups
from fl.data.columns import ColumnReport
from fl.data.csvdata import column_report, frame_to_features, plan_features, unknown_columns
from fl.data.labels import normalize_labels, prepare_target
from fl.data.csvread import read_csv_table
from fl.data.errors import DataError
from fl.data.partition import partition

DATASETS = {
    "iris": "Iris: 150 flowers, 4 features, 3 classes",
    "wine": "Wine: 178 wines, 13 features, 3 classes",
    "breast_cancer": "Breast cancer: 569 cases, 30 features, 2 classes",
    "digits": "Digits: 1,797 images, 64 pixels, 10 classes",
    "xor": "XOR: 4 noisy points, not linearly separable",
    "synthetic": "Synthetic: any size (make_classification)",
    "csv": "A CSV file…",
}

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
    target_edges: list[float] | None = None  # a binned CSV target: inner quantile edges, for clients to bin alike
    groups: ColumnGroups | None = None  # the split column's group of every row (a column split), not a feature
    column_report: ColumnReport | None = None  # a CSV's excluded columns, likely leaks, missing values


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


def _load_csv(csv_path: str | None, csv_data: bytes | None, target: str | None, target_bins: int = 0,
              split_column: str | None = None, keep_columns: str | list[str] | None = None) -> Dataset:
    """Read, take out (and maybe bin) the target, encode features; describe_csv reports the same steps.

    ``split_column``: take that column out too, as each row's group for the column split (never a feature).
    ``keep_columns``: use these although they look like row numbers, IDs or constants (see fl.data.columns).
    """
    table = read_csv_table(csv_path, csv_data)
    unknown = unknown_columns(table.frame, keep_columns)
    if unknown:
        raise DataError(unknown)
    split = prepare_target(table.frame, target, target_bins)
    features, groups = split.features, None
    if split_column:
        if split_column.strip() == str(target).strip():
            raise DataError(f"The split column cannot be the target {target!r}: choose another column to split by.")
        groups = column_groups(features, split_column)
    split_out = {groups.column: SPLIT_REASON} if groups is not None else {}  # the clients, never a feature
    plans = plan_features(features, split.y, keep=keep_columns, exclude=split_out)  # the one plan: features,
    X, names, feature_notes = frame_to_features(features, plans=plans)             # names and report
    return Dataset("csv", X, split.y, names, _classes(split.y),
                   table.notes + split.notes + split.warnings + feature_notes, split.edges, groups,
                   column_report(plans, table.frame))


def load_dataset(name: str, *, csv_path: str | None = None, csv_data: bytes | None = None,
                 target: str | None = None, n_samples: int = 1000, n_features: int = 20,
                 n_classes: int = 2, seed: int = 0, target_bins: int = 0, split_column: str | None = None,
                 keep_columns: str | list[str] | None = None) -> Dataset:
    """Load a built-in dataset, a synthetic one, or a CSV (path or uploaded bytes).

    target_bins >= 2 turns a numeric CSV target into that many quantile classes (edges in target_edges).
    ``split_column`` (a CSV's) becomes ``groups`` for the column split instead of a feature;
    ``keep_columns`` (a CSV's, "a,b" or a list) are used although they look like row numbers, IDs or constants.
    """
    if split_column and name != "csv":
        raise DataError(f"Only a CSV can be split by a column; {name} has no column that says where a row comes "
                        "from: choose iid, dirichlet, shards or quantity.")
    if name in _SKLEARN_LOADERS:
        return _load_sklearn(name)
    if name == "xor":
        return _load_xor(n_samples, seed)
    if name == "synthetic":
        return _load_synthetic(n_samples, n_features, n_classes, seed)
    if name == "csv":
        return _load_csv(csv_path, csv_data, target, target_bins, split_column, keep_columns)
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
    groups_train: np.ndarray | None = None  # the column split's group of every training row


def _split(X: np.ndarray, y: np.ndarray, size: float, seed: int, *more: np.ndarray):
    """Stratified when every class allows it, plain otherwise (rare classes are not an error).

    ``more`` arrays are cut alongside; they never change which rows go where.
    """
    try:
        return train_test_split(X, y, *more, test_size=size, random_state=seed, stratify=y)
    except ValueError:
        pass
    try:
        return train_test_split(X, y, *more, test_size=size, random_state=seed)
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
    groups = [ds.groups.codes] if ds.groups is not None else []  # cut alongside: (train, test) when present
    X_rest, X_test, y_rest, y_test, *groups = _split(ds.X, ds.y, test_size, seed, *groups)
    if val_size > 0:
        X_train, X_val, y_train, y_val, *groups = _split(X_rest, y_rest, val_size / (1 - test_size), seed,
                                                         *groups[:1])
    else:
        X_train, y_train = X_rest, y_rest
        X_val, y_val = np.empty((0, ds.X.shape[1])), np.empty(0, dtype=ds.y.dtype)
    return Split(X_train, y_train, X_test, y_test, X_val, y_val, groups[0] if groups else None)


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


MIN_ROWS_FOR_LOCAL_HOLDOUT = 5


def training_row_count(n_rows: int, fraction: float) -> int:
    """How many of a client's ``n_rows`` it trains on when it holds ``fraction`` out (``local_holdout``): the
    server computes the federation's training rows from the clients' row counts with it."""
    if fraction <= 0 or n_rows < MIN_ROWS_FOR_LOCAL_HOLDOUT:
        return n_rows
    return n_rows - min(max(1, int(round(fraction * n_rows))), n_rows - 2)


def local_holdout(n_rows: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, held-out rows) of one client's own data, seeded: the client and the baselines agree.

    A client scores the global model on rows it never trained on, so its
    per-client accuracy is not inflated by memorised rows. Clients with fewer
    than MIN_ROWS_FOR_LOCAL_HOLDOUT rows keep them all for training (and
    report no local score).
    """
    n_eval = n_rows - training_row_count(n_rows, fraction)
    if n_eval == 0:
        return np.arange(n_rows), np.empty(0, dtype=np.int64)
    order = np.random.default_rng(seed).permutation(n_rows)
    return np.sort(order[n_eval:]), np.sort(order[:n_eval])


@dataclass
class FederatedData:
    """Everything a run needs: the dataset, the server split, client partitions, global stats."""

    dataset: Dataset
    split: Split
    parts: list[np.ndarray]
    stats: dict
    site_names: list[str] | None = None  # a column split's client ids (its values made safe); else numbered

    def client_data(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """RAW (unscaled) X, y of client i; clients scale with the shared stats themselves."""
        if not 0 <= i < len(self.parts):
            raise DataError(f"Client index {i} is out of range; there are {len(self.parts)} clients.")
        rows = self.parts[i]
        return self.split.X_train[rows], self.split.y_train[rows]


def make_federated_data(dataset: Dataset, *, n_clients: int, partition_method: str = "iid", alpha: float = 0.5,
                        shards_per_client: int = 2, quantity_skew: float = 1.5, min_samples: int = 2,
                        test_size: float = 0.2, val_size: float = 0.0, seed: int = 0) -> FederatedData:
    """Split, partition and compute stats; deterministic so remote clients can rebuild "i of N".

    "column" (a dataset loaded with its split column) makes one client per value, whatever ``n_clients``.
    """
    split = split_server_holdout(dataset, test_size=test_size, val_size=val_size, seed=seed)
    by_column = partition_method == "column"
    if by_column and (dataset.groups is None or split.groups_train is None):
        raise DataError("The column split needs a CSV loaded with its split column («split_column»).")
    parts = partition(split.y_train, n_clients, partition_method, alpha=alpha,
                      shards_per_client=shards_per_client, quantity_skew=quantity_skew,
                      min_samples=min_samples, seed=seed, groups=split.groups_train if by_column else None,
                      group_names=dataset.groups.values if by_column and dataset.groups else ())
    names = list(dataset.groups.names) if by_column and dataset.groups else None
    return FederatedData(dataset, split, parts, standardization_stats(split.X_train), names)
