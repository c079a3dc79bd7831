"""What the server holds between rounds: global parameter arrays, or a combined ensemble.

Two kinds, one interface, chosen by the strategy's payload (never by a model
or rule name): a ``ParameterModel`` sends its arrays in ``fit``, checks the
arrays that come back against the task's shapes and lets the strategy turn
them into the next arrays; an ``EnsembleModel`` asks for whole fitted models
(skops blobs, loaded through the allow-list) and lets the strategy combine
them. Both end as one scikit-learn estimator (``estimator``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fl.federation.task import Task
from fl.learning.models import ModelAdapter, NamedArrays, get_model
from fl.learning.strategies import ModelStrategy, ParameterStrategy, Payload, Strategy
from fl.wire import FitResult, ProtocolError, blobs

Accepted = list[tuple[str, Any, int]]  # (client id, payload, samples), sorted by client id


class GlobalModel:
    """The server's model between rounds."""

    estimator: Any = None
    # Whether sending it to every client to score costs little next to a round: parameter arrays do; an
    # ensemble of N fitted models is N times a model, loaded N times.
    cheap_to_send: bool = True

    def fit_payload(self) -> dict[str, Any]:
        """Extra fields of the ``fit`` message (the global parameters, if any)."""
        return {}

    def evaluate_payload(self) -> dict[str, Any]:
        """The fields of an ``evaluate`` message that carry the global model."""
        raise NotImplementedError

    def accept(self, msg: FitResult) -> tuple[Any, str | None]:
        """(what to aggregate, None) or (None, why this result cannot be merged)."""
        raise NotImplementedError

    def update(self, accepted: Accepted) -> None:
        raise NotImplementedError

    def parameters(self) -> list[np.ndarray] | None:
        """The global parameter arrays (None for a combined ensemble)."""
        return None

    def arrays_named(self) -> NamedArrays | None:
        return None

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps of the model: ``{"arrays": ...}``, ``{"blob": ...}``, or {} before any."""
        return {}

    def estimator_of(self, state: dict[str, Any]) -> Any:
        """The estimator a ``state()`` describes (None for an empty one)."""
        return None

    def load_state(self, state: dict[str, Any]) -> None:
        """Become the model of a checkpoint (a resumed run)."""
        self.estimator = self.estimator_of(state)


class ParameterModel(GlobalModel):
    def __init__(self, strategy: ParameterStrategy, task: Task, model: ModelAdapter, seed: int):
        self.strategy = strategy
        self.task = task
        self.model = model
        self.classes = task.classes_array
        self.arrays: NamedArrays | None = model.initial_parameters(task.model_params, self.classes, task.n_features,
                                                                   seed)
        self.expected = model.expected_shapes(task.model_params, self.classes, task.n_features)
        strategy.bind(self.expected)

    def fit_payload(self) -> dict[str, Any]:
        """The global arrays, then any the strategy sends beside them (SCAFFOLD's control variate)."""
        return {"params": list(self.arrays or []) + self.strategy.outgoing_arrays()}

    def evaluate_payload(self) -> dict[str, Any]:
        return {"params": self.arrays}

    @property
    def _current(self) -> list[np.ndarray] | None:
        return [a for _, a in self.arrays] if self.arrays is not None else None

    def parameters(self) -> list[np.ndarray] | None:
        return self._current

    def arrays_named(self) -> NamedArrays | None:
        return self.arrays

    def state(self) -> dict[str, Any]:
        if self.estimator is None or self.arrays is None:
            return {}
        return {"arrays": [[name, np.asarray(a)] for name, a in self.arrays]}

    def estimator_of(self, state: dict[str, Any]) -> Any:
        if not state.get("arrays"):
            return None
        return self.model.global_estimator(self.task.model_params, self._named(state), self.classes,
                                           self.task.n_features)

    def load_state(self, state: dict[str, Any]) -> None:
        if state.get("arrays"):
            arrays = self._named(state)
            got = [(name, tuple(a.shape)) for name, a in arrays]
            if got != self.expected:
                raise ProtocolError("shape", f"the checkpoint holds arrays {got}; this task needs {self.expected}")
            self.arrays = arrays
        super().load_state(state)

    @staticmethod
    def _named(state: dict[str, Any]) -> NamedArrays:
        return [(str(name), np.asarray(a)) for name, a in state["arrays"]]  # dtypes as saved: bit-exact

    def accept(self, msg: FitResult) -> tuple[Any, str | None]:
        if msg.metrics.get("dropped_out"):
            return None, "dropped out of this round"
        if msg.params is None:
            return None, "sent no parameter arrays"
        got = [(name, tuple(arr.shape)) for name, arr in msg.params]
        expected = self.expected + self.strategy.incoming_shapes()
        if got != expected:
            return None, f"wrong arrays {got}, expected {expected}"
        if not all(np.all(np.isfinite(arr)) for _, arr in msg.params):
            return None, "parameters are not finite"
        if msg.n_samples < 1:
            return None, "reported no samples"
        arrays = [a for _, a in msg.params]
        problem = self.strategy.check_update(arrays, self._current)
        return (None, problem) if problem else (arrays, None)

    def update(self, accepted: Accepted) -> None:
        self.strategy.accepted([cid for cid, _, _ in accepted])
        merged = self.strategy.aggregate([(arrays, n) for _, arrays, n in accepted], self._current)
        self.arrays = list(zip([name for name, _ in self.expected], merged))
        self.estimator = self.model.global_estimator(self.task.model_params, self.arrays, self.classes,
                                                     self.task.n_features)


class EnsembleModel(GlobalModel):
    cheap_to_send = False

    def __init__(self, strategy: ModelStrategy, task: Task, validation: tuple[np.ndarray, np.ndarray] | None):
        self.strategy = strategy
        self.task = task
        self.classes = task.classes_array
        self.validation = validation

    def evaluate_payload(self) -> dict[str, Any]:
        return {"blob": blobs.dump_model(self.estimator)}

    def state(self) -> dict[str, Any]:
        return {} if self.estimator is None else {"blob": blobs.dump_model(self.estimator)}

    def estimator_of(self, state: dict[str, Any]) -> Any:
        return blobs.load_model(state["blob"]) if state.get("blob") else None

    def accept(self, msg: FitResult) -> tuple[Any, str | None]:
        if msg.metrics.get("dropped_out"):
            return None, "dropped out of this round"
        if msg.blob is None:
            return None, "sent no model blob"
        try:
            model = blobs.load_model(msg.blob)
        except ProtocolError as exc:
            return None, str(exc)
        classes = np.asarray(getattr(model, "classes_", []))
        scores = hasattr(model, "predict_proba") or hasattr(model, "decision_function")
        if not hasattr(model, "predict") or not scores or not np.all(np.isin(classes, self.classes)):
            return None, "model blob is not a classifier over the task's classes (with probabilities or margins)"
        if getattr(model, "n_features_in_", self.task.n_features) != self.task.n_features:
            return None, "model blob expects a different number of features"
        return model, None

    def update(self, accepted: Accepted) -> None:
        self.estimator = self.strategy.combine([m for _, m, _ in accepted], [n for _, _, n in accepted],
                                               self.classes, self.validation)


def make_global_model(strategy: Strategy, task: Task, seed: int,
                      validation: tuple[np.ndarray, np.ndarray] | None) -> GlobalModel:
    """The keeper the strategy's payload calls for."""
    if strategy.payload is Payload.MODEL:
        assert isinstance(strategy, ModelStrategy)
        return EnsembleModel(strategy, task, validation)
    assert isinstance(strategy, ParameterStrategy)
    return ParameterModel(strategy, task, get_model(task.model), seed)
