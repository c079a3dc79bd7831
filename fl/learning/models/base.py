"""What every model adapter is: scikit-learn's own estimators, as federated learning needs them.

An adapter is a stateless description of one model: how to build the
estimator, its parameter arrays (for the averageable ones: always of the
global shape the task gives, never of whatever labels a client holds), what
a local epoch means for it, and what it can do (capabilities). Subclasses
register themselves by ``name``; ``fl.learning.models.MODELS`` is the
registry that the config, the CLI and the dashboard read their choices from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import warnings

import numpy as np
from sklearn.dummy import DummyClassifier
from sklearn.exceptions import ConvergenceWarning

from fl.errors import ChoiceError

NamedArrays = list[tuple[str, np.ndarray]]

MODELS: dict[str, "ModelAdapter"] = {}

# Few local iterations per round is the point of federated training, so the solvers' "did not
# converge" warnings are expected noise. A module-level filter: warnings.catch_warnings is not
# thread-safe, and it must hold in worker processes too (they import this module).
warnings.filterwarnings("ignore", category=ConvergenceWarning)


@dataclass(frozen=True)
class Hyper:
    """A hyperparameter the dashboard offers for one model; its default is the adapter's default."""

    name: str
    label: str
    default: Any
    options: tuple | None = None  # a select slider over these values
    low: int | None = None  # an integer slider from low ...
    high: int | None = None  # ... to high
    zero_is_none: bool = False  # slider value 0 means None ("unlimited")
    layers: bool = False  # comma-separated whole numbers (hidden layer sizes)
    own: bool = False  # read by the adapter (how it trains locally), not a parameter of the scikit-learn estimator
    help: str = ""  # what the choice does, for the widget's help


class ModelAdapter:
    """A model for federated learning. Constructors store nothing; every method is pure."""

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    hyperparameters: ClassVar[tuple[Hyper, ...]] = ()
    fixed_defaults: ClassVar[dict[str, Any]] = {}  # defaults we set that the dashboard does not offer
    averageable: ClassVar[bool] = False  # parameter arrays of one global shape that can be combined
    iterative: ClassVar[bool] = False  # trains in local epochs from the global weights (FedProx applies)
    exact_merge: ClassVar[bool] = False  # statistics merged exactly; rules, optimisers and DP do not apply
    statistics: ClassVar[bool] = False  # sites send sums per step; the server grows the model (boosted trees)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A subclass that names itself is a model: it joins the registry (an abstract base names nothing)."""
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("name"):
            MODELS[cls.name] = cls()

    # ------------------------------------------------------------------ building
    @property
    def defaults(self) -> dict[str, Any]:
        return {**self.fixed_defaults, **{h.name: h.default for h in self.hyperparameters}}

    @property
    def one_shot(self) -> bool:
        """Trained from scratch in one go: a run of it is one round."""
        return not self.iterative

    def make(self, params: dict, seed: int) -> Any:
        """The scikit-learn estimator for these (complete) hyperparameters."""
        raise NotImplementedError

    @property
    def own_params(self) -> dict[str, Hyper]:
        """The hyperparameters the adapter reads itself (``Hyper.own``); the estimator never sees them."""
        return {h.name: h for h in self.hyperparameters if h.own}

    def setting(self, params: dict | None, name: str) -> Any:
        """One hyperparameter's value: given, else its default."""
        return {**self.defaults, **(params or {})}.get(name)

    def build(self, params: dict | None = None, seed: int = 0) -> Any:
        own = self.own_params
        return self.make({k: v for k, v in {**self.defaults, **(params or {})}.items() if k not in own}, seed)

    def check_params(self, params: dict | None) -> None:
        """ValueError naming a hyperparameter the estimator does not have, or a bad value."""
        if not params:
            return
        own = self.own_params
        unknown = sorted(set(params) - set(self.build({}, 0).get_params()) - set(own))
        if unknown:
            raise ValueError(f"model {self.name!r} has no parameter {', '.join(unknown)}")
        for name, hyper in own.items():
            if name in params and hyper.options is not None and params[name] not in hyper.options:
                raise ValueError(f"model {self.name!r}: {name} must be one of "
                                 f"{', '.join(map(str, hyper.options))}, got {params[name]!r}")
        try:
            validate_hyperparameters(self.build(params, 0))
        except Exception as exc:
            raise ValueError(f"bad parameter for model {self.name!r}: {exc}") from None

    # ------------------------------------------------------------------ parameters (averageable models)
    def initial_parameters(self, params: dict | None, classes: Any, n_features: int, seed: int) -> NamedArrays | None:
        """The server's round-1 global parameters, from the task alone; None for models without any."""
        return None

    def expected_shapes(self, params: dict | None, classes: Any, n_features: int) -> list[tuple[str, tuple]]:
        """Names and shapes every client must return for this task."""
        arrays = self.initial_parameters(params, classes, n_features, seed=0)
        return [(n, tuple(a.shape)) for n, a in arrays] if arrays is not None else []

    def get_parameters(self, estimator: Any) -> NamedArrays:
        raise ValueError(f"model {self.name!r} has no parameter arrays; use stacking or voting")

    def global_estimator(self, params: dict | None, arrays: NamedArrays, classes: Any, n_features: int) -> Any:
        """A ready-to-predict estimator holding the given (aggregated) arrays."""
        raise ValueError(f"model {self.name!r} has no parameter arrays; use stacking or voting")

    def merge(self, results: list[tuple[list[np.ndarray], int]]) -> list[np.ndarray]:
        """Exact merge of client statistics (exact_merge models only)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ local training
    def fit_whole(self, params: dict | None, X: np.ndarray, y: np.ndarray, classes: np.ndarray, seed: int) -> Any:
        """Fit from scratch on local data; a client whose data defeats the model falls back to class priors.

        A single class defeats every model in its own way (logistic regression
        and SGD refuse it, the MLP answers probabilities of two columns for
        its one class, trees and kNN answer one column): there is nothing to
        separate, so the prior of that class is the model, scored over the
        global classes like any other (fl.learning.metrics.aligned_proba).
        """
        if len(np.unique(y)) == 1:
            return DummyClassifier(strategy="prior").fit(X, y)
        est = self.ready_for_whole_fit(self.build(params, seed), X)
        try:
            return est.fit(X, y)
        except ValueError:  # e.g. gradient boosting on a single class: predict the local prior
            return DummyClassifier(strategy="prior").fit(X, y)

    def whole_params(self, params: dict | None, rounds: int) -> dict:
        """The hyperparameters of a fit from scratch standing for a run of ``rounds`` rounds (a site alone, the
        centralized baseline): the same for most models; boosted trees grow that many rounds."""
        return dict(params or {})

    def local_statistics(self, state: dict, X: np.ndarray, y: np.ndarray, classes: np.ndarray, config: dict,
                         arrays: dict[str, np.ndarray], params: dict | None = None) -> NamedArrays:
        """A site's sums for one step of a ``statistics`` model (its ``state`` kept between steps); ValueError
        for a step's arrays the task's model cannot have been sent."""
        raise NotImplementedError

    def ready_for_whole_fit(self, estimator: Any, X: np.ndarray) -> Any:
        """Adjust an estimator before it is fit from scratch on ``X`` (iterations, neighbours)."""
        return estimator

    def fit_local(self, previous: Any, params: dict | None, X: np.ndarray, y: np.ndarray, classes: np.ndarray,
                  n_features: int, global_arrays: NamedArrays | None, epochs: int, config: dict, seed: int, *,
                  losses: list[float] | None = None, correction: list[np.ndarray] | None = None) -> Any:
        """Local epochs from the global weights (iterative models); ``previous`` is last round's estimator.

        Adapters that train epoch by epoch append each epoch's training loss to ``losses``. ``correction``
        (SCAFFOLD's c − c_i, one array per parameter array) is added to the gradient of every local step.
        """
        return self.fit_whole(params, X, y, classes, seed)

    def local_gradient(self, params: dict | None, X: np.ndarray, y: np.ndarray, classes: np.ndarray,
                       n_features: int, global_arrays: NamedArrays, config: dict) -> list[np.ndarray]:
        """The gradient of this site's local objective at the global parameters, one array per parameter array
        (SCAFFOLD's control variate, option I); models that cannot give one refuse SCAFFOLD."""
        raise ValueError(f"model {self.name!r} gives no local gradient; SCAFFOLD needs one")

    @property
    def has_gradient(self) -> bool:
        """Whether ``local_gradient`` is implemented (SCAFFOLD can serve this model)."""
        return type(self).local_gradient is not ModelAdapter.local_gradient

    def learning_rate(self, params: dict | None) -> float | None:
        """The rate local training uses with these hyperparameters, which a server's schedule starts from;
        None when the model is not trained with one (a schedule does not apply)."""
        return None


def get_model(name: str) -> ModelAdapter:
    """The adapter of a model, or a ChoiceError (a ValueError) that lists the known names."""
    try:
        return MODELS[name]
    except KeyError:
        raise ChoiceError(f"unknown model {name!r}; known models: {', '.join(MODELS)}") from None


def validate_hyperparameters(estimator: Any) -> None:
    """Check hyperparameter values before any fit, as fit itself would.

    scikit-learn has no public call for this; ``_validate_params`` is the one
    private method this project uses, kept here alone and pinned by
    tests/test_models.py (a bad C is refused before training).
    """
    estimator._validate_params()


def as_f64(a: Any) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float64)


def n_outputs(classes: np.ndarray) -> int:
    """Linear models store one row of weights for two classes, one per class above."""
    return 1 if len(classes) == 2 else len(classes)


def phantom_rows(classes: np.ndarray, n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """One all-zero row per class: lets scikit-learn allocate global shapes."""
    return np.zeros((len(classes), n_features)), np.asarray(classes)
