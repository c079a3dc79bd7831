"""The weights archive (``--archive-weights``): every round's global parameters and their statistics.

- ``weights.csv``: one row per round per array (layer): round, layer, shape,
  mean, std, min, max and L2 norm; appended as rounds end, so it is readable
  during the run.
- ``weights.npz``: every round's arrays, keyed ``round_0001/coefs_.0``; written
  when the run ends (numpy's own format: ``np.load(path)`` reads it, no pickle).

The arrays are kept in memory until the end: rounds x the model's size (an
MLP on digits: 40 KiB a round).
"""

from __future__ import annotations

import csv
import threading
from pathlib import Path

import numpy as np

WEIGHTS_COLUMNS = ("round", "layer", "shape", "mean", "std", "min", "max", "norm")


def layer_stats(array: np.ndarray) -> dict[str, float]:
    values = np.asarray(array, dtype=np.float64)
    if values.size == 0:
        return dict.fromkeys(("mean", "std", "min", "max", "norm"), float("nan"))
    return {"mean": float(values.mean()), "std": float(values.std()), "min": float(values.min()),
            "max": float(values.max()), "norm": float(np.linalg.norm(values))}


class WeightsArchive:
    """Collects the global parameters of each round (``add``) and writes weights.npz on ``close``."""

    def __init__(self, directory: str | Path, after_round: int = 0):
        """``after_round``: a resumed run's checkpoint round; weights.csv keeps the rows up to it, weights.npz
        (kept in memory until the end, so lost with a crash) gets the rounds from there on."""
        self.dir = Path(directory)
        self._arrays: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()
        kept = []
        if after_round and (self.dir / "weights.csv").exists():
            with open(self.dir / "weights.csv", newline="") as fh:
                kept = [row for row in list(csv.reader(fh))[1:] if row and row[0].isdigit()
                        and int(row[0]) <= after_round]
        with open(self.dir / "weights.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(WEIGHTS_COLUMNS)
            writer.writerows(kept)

    def add(self, round_no: int, arrays: list[tuple[str, np.ndarray]]) -> None:
        with self._lock, open(self.dir / "weights.csv", "a", newline="") as fh:
            writer = csv.writer(fh)
            for name, array in arrays:
                self._arrays[f"round_{round_no:04d}/{name}"] = np.array(array, copy=True)
                stats = layer_stats(array)
                writer.writerow([round_no, name, "x".join(str(d) for d in np.shape(array)),
                                 *(f"{stats[k]:.10g}" for k in WEIGHTS_COLUMNS[3:])])

    def close(self) -> None:
        """Write weights.npz (atomically: a reader never sees half a file)."""
        with self._lock:
            tmp = self.dir / "weights.tmp.npz"
            np.savez_compressed(tmp, **self._arrays)
            tmp.replace(self.dir / "weights.npz")
