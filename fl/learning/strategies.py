"""Strategies: one small class per aggregation rule, around the pure functions of aggregation.py.

As in Flower, a strategy holds its parameters and says what it is: its
name and label, whether clients send parameter arrays or whole fitted models
(``payload``), whether it is a (weighted) mean of the updates (``is_mean``,
what differential privacy's noise calibration assumes), which config fields
it reads (``knobs``), which models it can serve (``refuses``) and how it
aggregates. Subclasses register themselves by ``name``; ``STRATEGIES`` is
the registry the config, the CLI and the dashboard read their choices from.
Server optimisers and differential privacy wrap a strategy
(fl/learning/wrappers.py); the round loop only calls the interface below.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar, Sequence

import numpy as np

from fl.errors import ChoiceError
from fl.learning.aggregation import (
    Arrays, Results, fedavg, krum, median, scaffold, stacking, summed, trimmed_mean, voting,
)
from fl.learning.models import ModelAdapter, NamedArrays

STRATEGIES: dict[str, type["Strategy"]] = {}


class Payload(StrEnum):
    """What clients send back from ``fit``: parameter arrays, or a whole fitted model (skops blob)."""

    PARAMETERS = "parameters"
    MODEL = "model"
    STATISTICS = "statistics"  # sums per step (histograms); the server grows the model itself


class Strategy:
    """An aggregation rule. The constructor stores parameters only."""

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    payload: ClassVar[Payload] = Payload.PARAMETERS
    is_mean: ClassVar[bool] = False
    knobs: ClassVar[tuple[str, ...]] = ()
    needs_validation: ClassVar[bool] = False  # the server's validation split (stacking's meta-learner)
    dp_refusal: ClassVar[str | None] = None  # why differential privacy cannot wrap this rule, beyond not being a mean
    # Secure aggregation hands the server only the sum of what the clients send: a rule that needs each one
    # says why here; a sum-based rule says what each client's arrays are weighted by ("samples" or "one").
    secagg_refusal: ClassVar[str | None] = ("it combines the individual updates, which secure aggregation "
                                            "hides from the server (only their sum is revealed)")
    secagg_weight: ClassVar[str] = "samples"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("name"):
            STRATEGIES[cls.name] = cls

    @classmethod
    def from_config(cls, config: Any) -> "Strategy":
        """Built from the config fields it names in ``knobs``."""
        return cls(**{knob: getattr(config, knob) for knob in cls.knobs})

    @classmethod
    def refuses(cls, model: ModelAdapter) -> str | None:
        """Why this rule cannot serve ``model`` (a sentence), or None when it can."""
        if model.statistics and cls.payload is not Payload.STATISTICS:
            return (f"{model.name} grows its trees on the server from the sites' summed histograms: its aggregation "
                    "is 'histograms' (chosen for it)")
        if cls.payload is Payload.STATISTICS and not model.statistics:
            return f"summing histograms grows boosted trees (hist_gbdt); {model.name} is trained otherwise"
        if cls.payload is Payload.PARAMETERS and not model.averageable:
            return (f"{model.name} cannot be averaged (its fitted trees or neighbours have no common parameter "
                    "shape); use aggregation 'stacking' or 'voting' instead")
        return None

    def problem(self, n_clients: int) -> str | None:
        """Why this rule cannot aggregate ``n_clients`` results (a sentence), or None."""
        return None

    @property
    def one_shot(self) -> bool:
        """Whole models trained from scratch: one round says it all."""
        return self.payload is Payload.MODEL

    def fit_config(self) -> dict[str, Any]:
        """Keys this strategy adds to every ``fit`` message's config."""
        return {"return": str(self.payload)}

    def begin_round(self, round_no: int, pool_rows: int) -> None:
        """Called once per round before ``fit`` goes out; ``pool_rows``: the training rows of every connected
        client (sampled or not), the N of the pooled objective."""

    def end_round(self, n_available: int, n_sampled: int) -> None:
        """Called once per round after aggregation (privacy accounting counts rounds)."""

    def round_metrics(self) -> dict[str, Any]:
        """Numbers this strategy reports in each round's record."""
        return {}

    def state(self) -> dict[str, Any]:
        """What this strategy carries from one round to the next (JSON values and numpy arrays), for a
        checkpoint; the rules themselves are stateless."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Take back what ``state`` returned (a resumed run)."""


class ParameterStrategy(Strategy):
    """Clients send parameter arrays; the rule turns them into the next global arrays."""

    def aggregate(self, results: Results, current: Arrays | None) -> Arrays:
        raise NotImplementedError

    def check_update(self, arrays: Arrays, current: Arrays | None) -> str | None:
        """Why one client's arrays cannot be merged under this strategy, or None."""
        return None

    def bind(self, model_shapes: list[tuple[str, tuple]]) -> None:
        """The names and shapes of the model's arrays, told once the task is known (before round 1)."""

    def outgoing_arrays(self) -> NamedArrays:
        """Arrays sent in every ``fit`` after the global model's (SCAFFOLD's control variate)."""
        return []

    def incoming_shapes(self) -> list[tuple[str, tuple]]:
        """Arrays every ``fit_result`` carries after the model's: names and shapes."""
        return []

    def accepted(self, client_ids: list[str]) -> None:
        """The clients whose results the next ``aggregate`` gets, in their order."""

    def aggregate_sum(self, total: Arrays, weight: float, count: int, current: Arrays | None) -> Arrays:
        """The next global arrays from the sum alone of ``count`` clients' arrays, each multiplied by its
        ``secagg_weight`` (``weight``: the sum of those), as secure aggregation reveals it."""
        raise NotImplementedError(f"{self.label} cannot aggregate from a sum")


class RobustRule(ParameterStrategy):
    """Robust rules order coordinates or compare updates: they are not a mean of clipped updates."""

    @classmethod
    def refuses(cls, model: ModelAdapter) -> str | None:
        if model.exact_merge:
            return f"{model.label} statistics are merged exactly; {cls.label} does not apply to them"
        return super().refuses(model)


class FedAvg(ParameterStrategy):
    name = "fedavg"
    label = "FedAvg: sample-weighted average"
    is_mean = True
    secagg_refusal = None

    def aggregate(self, results: Results, current: Arrays | None) -> Arrays:
        return fedavg(results)

    def aggregate_sum(self, total: Arrays, weight: float, count: int, current: Arrays | None) -> Arrays:
        return [np.asarray(t, dtype=np.float64) / weight for t in total] if weight > 0 else \
            [np.asarray(t, dtype=np.float64) / count for t in total]


CONTROL_PREFIX = "c:"  # fit: the server's control variate, after the model's arrays (docs/protocol.md, SCAFFOLD)
CHANGE_PREFIX = "dc:"  # fit_result: the client's change of control variate, after the model's arrays


class Scaffold(ParameterStrategy):
    """SCAFFOLD (Karimireddy et al., ICML 2020): FedAvg whose clients correct every local step for drift.

    The server keeps a control variate c (the clients' mean gradient) and
    sends it in every ``fit`` beside the model; client i keeps its own c_i
    (its local gradient at the global model it last trained from) and adds
    c − c_i to the gradient of every local step, so a site's steps follow
    the federation's direction rather than only its own data's. It returns
    the model and Δc_i; the server averages the models (FedAvg) and adds
    Σ n_i Δc_i / N to c (fl/learning/aggregation.py ``scaffold``). The
    server also keeps every client's c_i (the sum of its Δc_i): a resumed
    simulation hands the clients theirs back from the checkpoint.
    """

    name = "scaffold"
    label = "SCAFFOLD: FedAvg with drift-correcting control variates"
    secagg_refusal = None
    dp_refusal = ("SCAFFOLD's control variates travel unclipped and without noise beside each update, so "
                  "differential privacy's guarantee would not cover them: use fedavg (or FedProx) with it")

    def __init__(self) -> None:
        self.shapes: list[tuple[str, tuple]] = []  # the model's arrays (bind)
        self.control: Arrays | None = None  # c, zeros until the first aggregate
        self.client_variates: dict[str, Arrays] = {}  # c_i per client: what each has sent, summed
        self.pool_rows = 0
        self._ids: list[str] = []

    @classmethod
    def refuses(cls, model: ModelAdapter) -> str | None:
        if not (model.averageable and model.iterative and model.has_gradient) or model.exact_merge:
            return (f"SCAFFOLD corrects the gradient steps of local training; {model.label} is not trained in "
                    "gradient steps from the global weights (use it with logreg, sgd, linear_svm or mlp)")
        return super().refuses(model)

    def fit_config(self) -> dict[str, Any]:
        return {**super().fit_config(), "control_variates": True}

    def begin_round(self, round_no: int, pool_rows: int) -> None:
        self.pool_rows = pool_rows

    def bind(self, model_shapes: list[tuple[str, tuple]]) -> None:
        self.shapes = list(model_shapes)
        if self.control is None:
            self.control = [np.zeros(shape) for _, shape in self.shapes]

    def outgoing_arrays(self) -> NamedArrays:
        return [(f"{CONTROL_PREFIX}{name}", c) for (name, _), c in zip(self.shapes, self.control or [])]

    def incoming_shapes(self) -> list[tuple[str, tuple]]:
        return [(f"{CHANGE_PREFIX}{name}", shape) for name, shape in self.shapes]

    def accepted(self, client_ids: list[str]) -> None:
        self._ids = list(client_ids)

    def aggregate(self, results: Results, current: Arrays | None) -> Arrays:
        n_model = len(results[0][0]) // 2
        if self.control is None:  # not bound: a direct call with results alone
            self.control = [np.zeros_like(np.asarray(a, dtype=np.float64)) for a in results[0][0][:n_model]]
        merged, self.control = scaffold(results, n_model, self.control, self.pool_rows)
        for cid, (arrays, _) in zip(self._ids, results):
            own = self.client_variates.get(cid) or [np.zeros_like(c) for c in self.control]
            self.client_variates[cid] = [v + np.asarray(d, dtype=np.float64) for v, d in zip(own, arrays[n_model:])]
        return merged

    def aggregate_sum(self, total: Arrays, weight: float, count: int, current: Arrays | None) -> Arrays:
        """From Σ n_i w_i and Σ n_i Δc_i alone: the same step as ``aggregate`` (the server no longer learns any
        client's c_i: a resumed simulation's clients keep theirs only while their process lives)."""
        n_model = len(total) // 2
        if self.control is None:
            self.control = [np.zeros_like(np.asarray(t, dtype=np.float64)) for t in total[:n_model]]
        merged = [np.asarray(t, dtype=np.float64) / weight for t in total[:n_model]]
        scale = float(max(self.pool_rows, weight))
        self.control = [c + np.asarray(d, dtype=np.float64) / scale for c, d in zip(self.control, total[n_model:])]
        return merged

    def state(self) -> dict[str, Any]:
        if self.control is None:
            return {}
        return {"control": list(self.control), "clients": {cid: list(v) for cid, v in self.client_variates.items()}}

    @staticmethod
    def variates_in(state: dict[str, Any]) -> dict[str, Arrays]:
        """Every client's c_i in a strategy's checkpointed state (SCAFFOLD's own, or wrapped: ``inner``)."""
        while state and "clients" not in state:
            state = state.get("inner") or {}
        return {cid: [np.asarray(a, dtype=np.float64) for a in v] for cid, v in (state.get("clients") or {}).items()}

    def load_state(self, state: dict[str, Any]) -> None:
        if state.get("control") is not None:
            self.control = [np.asarray(c, dtype=np.float64) for c in state["control"]]
            self.client_variates = {cid: [np.asarray(a, dtype=np.float64) for a in v]
                                    for cid, v in (state.get("clients") or {}).items()}


class Median(RobustRule):
    name = "median"
    label = "Coordinate-wise median (robust)"

    def aggregate(self, results: Results, current: Arrays | None) -> Arrays:
        return median(results)


class TrimmedMean(RobustRule):
    name = "trimmed_mean"
    label = "Trimmed mean (robust)"
    knobs = ("trim_beta",)

    def __init__(self, trim_beta: float = 0.2):
        self.trim_beta = trim_beta

    def problem(self, n_clients: int) -> str | None:
        if 2 * int(self.trim_beta * n_clients) >= n_clients:
            return "trim_beta drops every client's value; lower it or use more clients"
        return None

    def aggregate(self, results: Results, current: Arrays | None) -> Arrays:
        return trimmed_mean(results, self.trim_beta)


class Krum(RobustRule):
    name = "krum"
    label = "Krum (robust)"
    knobs = ("num_malicious", "num_to_keep")

    def __init__(self, num_malicious: int = 0, num_to_keep: int = 0):
        self.num_malicious = num_malicious
        self.num_to_keep = num_to_keep

    def aggregate(self, results: Results, current: Arrays | None) -> Arrays:
        return krum(results, self.num_malicious, self.num_to_keep)


class ExactMerge(ParameterStrategy):
    """A model whose statistics merge exactly (naive Bayes): its own merge replaces averaging."""

    label = "Exact merge of the model's statistics"
    is_mean = False

    def __init__(self, model: ModelAdapter):
        self.model = model

    def aggregate(self, results: Results, current: Arrays | None) -> Arrays:
        return self.model.merge(results)


class ModelStrategy(Strategy):
    """Clients send whole fitted models; the rule combines them into one global estimator."""

    payload = Payload.MODEL

    def combine(self, models: Sequence[Any], counts: Sequence[int], classes: Sequence,
                validation: tuple[np.ndarray, np.ndarray] | None) -> Any:
        raise NotImplementedError


class HistogramSum(Strategy):
    """Boosted trees grown by the server from the sites' histograms, summed (``hist_gbdt``'s own rule).

    Sites send sums per step (a quantile sketch, then per level the gradient
    and hessian sums per node, feature and bin); the sum is the pooled rows'
    sum, so the trees equal those grown on the pooled rows with the same bins.
    """

    name = "histograms"
    label = "Histograms summed across sites (boosted trees)"
    payload = Payload.STATISTICS

    secagg_refusal = None
    secagg_weight = "one"  # each site's sums already count its rows

    def aggregate(self, results: Results) -> Arrays:
        return summed(results)


class Stacking(ModelStrategy):
    name = "stacking"
    label = "Stacking: meta-learner over client models"
    needs_validation = True

    def __init__(self, seed: int = 0):
        self.seed = seed

    @classmethod
    def from_config(cls, config: Any) -> "Stacking":
        return cls(seed=config.seed)

    def combine(self, models: Sequence[Any], counts: Sequence[int], classes: Sequence,
                validation: tuple[np.ndarray, np.ndarray] | None) -> Any:
        if validation is None:
            raise ValueError("stacking needs the server's validation split to fit its meta-learner")
        return stacking(models, classes, validation[0], validation[1], seed=self.seed)


class Voting(ModelStrategy):
    name = "voting"
    label = "Soft voting of client models"

    def combine(self, models: Sequence[Any], counts: Sequence[int], classes: Sequence,
                validation: tuple[np.ndarray, np.ndarray] | None) -> Any:
        return voting(models, counts, classes)


def get_strategy(name: str) -> type[Strategy]:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ChoiceError(f"unknown aggregation {name!r}; choose one of: {', '.join(STRATEGIES)}") from None


def strategies_for(model: ModelAdapter) -> list[str]:
    """The rules that can serve ``model``, in menu order."""
    return [name for name, cls in STRATEGIES.items() if cls.refuses(model) is None]
