"""RunConfig: every knob of a federated run, validated, JSON round-trip.

Validation happens once, up front, with messages a person can act on, so a
bad setting never surfaces as a traceback halfway through a run.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from fl.data import DATASETS, PARTITIONERS
from fl.learning.models import MODELS, check_model_params, get_spec
from fl.learning.server_opt import SERVER_OPTIMIZERS
from fl.learning.aggregation import AGGREGATIONS, ENSEMBLE_AGGREGATIONS, ROBUST_AGGREGATIONS

ATTACKS = ("none", "label_flip", "gaussian_noise", "sign_flip", "scale")
DP_MODES = ("none", "server", "client")


class ConfigError(ValueError):
    """A setting is out of range or inconsistent; str(e) says which and what to do."""


@dataclass
class RunConfig:
    """Everything that decides a run's numbers (network settings live elsewhere)."""

    # data
    dataset: str = "digits"
    csv_path: str | None = None
    target: str | None = None
    target_bins: int = 0  # csv: 0 = the target's values are the classes; k >= 2 = k quantile classes
    n_samples: int = 1000  # synthetic and xor
    n_features: int = 20  # synthetic
    n_classes: int = 2  # synthetic
    test_size: float = 0.2
    val_size: float = 0.15  # taken only for stacking (the meta-learner's data)
    standardize: bool = True
    # split across clients
    clients: int = 10
    partition: str = "dirichlet"
    alpha: float = 0.5  # dirichlet
    shards_per_client: int = 2  # shards
    quantity_skew: float = 1.5  # quantity
    min_samples: int = 2
    # model and aggregation
    model: str = "mlp"
    model_params: dict[str, Any] = field(default_factory=dict)
    aggregation: str = "fedavg"
    # rounds
    rounds: int = 20
    local_epochs: int = 1
    learning_rate: float | None = None
    fraction: float = 1.0
    min_clients: int = 1
    round_timeout: float = 60.0
    seed: int = 0
    client_eval: bool = True  # each round, every client scores the global model on its own held-out rows
    local_test_size: float = 0.2  # share of each client's rows kept out of its training, for that score
    # robust rules and server optimisers (parameter aggregations only)
    trim_beta: float = 0.2  # trimmed_mean: share dropped at each end
    num_malicious: int = 0  # krum: assumed number of bad clients f
    num_to_keep: int = 0  # krum: 0 = Krum, k = multi-Krum mean of the k best
    server_opt: str = "none"  # none | fedavgm | fedadagrad | fedadam | fedyogi
    server_lr: float | None = None  # eta; None = the optimiser's default
    server_momentum: float = 0.0  # fedavgm
    proximal_mu: float = 0.0  # FedProx: clients add (mu/2)||w - w_global||^2
    # simulated faults and attacks (simulation only; the server does not know who)
    dropout_prob: float = 0.0
    slow_clients: int = 0
    slow_delay: float = 0.0
    malicious_clients: int = 0
    attack: str = "none"  # none | label_flip | gaussian_noise | sign_flip | scale
    attack_scale: float = 4.0  # factor for sign_flip/scale, noise std for gaussian_noise
    # differential privacy
    dp: str = "none"  # none | server | client (where updates are clipped)
    clip_norm: float = 1.0
    noise_multiplier: float = 1.0
    dp_delta: float = 1e-5

    # ------------------------------------------------------------------
    def validate(self) -> "RunConfig":
        """Raise ConfigError on the first bad setting; return self when all is well."""
        if self.dataset not in DATASETS:
            raise ConfigError(f"unknown dataset {self.dataset!r}; choose one of: {', '.join(DATASETS)}")
        if self.dataset == "csv" and not self.csv_path:
            raise ConfigError("a CSV dataset needs a file: choose one (--csv FILE on the command line)")
        if self.dataset == "csv" and not self.target:
            raise ConfigError("a CSV dataset needs its label column: choose the target (--target COL)")
        if self.target_bins == 1 or not isinstance(self.target_bins, int) or isinstance(self.target_bins, bool):
            raise ConfigError("target_bins must be 0 (no binning) or a whole number of quantile classes from 2 to 20")
        _check_int("target_bins", self.target_bins, 0, 20)
        if not isinstance(self.client_eval, bool):
            raise ConfigError(f"client_eval must be true or false, got {self.client_eval!r}")
        if self.partition not in PARTITIONERS:
            raise ConfigError(f"unknown partition {self.partition!r}; choose one of: {', '.join(PARTITIONERS)}")
        if self.model not in MODELS:
            raise ConfigError(f"unknown model {self.model!r}; known models: {', '.join(MODELS)}")
        if self.aggregation not in AGGREGATIONS:
            raise ConfigError(f"unknown aggregation {self.aggregation!r}; choose one of: {', '.join(AGGREGATIONS)}")
        spec = get_spec(self.model)
        if self.aggregation not in ENSEMBLE_AGGREGATIONS and not spec.averageable:
            raise ConfigError(
                f"{self.model} cannot be averaged (its fitted trees or neighbours have no common parameter "
                f"shape); use aggregation 'stacking' or 'voting' instead"
            )
        _check_int("clients", self.clients, 1, 1000)
        _check_int("rounds", self.rounds, 1, 10_000)
        _check_int("local_epochs", self.local_epochs, 1, 1000)
        _check_int("min_clients", self.min_clients, 1, 1000)
        _check_int("min_samples", self.min_samples, 1, 1_000_000)
        _check_int("shards_per_client", self.shards_per_client, 1, 1000)
        _check_int("seed", self.seed, 0, 2**31 - 1)
        _check_int("n_samples", self.n_samples, 20, 10_000_000)
        _check_int("n_features", self.n_features, 2, 100_000)
        _check_int("n_classes", self.n_classes, 2, 50)
        if self.min_clients > self.clients:
            raise ConfigError(f"min_clients ({self.min_clients}) cannot exceed the number of clients ({self.clients})")
        _check_float("fraction", self.fraction, 0.0, 1.0, low_open=True)
        _check_float("alpha", self.alpha, 0.0, 1e6, low_open=True)
        _check_float("quantity_skew", self.quantity_skew, 0.0, 10.0)
        _check_float("test_size", self.test_size, 0.0, 0.9, low_open=True, high_open=True)
        _check_float("val_size", self.val_size, 0.0, 0.5, high_open=True)
        _check_float("local_test_size", self.local_test_size, 0.0, 0.5)
        _check_float("round_timeout", self.round_timeout, 0.0, 86_400.0, low_open=True)
        if self.learning_rate is not None:
            _check_float("learning_rate", self.learning_rate, 0.0, 10.0, low_open=True)
        if self.aggregation == "stacking" and self.val_size <= 0:
            raise ConfigError("stacking needs a validation split on the server: set val_size above 0 (e.g. 0.15)")
        if self.test_size + self.effective_val_size >= 0.9:
            raise ConfigError("test_size plus val_size must stay below 0.9, or no data is left for the clients")
        self._validate_advanced(spec)
        if not isinstance(self.model_params, dict):
            raise ConfigError("model_params must be a JSON object of hyperparameters")
        try:
            check_model_params(self.model, self.model_params)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        return self

    def _validate_advanced(self, spec: Any) -> None:
        """Robust rules, server optimisers, FedProx, faults, attacks and DP."""
        if self.server_opt not in SERVER_OPTIMIZERS:
            raise ConfigError(f"unknown server optimiser {self.server_opt!r}; choose one of: "
                              f"{', '.join(SERVER_OPTIMIZERS)}")
        if self.attack not in ATTACKS:
            raise ConfigError(f"unknown attack {self.attack!r}; choose one of: {', '.join(ATTACKS)}")
        if self.dp not in DP_MODES:
            raise ConfigError(f"unknown dp mode {self.dp!r}; choose one of: {', '.join(DP_MODES)}")
        _check_float("trim_beta", self.trim_beta, 0.0, 0.5, high_open=True)
        _check_int("num_malicious", self.num_malicious, 0, 1000)
        _check_int("num_to_keep", self.num_to_keep, 0, 1000)
        if self.server_lr is not None:
            _check_float("server_lr", self.server_lr, 0.0, 100.0, low_open=True)
        _check_float("server_momentum", self.server_momentum, 0.0, 1.0, high_open=True)
        _check_float("proximal_mu", self.proximal_mu, 0.0, 1000.0)
        _check_float("dropout_prob", self.dropout_prob, 0.0, 1.0, high_open=True)
        _check_int("slow_clients", self.slow_clients, 0, 1000)
        _check_float("slow_delay", self.slow_delay, 0.0, 3600.0)
        _check_int("malicious_clients", self.malicious_clients, 0, 1000)
        _check_float("attack_scale", self.attack_scale, 0.0, 1e6)
        _check_float("clip_norm", self.clip_norm, 0.0, 1e6, low_open=True)
        _check_float("noise_multiplier", self.noise_multiplier, 0.0, 1e4)
        _check_float("dp_delta", self.dp_delta, 0.0, 1.0, low_open=True, high_open=True)
        if self.slow_clients > self.clients or self.malicious_clients > self.clients:
            raise ConfigError("slow_clients and malicious_clients cannot exceed the number of clients")
        if self.malicious_clients and self.attack == "none":
            raise ConfigError("malicious clients need an attack: label_flip, gaussian_noise, sign_flip or scale")
        param_only = {"a robust rule": self.aggregation in ROBUST_AGGREGATIONS,
                      "a server optimiser": self.server_opt != "none", "differential privacy": self.dp != "none",
                      "FedProx": self.proximal_mu > 0}
        for what, used in param_only.items():
            if used and self.is_ensemble:
                raise ConfigError(f"{what} works on parameter arrays; stacking and voting combine whole models")
            if used and self.model == "gaussian_nb" and what != "FedProx":
                raise ConfigError(f"naive Bayes statistics are merged exactly; {what} does not apply to them")
        if self.proximal_mu > 0 and self.model not in ("logreg", "sgd", "linear_svm", "mlp"):
            raise ConfigError("FedProx needs an iterative model: logreg, sgd, linear_svm or mlp")
        if self.aggregation == "trimmed_mean" and 2 * int(self.trim_beta * self.clients) >= self.clients:
            raise ConfigError("trim_beta drops every client's value; lower it or use more clients")

    @property
    def is_ensemble(self) -> bool:
        """Whole fitted models travel instead of parameter arrays."""
        return self.aggregation in ENSEMBLE_AGGREGATIONS

    @property
    def effective_rounds(self) -> int:
        """Ensembles and round-free models (naive Bayes) are one-shot: one round says it all."""
        return 1 if self.is_ensemble or get_spec(self.model).round_free else self.rounds

    @property
    def effective_val_size(self) -> float:
        return self.val_size if self.aggregation == "stacking" else 0.0

    # ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunConfig":
        """Build from a dict (e.g. a saved config.json); unknown keys are an error."""
        if not isinstance(data, dict):
            raise ConfigError("a run config must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(unknown)}; known keys: {', '.join(sorted(known))}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> "RunConfig":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"config is not valid JSON: {exc}") from None
        return cls.from_dict(data)


def _check_int(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be a whole number, got {value!r}")
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {value}")


def _check_float(name: str, value: Any, low: float, high: float, *, low_open: bool = False,
                 high_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        lo = "above" if low_open else "at least"
        hi = "below" if high_open else "at most"
        raise ConfigError(f"{name} must be {lo} {low:g} and {hi} {high:g}, got {value:g}")
