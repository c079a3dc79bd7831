"""Partitioners: how the training pool is split across federated clients.

Every partitioner is a pure, seeded function of (labels, n_clients, settings),
so a client process on another machine that knows "partition i of N" and the
run's seed rebuilds exactly the rows the server's simulation would give it.
"column" is a function of each row's group instead (fl.data.column_split).
`fl.data` re-exports everything here; import from there.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from fl.data.errors import DataError  # re-exported: it was defined here

__all__ = ["DataError", "PARTITIONERS", "partition", "label_distribution"]

PARTITIONERS = {
    "iid": "IID: shuffled, equal shares",
    "dirichlet": "Dirichlet label skew (non-IID)",
    "shards": "Label shards (non-IID)",
    "quantity": "Quantity skew (sizes differ)",
    "column": "By a column (one client per value)",
}

_DIRICHLET_TRIES = 100


def _check_int(value: object, name: str, minimum: int) -> int:
    """Reject floats, bools and out-of-range values with a sentence the UI can show."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise DataError(f"{name} must be a whole number, got {value!r}.")
    if value < minimum:
        raise DataError(f"{name} must be at least {minimum}, got {value}.")
    return int(value)


def _check_float(value: object, name: str) -> float:
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DataError(f"{name} must be a number, got {value!r}.") from None
    if not math.isfinite(out):
        raise DataError(f"{name} must be a finite number, got {value!r}.")
    return out


def _top_up(parts: list[np.ndarray], min_samples: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Move random rows from the largest clients to clients below min_samples.

    Callers guarantee n_clients * min_samples <= n_rows, so the largest client
    always has rows to spare while some client is short; the loop ends.
    """
    parts = [np.asarray(p, dtype=np.int64) for p in parts]
    while True:
        sizes = np.array([len(p) for p in parts])
        short = np.flatnonzero(sizes < min_samples)
        if short.size == 0:
            return parts
        receiver = int(short[0])
        donor = int(np.argmax(sizes))  # first largest: deterministic tie-break
        k = int(rng.integers(len(parts[donor])))
        parts[receiver] = np.append(parts[receiver], parts[donor][k])
        parts[donor] = np.delete(parts[donor], k)


def _iid(n: int, n_clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    return list(np.array_split(rng.permutation(n), n_clients))


def _dirichlet(y: np.ndarray, n_clients: int, alpha: float, min_samples: int,
               rng: np.random.Generator) -> list[np.ndarray]:
    """Label skew of Hsu et al. (2019): each class is spread over clients by Dir(alpha)."""
    class_rows = [rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y)]
    # Draw until every client gets min_samples (or keep the best draw): the sizes of a draw come from its
    # cut points alone, so only the chosen draw is turned into row lists (1,000 clients: 100 draws in ms).
    best_cuts: list[np.ndarray] = []
    best_min = -1
    for _ in range(_DIRICHLET_TRIES):
        cuts_per_class, sizes = [], np.zeros(n_clients, dtype=np.int64)
        for rows in class_rows:
            p = rng.dirichlet(np.full(n_clients, alpha))
            cuts = (np.cumsum(p)[:-1] * len(rows)).astype(np.int64)
            cuts_per_class.append(cuts)
            bounds = np.clip(np.concatenate(([0], cuts, [len(rows)])), 0, len(rows))
            sizes += np.maximum(np.diff(bounds), 0)
        smallest = int(sizes.min())
        if smallest > best_min:
            best_cuts, best_min = cuts_per_class, smallest
        if smallest >= min_samples:
            break
    buckets: list[list[np.ndarray]] = [[] for _ in range(n_clients)]
    for rows, cuts in zip(class_rows, best_cuts):
        for i, chunk in enumerate(np.split(rows, cuts)):
            buckets[i].append(chunk)
    best = [np.concatenate(b) if b else np.empty(0, np.int64) for b in buckets]
    return _top_up(best, min_samples, rng)


def _shards(y: np.ndarray, n_clients: int, shards_per_client: int, min_samples: int,
            rng: np.random.Generator) -> list[np.ndarray]:
    """McMahan et al. (2017) pathological split: few contiguous label shards per client."""
    n_shards = n_clients * shards_per_client
    if n_shards > len(y):
        raise DataError(
            f"{n_clients} clients x {shards_per_client} shards each need {n_shards} shards but there are "
            f"only {len(y)} rows; use fewer clients or fewer shards per client.")
    shuffled = rng.permutation(len(y))
    by_label = shuffled[np.argsort(y[shuffled], kind="stable")]
    shards = np.array_split(by_label, n_shards)
    order = rng.permutation(n_shards)
    parts = [np.concatenate([shards[s] for s in order[i * shards_per_client:(i + 1) * shards_per_client]])
             for i in range(n_clients)]
    return _top_up(parts, min_samples, rng)


def _quantity(n: int, n_clients: int, skew: float, min_samples: int,
              rng: np.random.Generator) -> list[np.ndarray]:
    """Quantity skew: power-law client sizes, rows drawn IID, nobody below min_samples."""
    weights = (np.arange(n_clients) + 1.0) ** -skew
    weights = rng.permutation(weights / weights.sum())
    spare = n - n_clients * min_samples
    exact = weights * spare
    sizes = np.floor(exact).astype(np.int64)
    leftover = spare - int(sizes.sum())
    # Largest remainders first; stable sort keeps ties deterministic.
    sizes[np.argsort(-(exact - sizes), kind="stable")[:leftover]] += 1
    sizes += min_samples
    return list(np.split(rng.permutation(n), np.cumsum(sizes)[:-1]))


def _by_column(n: int, groups: np.ndarray | None, group_names: Sequence[str], min_samples: int) -> list[np.ndarray]:
    """One client per group (a site, a hospital): the rows whose split-column value is that group's."""
    if groups is None:
        raise DataError("The column split needs the split column's value of every row: give «split_column» "
                        "with a CSV.")
    groups = np.asarray(groups, dtype=np.int64)
    if groups.shape != (n,):
        raise DataError(f"The split column has {groups.size} values for {n} rows.")
    names = list(group_names) or [str(g) for g in range(int(groups.max()) + 1 if n else 0)]
    parts = [np.flatnonzero(groups == g) for g in range(len(names))]
    short = [(name, len(p)) for name, p in zip(names, parts) if len(p) < min_samples]
    if short:
        name, rows = short[0]
        raise DataError(f"The split column's value {name!r} keeps {rows} training row(s) once the server holds out "
                        f"its test rows, fewer than «min_samples» ({min_samples}): lower «test_size» or "
                        "«min_samples», or split by another column.")
    return parts


def partition(y: np.ndarray, n_clients: int, method: str = "iid", *, alpha: float = 0.5,
              shards_per_client: int = 2, quantity_skew: float = 1.5, min_samples: int = 2,
              seed: int = 0, groups: np.ndarray | None = None,
              group_names: Sequence[str] = ()) -> list[np.ndarray]:
    """Split row indices of y across clients; disjoint, complete, seeded.

    Returns one sorted int64 index array per client. Settings of other methods
    (e.g. alpha for "iid") are ignored, so a config can carry them all.
    "column" makes one client per group instead of ``n_clients``: ``groups``
    is each row's group (an index into ``group_names``), from fl.data.column_split.
    """
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"Labels must be a 1-D array, got shape {y.shape}.")
    n_clients = _check_int(n_clients, "The number of clients", 1)
    seed = _check_int(seed, "The seed", 0)
    min_samples = _check_int(min_samples, "min_samples", 1)
    if method not in PARTITIONERS:
        raise DataError(f"Unknown partition method {method!r}; choose one of {', '.join(PARTITIONERS)}.")
    n = len(y)
    if method == "column":
        return [np.sort(p.astype(np.int64)) for p in _by_column(n, groups, group_names, min_samples)]
    if n_clients * min_samples > n:
        raise DataError(
            f"{n} rows cannot give {n_clients} clients at least {min_samples} samples each; "
            "use fewer clients or a larger dataset.")
    rng = np.random.default_rng(seed)

    if method == "iid":
        parts = _iid(n, n_clients, rng)
    elif method == "dirichlet":
        alpha = _check_float(alpha, "The Dirichlet alpha")
        if alpha <= 0:
            raise DataError(f"The Dirichlet alpha must be greater than 0 (e.g. 0.1 to 10), got {alpha}.")
        parts = _dirichlet(y, n_clients, alpha, min_samples, rng)
    elif method == "shards":
        shards_per_client = _check_int(shards_per_client, "shards_per_client", 1)
        parts = _shards(y, n_clients, shards_per_client, min_samples, rng)
    else:
        quantity_skew = _check_float(quantity_skew, "quantity_skew")
        if quantity_skew < 0:
            raise DataError(f"quantity_skew must be 0 (equal sizes) or more, got {quantity_skew}.")
        parts = _quantity(n, n_clients, quantity_skew, min_samples, rng)
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def label_distribution(y: np.ndarray, parts: list[np.ndarray], classes: list) -> np.ndarray:
    """Counts of each class on each client, shape (n_clients, n_classes), for the heatmap.

    Labels not in `classes` are not counted (they would have no column).
    """
    y = np.asarray(y)
    column = {c: j for j, c in enumerate(classes)}
    counts = np.zeros((len(parts), len(classes)), dtype=np.int64)
    for i, rows in enumerate(parts):
        values, freq = np.unique(y[np.asarray(rows, dtype=np.int64)], return_counts=True)
        for v, f in zip(values.tolist(), freq.tolist()):
            j = column.get(v)
            if j is not None:
                counts[i, j] = f
    return counts
