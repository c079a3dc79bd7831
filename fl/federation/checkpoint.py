"""What a server must keep to continue a run after a crash, as one self-contained file (no pickle).

After every finished round the round loop hands out a ``Checkpoint``: the
round number, every round's record so far, the sampling RNG's state, the
global model (parameter arrays, or an ensemble as a skops blob), the
strategy's own state (server-optimiser moments, the privacy accountant's
history and noise RNG) and the best round so far. ``to_bytes`` packs it as
one ``.npz`` (arrays stored as arrays; everything else as one JSON document
inside it), which ``from_bytes`` reads back with ``allow_pickle=False``:
loading a checkpoint can never run code. Writing the file atomically is the
run directory's business (fl/runs/store.py).

Why a resumed run ends with the same numbers as an uninterrupted one: every
random choice the server makes comes from the RNG states saved here, and the
clients' training seeds come from the round number (``seed + round``), not
from a counter the crash would reset.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fl.errors import FLError
from fl.wire import json_safe

FORMAT = "fl-checkpoint"
VERSION = 1
_META_KEY = "__meta__"
_ROUNDS_KEY = "__rounds__"  # the round records, one JSON array apart from the rest (older files: in the meta)
_ARRAY_TAG = "__array__"


class CheckpointError(FLError, ValueError):
    """A checkpoint that cannot be read or does not belong to this run; str(e) says which."""


@dataclass
class Checkpoint:
    """The server's state after round ``round`` (every field plain data, arrays, or bytes)."""

    round: int
    rounds: list[dict]  # every round's record, 1..round (metrics.csv's rows)
    rng_state: dict  # numpy bit generator state of the client sampling
    model: dict  # {"arrays": NamedArrays} or {"blob": bytes} (an ensemble) or {} before any aggregate
    strategy: dict  # Strategy.state(): JSON values and numpy arrays, nested
    best: dict | None = None  # {"round", "score", "selected_on", "metrics", "arrays" | "blob"}
    task: dict = field(default_factory=dict)  # the task the run was serving: a resume must serve the same
    run_id: str = ""
    # ``rounds`` as ``round_json`` encoded them, when the caller kept them encoded (the round loop encodes each
    # record once): a checkpoint after round R then encodes one record, not R, and a long run's checkpoints
    # stop costing time in proportion to the rounds so far
    rounds_json: list[str] | None = field(default=None, repr=False, compare=False)

    def task_problem(self, task: dict) -> str | None:
        """Why this checkpoint cannot continue a run serving ``task`` (Task.to_dict()), or None."""
        live = json.loads(json.dumps(json_safe(task)))  # as this file stores it
        if not self.task or self.task == live:
            return None
        changed = sorted(k for k in set(self.task) | set(live) if self.task.get(k) != live.get(k))
        return (f"the checkpoint was made for another task (it differs in {', '.join(changed)}): resume with the "
                "settings and data the run started with")

    def to_bytes(self) -> bytes:
        """One .npz: every array under its own key, the rest as a JSON document (no pickle anywhere)."""
        arrays: dict[str, np.ndarray] = {}
        encoded = self.rounds_json
        if encoded is None or len(encoded) != len(self.rounds):
            encoded = [round_json(r) for r in self.rounds]
        arrays[_ROUNDS_KEY] = np.frombuffer(("[" + ",".join(encoded) + "]").encode(), np.uint8)
        doc = {"format": FORMAT, "version": VERSION, "round": self.round, "run_id": self.run_id,
               "rng_state": self.rng_state, "task": self.task,
               "model": _pack(self.model, "model", arrays), "strategy": _pack(self.strategy, "strategy", arrays),
               "best": _pack(self.best, "best", arrays)}
        arrays[_META_KEY] = np.frombuffer(json.dumps(doc, allow_nan=True, default=_json_default).encode(), np.uint8)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "Checkpoint":
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                arrays = {key: npz[key] for key in npz.files}
            doc = json.loads(arrays.pop(_META_KEY).tobytes().decode())
            if _ROUNDS_KEY in arrays:
                doc["rounds"] = json.loads(arrays.pop(_ROUNDS_KEY).tobytes().decode())
        except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
            raise CheckpointError(f"the checkpoint cannot be read ({exc})") from None
        if doc.get("format") != FORMAT or doc.get("version") != VERSION:
            raise CheckpointError(f"not a version {VERSION} checkpoint of this workbench")
        return cls(round=int(doc["round"]), rounds=doc["rounds"], rng_state=doc["rng_state"],
                   model=_unpack(doc["model"], arrays), strategy=_unpack(doc["strategy"], arrays),
                   best=_unpack(doc["best"], arrays), task=doc.get("task") or {}, run_id=doc.get("run_id") or "")


def round_json(record: dict) -> str:
    """One round's record as a checkpoint stores it."""
    return json.dumps(record, allow_nan=True, default=_json_default)


def _pack(value: Any, path: str, arrays: dict[str, np.ndarray]) -> Any:
    """``value`` as JSON, each numpy array (or bytes) replaced by a reference to its key in ``arrays``."""
    if isinstance(value, np.ndarray):
        arrays[path] = value
        return {_ARRAY_TAG: path}
    if isinstance(value, (bytes, bytearray)):
        arrays[path] = np.frombuffer(bytes(value), np.uint8)
        return {_ARRAY_TAG: path, "bytes": True}
    if isinstance(value, dict):
        return {str(k): _pack(v, f"{path}/{k}", arrays) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_pack(v, f"{path}/{i}", arrays) for i, v in enumerate(value)]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _unpack(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(value, dict):
        if _ARRAY_TAG in value:
            try:
                array = arrays[value[_ARRAY_TAG]]
            except KeyError:
                raise CheckpointError(f"the checkpoint lacks the array {value[_ARRAY_TAG]!r}") from None
            return array.tobytes() if value.get("bytes") else array
        return {k: _unpack(v, arrays) for k, v in value.items()}
    if isinstance(value, list):
        return [_unpack(v, arrays) for v in value]
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} cannot go in a checkpoint")
