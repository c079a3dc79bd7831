"""How much memory a run's data will take, checked before any of it is made.

A synthetic dataset of 2,000,000 rows x 10,000 features is 149 GiB before
it is split; asking for it must be a clear refusal, not a MemoryError deep in
NumPy (or a shared machine brought down). The estimate counts the copies a
simulated run really makes of the feature matrix: the dataset, the server's
split, the clients' partitions, their standardised copies and the pooled
copy of the centralized baseline.
"""

from __future__ import annotations

import os
from typing import Any

from fl.data.errors import DataError

WORKING_COPIES = 6  # dataset, split, partitions, standardised partitions, baseline pool, solver scratch
SHARE_OF_AVAILABLE = 0.5  # leave the other half to the OS, the dashboard and other users
BYTES_PER_VALUE = 8  # float64
FALLBACK_AVAILABLE = 4 << 30


class ResourceError(DataError):
    """The data asked for would not fit in memory; str(e) says how much would."""


def available_memory() -> int:
    """Bytes the OS can give without swapping (MemAvailable), or a safe guess."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return FALLBACK_AVAILABLE


def gib(n_bytes: float) -> str:
    return f"{n_bytes / (1 << 30):,.1f} GiB"


def estimate_bytes(n_rows: int, n_features: int) -> int:
    """Peak bytes for the feature matrix of a run, all working copies included."""
    return int(n_rows) * int(n_features) * BYTES_PER_VALUE * WORKING_COPIES


def check_data_size(n_rows: int, n_features: int, *, available: int | None = None, what: str = "") -> None:
    """Raise ResourceError when rows x features would not fit in half the available memory."""
    budget = SHARE_OF_AVAILABLE * (available_memory() if available is None else available)
    need = estimate_bytes(n_rows, n_features)
    if need <= budget:
        return
    max_rows = max(0, int(budget // (n_features * BYTES_PER_VALUE * WORKING_COPIES)))
    label = f"{what} " if what else ""
    raise ResourceError(
        f"{label}{n_rows:,} rows x {n_features:,} features would need about {gib(need)} of memory, but this "
        f"machine has {gib(budget / SHARE_OF_AVAILABLE)} available (a run may use half); with {n_features:,} "
        f"features use at most {max_rows:,} rows, or fewer features.")


CSV_BYTES_PER_CELL_FACTOR = 4  # parsed frame + float matrix, per byte of CSV text, roughly


def check_config_size(config: Any, *, available: int | None = None) -> None:
    """Refuse, before loading anything, data a RunConfig describes that would not fit in memory."""
    if config.dataset == "synthetic":
        check_data_size(config.n_samples, config.n_features, available=available, what="The synthetic dataset's")
    elif config.dataset == "xor":
        check_data_size(config.n_samples, 2, available=available, what="The XOR dataset's")
    elif config.dataset == "csv" and config.csv_path:
        try:
            n_bytes = os.path.getsize(config.csv_path)
        except OSError:
            return  # the reader says what is wrong with the path
        budget = SHARE_OF_AVAILABLE * (available_memory() if available is None else available)
        need = n_bytes * CSV_BYTES_PER_CELL_FACTOR * WORKING_COPIES
        if need > budget:
            raise ResourceError(f"The CSV file is {gib(n_bytes)} and would need about {gib(need)} of memory, but "
                                f"this machine has {gib(budget / SHARE_OF_AVAILABLE)} available (a run may use "
                                "half); use a sample of its rows.")
