"""Update scrutiny: how each client's update compares with the others' and with what the server did.

For one round with global parameters ``w`` before and ``w'`` after
aggregation, and client ``i``'s returned parameters ``w_i``:

- update ``u_i = w_i - w`` (flattened over every array), ``update_norm = ||u_i||``;
- ``update_cosine``: cosine similarity of ``u_i`` and the aggregate step ``w' - w``
  (None when either is zero);
- ``update_z``: a robust z-score of ``d_i = ||u_i - median(u)||``, the distance
  to the coordinate-wise median update: ``(d_i - median(d)) / (1.4826 MAD(d))``
  (MAD: median absolute deviation; 1.4826 makes it a standard deviation
  for normal data; when the MAD is 0, 1.2533 times the mean absolute
  deviation is used instead). The distance to the median catches an update
  that points the wrong way even at a normal norm (sign flip), one that is
  too long (scaling) and one full of noise; the median and the MAD are
  not moved by a minority of bad clients;
- ``flagged``: ``|update_z| > 3``. With fewer than 4 updates no z-score is given.

The server computes all of this from what it received: it never takes a
client's word for its own norm.
"""

from __future__ import annotations

import numpy as np

Z_THRESHOLD = 3.0
MIN_UPDATES_FOR_Z = 4
_MEDIAN_CHUNK = 1 << 22  # elements per column chunk of the median (bounds the working memory)


def flatten(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.ravel(a).astype(np.float64, copy=False) for a in arrays]) if arrays else np.zeros(0)


def robust_z(values: np.ndarray) -> np.ndarray:
    """(x - median) / (1.4826 MAD), falling back to 1.2533 mean absolute deviation; zeros when all are equal."""
    values = np.asarray(values, dtype=np.float64)
    median = np.median(values)
    deviation = np.abs(values - median)
    scale = 1.4826 * np.median(deviation)
    if scale <= 0:
        scale = 1.2533 * np.mean(deviation)
    if scale <= 0:
        return np.zeros_like(values)
    return (values - median) / scale


def coordinate_median(rows: np.ndarray) -> np.ndarray:
    """np.median(rows, axis=0), a block of columns at a time."""
    n, p = rows.shape
    step = max(1, _MEDIAN_CHUNK // max(1, n))
    return np.concatenate([np.median(rows[:, i:i + step], axis=0) for i in range(0, p, step)]) if p else np.zeros(0)


def scrutinize(before: list[np.ndarray], updates: list[tuple[str, list[np.ndarray]]],
               after: list[np.ndarray]) -> dict[str, dict[str, float | bool | None]]:
    """Per client id: update_norm, update_cosine, update_z, flagged (see the module docstring)."""
    if not updates:
        return {}
    base = flatten(before)
    steps = np.vstack([flatten(arrays) - base for _, arrays in updates])
    aggregate = flatten(after) - base
    norms = np.linalg.norm(steps, axis=1)
    aggregate_norm = float(np.linalg.norm(aggregate))
    z = None
    if len(updates) >= MIN_UPDATES_FOR_Z:
        z = robust_z(np.linalg.norm(steps - coordinate_median(steps), axis=1))
    out = {}
    for i, (cid, _) in enumerate(updates):
        cosine = None
        if norms[i] > 0 and aggregate_norm > 0:
            cosine = float(np.clip(steps[i] @ aggregate / (norms[i] * aggregate_norm), -1.0, 1.0))
        score = float(z[i]) if z is not None else None
        out[cid] = {"update_norm": float(norms[i]), "update_cosine": cosine, "update_z": score,
                    "flagged": bool(score is not None and abs(score) > Z_THRESHOLD)}
    return out
