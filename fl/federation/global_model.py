"""What the server holds between rounds: global parameter arrays, or a combined ensemble.

Two kinds, one interface, chosen by the strategy's payload (never by a model
or rule name): a ``ParameterModel`` sends its arrays in ``fit``, checks the
arrays that come back against the task's shapes and lets the strategy turn
them into the next arrays; an ``EnsembleModel`` asks for whole fitted models
(skops blobs, loaded through the allow-list) and lets the strategy combine
them. Both end as one scikit-learn estimator (``estimator``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fl.federation.task import Task
from fl.learning.models import ModelAdapter, NamedArrays, get_model
from fl.learning.strategies import ModelStrategy, ParameterStrategy, Payload, Strategy
from fl.wire import FitResult, ProtocolError, blobs

# One site's histograms of one step (G and H, float64) stay under this: a larger level is asked in parts, so a
# fit_result stays far below the wire's 256 MiB message limit and the server holds at most this per site.
HISTOGRAM_BYTES_PER_STEP = 16 << 20

Accepted = list[tuple[str, Any, int]]  # (client id, payload, samples), sorted by client id

# Under secure aggregation, each value of a client's change of the global parameters is clipped to ±this before
# it is quantised (a change, not the parameters: far smaller, so the clipping bites less; docs/strategies.md).
SECAGG_PARAMETER_CLIP = 8.0


@dataclass(frozen=True)
class SumSpec:
    """What one step of a keeper sums, for secure aggregation (fl/federation/secure_sum.py) to mask."""

    shapes: tuple[tuple[int, ...], ...]  # the arrays each client sends, in order (flattened together)
    clipping_range: float  # each value is clipped to [-c, c] before quantisation
    delta_arrays: int  # the first this many are sent as a change from the global arrays of the fit
    weight: str  # "samples": each client's arrays times its rows; "one": as they are

    @property
    def dimension(self) -> int:
        return int(sum(int(np.prod(s)) for s in self.shapes))


class GlobalModel:
    """The server's model between rounds."""

    estimator: Any = None
    # Whether sending it to every client to score costs little next to a round: parameter arrays do; an
    # ensemble of N fitted models is N times a model, loaded N times.
    cheap_to_send: bool = True
    # Whether a round is one fit exchange from the global model as it stands after the previous round: then
    # the next round's fit can go out while this round is evaluated (the round loop overlaps the two).
    one_step_rounds: bool = False

    def step_config(self) -> dict[str, Any]:
        """Keys the next ``fit`` adds to its config: what this step of the round asks (several steps a round:
        boosted trees' sketch and levels); {} for a model of one step a round."""
        return {}

    @property
    def round_complete(self) -> bool:
        """Whether the round's last step has been aggregated (a one-step model: after every ``update``)."""
        return True

    @property
    def measurable(self) -> bool:
        """Whether what clients send is an update of the global parameters (update scrutiny measures it)."""
        return self.parameters() is not None

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
    one_step_rounds = True

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
        self._set(self.strategy.aggregate([(arrays, n) for _, arrays, n in accepted], self._current))

    def _set(self, merged: list[np.ndarray]) -> None:
        self.arrays = list(zip([name for name, _ in self.expected], merged))
        self.estimator = self.model.global_estimator(self.task.model_params, self.arrays, self.classes,
                                                     self.task.n_features)

    def sum_spec(self, rows: dict[str, int]) -> SumSpec:
        """Secure aggregation: the model's arrays as a change from the global ones, then the strategy's own."""
        shapes = tuple(tuple(shape) for _, shape in self.expected + self.strategy.incoming_shapes())
        delta = len(self.expected) if self.arrays is not None else 0
        return SumSpec(shapes, SECAGG_PARAMETER_CLIP, delta, self.strategy.secagg_weight)

    def update_from_sum(self, total: list[np.ndarray], weight: int, count: int) -> None:
        """The next global arrays from the clients' sum alone: Σ w_k (x_k − x) + W x = Σ w_k x_k."""
        current, n = self._current, len(self.expected)
        if current is not None:
            total = [t + weight * np.asarray(c, dtype=np.float64) for t, c in zip(total[:n], current)] + total[n:]
        self.strategy.accepted([])
        self._set(self.strategy.aggregate_sum(total, weight, count, current))


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


class BoostedTreesModel(GlobalModel):
    """Boosted trees grown here from the sites' summed statistics, a few steps a round (fl/learning/trees.py).

    Round 1 opens with a ``sketch`` step (each site's quantile sketch of every
    feature, merged into the bin edges); then each round grows one tree per
    output, a ``level`` step per depth: the fit carries the edges, the trees
    so far, the round's trees as grown yet and the frontier (the nodes whose
    histograms are asked); each site answers with its ``hist_g``/``hist_h``;
    their sum splits the frontier. A step's results are checked against what
    an honest site can send (shapes, finite values, |g| ≤ 1 and 0 ≤ h ≤ 1/4 a
    row, the same total over every feature's bins).

    A level whose histograms would pass ``HISTOGRAM_BYTES_PER_STEP`` (G and H
    of one site's answer) is asked in parts: each step carries a slice of the
    frontier, the sums of the parts are joined, then the level is split. A
    100-feature, 256-bin level of 32 nodes (13 MB) is one step; ten classes
    at depth 8 (1,280 nodes, 526 MB) are 33.
    """

    def __init__(self, strategy: Strategy, task: Task, model: ModelAdapter):
        from fl.learning import trees as T

        self.T = T
        self.strategy = strategy
        self.task = task
        self.model = model
        self.classes = task.classes_array
        self.params = {**model.defaults, **(task.model_params or {})}
        self.settings = model.build(self.params, 0).settings()
        self.n_out = T.n_outputs(len(self.classes))
        self.edges: Any = None  # (features, edges) NaN-padded, once sketched
        self.forest = T.Forest.empty(self.settings.max_depth)
        self.grower: Any = None
        self.step = 0  # counts every step of the run: a result names the step it answers
        self.complete = True
        self.parts: list[tuple[np.ndarray, np.ndarray]] = []  # the level's summed parts so far

    def _part(self) -> slice:
        """The slice of the frontier this step asks for: as many nodes as fit the per-step budget."""
        width = self.T.max_bin_count(self.T.edges_list(self.edges)) + 1
        per_node = self.task.n_features * width * 8 * 2
        size = max(1, HISTOGRAM_BYTES_PER_STEP // per_node)
        start = sum(len(G) for G, _ in self.parts)
        return slice(start, min(start + size, self.grower.frontier().size))

    # ------------------------------------------------------------------ steps
    def step_config(self) -> dict[str, Any]:
        self.step += 1
        if self.edges is None:
            return {"statistics": "sketch", "step": self.step}
        self._ensure_grower()
        part = self._part()
        return {"statistics": "level", "depth": self.grower.depth, "step": self.step,
                "nodes": [part.start, part.stop]}

    @property
    def round_complete(self) -> bool:
        return self.complete

    def fit_payload(self) -> dict[str, Any]:
        self.complete = False
        if self.edges is None:
            return {}
        frontier, part = self.grower.frontier(), self._part()
        growing = [("round_" + n, a) for n, a in self.grower.trees().named()]
        return {"params": [("edges", self.edges), *self.forest.named(), *growing,
                           ("frontier_tree", frontier.tree[part].astype(np.int32)),
                           ("frontier_node", frontier.node[part].astype(np.int32))]}

    def evaluate_payload(self) -> dict[str, Any]:
        return {"params": self.arrays_of()}

    def arrays_of(self) -> NamedArrays:
        return [("edges", self.edges), *self.forest.named()]

    # ------------------------------------------------------------------ results
    def accept(self, msg: FitResult) -> tuple[Any, str | None]:
        if msg.metrics.get("dropped_out"):
            return None, "dropped out of this round"
        if msg.metrics.get("step") != self.step:
            return None, "answered another step of the round (too late, or a client that does not grow trees)"
        arrays = dict(msg.params or [])
        n, f = msg.n_samples, self.task.n_features
        if self.edges is None:
            return self._check(arrays, {"sketch": (f, self.T.SKETCH_POINTS), "sketch_count": (f,)},
                               lambda a: np.all(a["sketch_count"] <= n) and np.all(a["sketch_count"] >= 0)
                               and np.all(np.isfinite(a["sketch"]) | (a["sketch_count"][:, None] == 0)),
                               "a quantile sketch of more values than its rows, or with gaps")
        width = self.T.max_bin_count(self.T.edges_list(self.edges)) + 1
        part = self._part()
        shape = (part.stop - part.start, f, width)
        return self._check(arrays, {"hist_g": shape, "hist_h": shape}, lambda a: self._honest(a, n),
                           f"histograms no site of {n} rows can hold")

    def _check(self, arrays: dict, shapes: dict[str, tuple], honest: Any, why: str) -> tuple[Any, str | None]:
        got = {k: tuple(np.shape(v)) for k, v in arrays.items()}
        if got != shapes:
            return None, f"wrong arrays {sorted(got.items())}, expected {sorted(shapes.items())}"
        values = [np.asarray(arrays[k], dtype=np.float64) for k in shapes]
        if not honest(dict(zip(shapes, values))):
            return None, why
        return values, None

    @staticmethod
    def _honest(a: dict, n: int) -> bool:
        G, H = a["hist_g"], a["hist_h"]
        if not (np.isfinite(G).all() and np.isfinite(H).all()):
            return False
        if np.abs(G).sum(axis=2).max(initial=0) > n * (1 + 1e-9) or H.min(initial=0) < 0 \
                or H.sum(axis=2).max(initial=0) > n / 4 * (1 + 1e-9):
            return False
        totals = H.sum(axis=2)  # every row is in one bin of every feature: the same total for each feature
        return bool(np.allclose(totals, totals[:, :1], rtol=1e-9, atol=1e-9))

    def _ensure_grower(self) -> None:
        if self.grower is None:
            self.grower = self.T.TreeGrower(self.settings, self.n_out)

    def sum_spec(self, rows: dict[str, int]) -> SumSpec | None:
        """Secure aggregation: a level's G and H are sums (|G| ≤ rows, 0 ≤ H ≤ rows/4 per bin); the
        sketch is not, and goes in the clear."""
        if self.edges is None:
            return None
        self._ensure_grower()
        part = self._part()
        width = self.T.max_bin_count(self.T.edges_list(self.edges)) + 1
        shape = (part.stop - part.start, self.task.n_features, width)
        return SumSpec((shape, shape), float(max(rows.values(), default=1) or 1), 0, self.strategy.secagg_weight)

    def update_from_sum(self, total: list[np.ndarray], weight: int, count: int) -> None:
        self._take_sums(np.asarray(total[0]), np.asarray(total[1]))

    def update(self, accepted: Accepted) -> None:
        if self.edges is None:  # the sketches are merged (a mixture of quantile functions), not summed
            sketches = [(arrays[0], arrays[1]) for _, arrays, _ in accepted]
            self.edges = self.T.edges_array(self.T.merge_sketches(sketches, int(self.params["max_bins"])))
            self.complete = False  # the round goes on with its first level
            return
        G, H = self.strategy.aggregate([(arrays, n) for _, arrays, n in accepted])
        self._take_sums(G, H)

    def _take_sums(self, G: np.ndarray, H: np.ndarray) -> None:
        self.parts.append((G, H))
        if self._part().start < self.grower.frontier().size:  # more of this level to ask for
            return
        G, H = (np.concatenate(sums) for sums in zip(*self.parts))
        self.parts = []
        self.grower.grow(G, H)
        if self.grower.done:
            self.forest = self.forest.add(self.grower.trees())
            self.grower = None
            self.complete = True
            self.estimator = self._estimator()

    def _estimator(self) -> Any:
        return self.model.global_estimator(self.params, self.arrays_of(), self.classes, self.task.n_features)

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> dict[str, Any]:
        if self.edges is None:
            return {}
        return {"trees": [[name, np.asarray(a)] for name, a in self.arrays_of()]}

    def estimator_of(self, state: dict[str, Any]) -> Any:
        if not state.get("trees"):
            return None
        return self.model.global_estimator(self.params, [(str(n), np.asarray(a)) for n, a in state["trees"]],
                                           self.classes, self.task.n_features)

    def load_state(self, state: dict[str, Any]) -> None:
        if state.get("trees"):
            arrays = {str(n): np.asarray(a) for n, a in state["trees"]}
            self.edges = arrays["edges"]
            self.forest = self.T.Forest.from_named(arrays)
        super().load_state(state)


def make_global_model(strategy: Strategy, task: Task, seed: int,
                      validation: tuple[np.ndarray, np.ndarray] | None) -> GlobalModel:
    """The keeper the strategy's payload calls for."""
    if strategy.payload is Payload.MODEL:
        assert isinstance(strategy, ModelStrategy)
        return EnsembleModel(strategy, task, validation)
    if strategy.payload is Payload.STATISTICS:
        return BoostedTreesModel(strategy, task, get_model(task.model))
    assert isinstance(strategy, ParameterStrategy)
    return ParameterModel(strategy, task, get_model(task.model), seed)
