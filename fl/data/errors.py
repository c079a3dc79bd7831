"""The data layer's error: ``DataError``, the lowest module of ``fl.data`` (every other one may import it).

``fl.data.DataError`` is this same class (and ``fl.data.partition``, where it
was first defined, still imports it).
"""

from __future__ import annotations

from fl.errors import FLError

__all__ = ["DataError"]


class DataError(FLError, ValueError):
    """Bad data or data settings; str(e) is one clear sentence telling the user what to do."""
