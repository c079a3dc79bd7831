"""The task a server hands every client in `welcome`: model, shapes, classes.

It is the one source of truth for global shapes: clients build their models
from it, never from the labels they happen to hold.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from fl.data.labels import text_labels
from fl.learning.models import get_model


@dataclass
class Task:
    model: str
    model_params: dict
    n_features: int
    classes: list
    feature_names: list[str] | None = None
    preprocess: dict | None = None
    local_test_size: float = 0.0  # share of its rows each client keeps out of training to score the global model
    data_split: dict | None = None  # built-in data: what decides the rows the server holds out (clients check it)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model": self.model,
            "model_params": _jsonable(self.model_params),
            "n_features": int(self.n_features),
            "classes": [_plain(c) for c in self.classes],
        }
        if self.feature_names is not None:
            out["feature_names"] = list(self.feature_names)
        if self.preprocess is not None:
            out["preprocess"] = self.preprocess
        if self.local_test_size:
            out["local_test_size"] = float(self.local_test_size)
        if self.data_split is not None:
            out["data_split"] = dict(self.data_split)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Task":
        """Validate a task received from a server; ValueError says what is wrong."""
        try:
            task = cls(
                model=str(data["model"]),
                model_params=dict(data.get("model_params") or {}),
                n_features=int(data["n_features"]),
                classes=list(data["classes"]),
                feature_names=list(data["feature_names"]) if data.get("feature_names") is not None else None,
                preprocess=data.get("preprocess"),
                local_test_size=float(data.get("local_test_size") or 0.0),
                data_split=dict(data["data_split"]) if isinstance(data.get("data_split"), dict) else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed task: {exc}") from None
        get_model(task.model)
        if task.n_features < 1 or len(task.classes) < 2:
            raise ValueError("task needs n_features >= 1 and at least two classes")
        if not 0.0 <= task.local_test_size < 1.0:
            raise ValueError("task local_test_size must be at least 0 and below 1")
        if task.feature_names is not None and len(task.feature_names) != task.n_features:
            raise ValueError("task feature_names and n_features disagree")
        return task

    @property
    def classes_array(self) -> np.ndarray:
        """The classes as numpy holds labels: int64 when all are integers, an object array when all are text.

        Never a fixed-width string array: that one is as wide as the longest
        class, and so is every label array numpy compares with it (a row's
        label cast to that width), on every client.
        """
        if all(type(c) is int or isinstance(c, np.integer) for c in self.classes):
            return np.asarray(self.classes, dtype=np.int64)
        if all(isinstance(c, str) for c in self.classes):
            return text_labels(self.classes)
        return np.asarray(self.classes)

    @property
    def standardize(self) -> dict | None:
        return (self.preprocess or {}).get("standardize")

    @property
    def target_edges(self) -> list[float] | None:
        """Inner edges of the quantile classes of a binned numeric label (clients bin theirs alike)."""
        bins = (self.preprocess or {}).get("target_bins")
        return [float(e) for e in bins["edges"]] if isinstance(bins, dict) and bins.get("edges") else None


def client_seed(run_seed: int, client_id: str) -> int:
    """The seed of one client's local randomness (its model, its held-out rows): run seed and id."""
    return (run_seed + zlib.crc32(client_id.encode())) % (2**31)


def make_preprocess(standardize: dict | None, target_edges: list[float] | None) -> dict | None:
    """The task's preprocessing: global scaling statistics and the label's quantile edges, when there are any."""
    out: dict[str, Any] = {}
    if standardize is not None:
        out["standardize"] = standardize
    if target_edges:
        out["target_bins"] = {"edges": [float(e) for e in target_edges]}
    return out or None


def _plain(value: Any) -> Any:
    """numpy scalars -> plain Python, for JSON."""
    return value.item() if isinstance(value, np.generic) else value


def _jsonable(params: dict) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else _plain(v)) for k, v in params.items()}
