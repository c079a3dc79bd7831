"""Numbers rounded for people."""

from __future__ import annotations

import math
import time
from typing import Any

from fl.runs.words import for_page


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def pct(value: Any) -> str:
    """0.9312 -> '93.1%'; missing -> '–'."""
    return f"{100 * value:.1f}%" if is_number(value) else "–"


def num(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if is_number(value) else "–"


def epsilon_shown(value: Any) -> str:
    """Privacy ε as the pages show it: 2 decimals, or ∞ said for what it is (noise multiplier 0)."""
    from fl.runs.for_pages import NO_PRIVACY

    return f"∞ ({NO_PRIVACY})" if value == math.inf else num(value, 2)


def size(n_bytes: Any) -> str:
    if not is_number(n_bytes):
        return "–"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n_bytes) < 1024 or unit == "GB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024
    return "–"


def when(timestamp: Any) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp)) if is_number(timestamp) else "–"


def duration(seconds: Any) -> str:
    if not is_number(seconds):
        return "–"
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def words(text: object) -> str:
    """An engine message in the page's words: its setting markers as the dashboard's labels (fl/runs/words.py)."""
    return for_page(str(text))
