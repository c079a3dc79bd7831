"""A CSV as a cross-silo study publishes it: rows from four hospitals, the hospital in one column."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SITES = ["North East", "South", "Zürich/Nord", "west"]
# Their client ids, in client order: values sorted alphabetically (case aside), made safe for the wire.
SITE_IDS = ["North_East", "South", "west", "Zurich_Nord"]


def write_sites_csv(path: Path, n_rows: int = 240, seed: int = 0) -> Path:
    """Three classes that two measurements separate; each site a different mix of classes and sizes."""
    rng = np.random.default_rng(seed)
    lines = ["hospital,age,dose,marker,outcome"]
    mixes = {"North East": [0.6, 0.3, 0.1], "South": [0.2, 0.5, 0.3], "Zürich/Nord": [0.1, 0.2, 0.7],
             "west": [1 / 3, 1 / 3, 1 / 3]}
    for i in range(n_rows):
        site = SITES[i % 7 % 4]  # sites of different sizes
        y = int(rng.choice(3, p=mixes[site]))
        lines.append(f"{site},{rng.normal(50 + 6 * y, 4):.2f},{rng.normal(y, 0.4):.3f},{rng.normal(0, 1):.3f},"
                     f"{['mild', 'moderate', 'severe'][y]}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
