"""Files a crash must never leave half-written: write aside, flush, then rename over the old one.

``os.replace`` is atomic on POSIX and Windows, so a reader (or a run resumed
after ``kill -9``) sees the old file or the new one, never a torn one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable


def write_atomically(path: str | Path, data: str | bytes, sync: bool = True) -> None:
    """Replace ``path`` with ``data`` in one step (text as UTF-8).

    ``sync=False`` skips the fsync (about 10 ms on an ordinary disk): the rename still leaves the old file or
    the new one after a crash of the process; only a crash of the machine may lose the newest version. For
    files rewritten every round (summary.json, the checkpoint), which a later write makes durable.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
            fh.flush()
            if sync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def sync_file(path: str | Path) -> None:
    """fsync a file written with ``sync=False`` (no error if it is gone)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
