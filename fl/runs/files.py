"""Files a crash must never leave half-written: write aside, flush, then rename over the old one.

``os.replace`` is atomic on POSIX and Windows, so a reader (or a run resumed
after ``kill -9``) sees the old file or the new one, never a torn one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable


def write_atomically(path: str | Path, data: str | bytes) -> None:
    """Replace ``path`` with ``data`` in one step (text as UTF-8)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomically(path: str | Path, data: Any, default: Callable[[Any], Any] | None = str,
                          **dumps: Any) -> None:
    write_atomically(path, json.dumps(data, indent=2, default=default, **dumps))


def dump_atomically(path: str | Path, dump: Callable[[Path], Any]) -> None:
    """``dump(tmp_path)`` (e.g. joblib.dump), then rename: a model file is whole or absent."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        dump(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
