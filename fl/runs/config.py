"""RunConfig: every knob of a federated run, declared once, validated, JSON round-trip.

Each field carries a Knob (fl/runs/knobs.py): its range or choices, help,
widget and flags. The command line, the validation, the dashboard's widgets
and Deploy's client commands are generated from them, and each default is
written here only. Choices come from the registries (datasets, partitioners,
model adapters, strategies, server optimisers, attacks, DP modes), so a new
model or rule shows up everywhere without further edits.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any

from fl.errors import FLError
from fl.data import DATASETS, PARTITIONERS
from fl.federation.behaviour import ATTACKS
from fl.learning.models import MODELS, get_model
from fl.learning.privacy import DP_MODES
from fl.learning.schedules import parse_schedule, schedule_problem
from fl.learning.server_opt import SERVER_OPTIMIZERS
from fl.learning.strategies import STRATEGIES, Payload, get_strategy
from fl.runs.cluster_spec import LOCAL, cluster_problem
from fl.runs.knobs import CLIENT, SERVER, SIMULATE, check_value, knob, knobs_of
from fl.runs.tracking import LOCAL_STORE, problem as tracking_problem

ALPHAS = (0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0, 100.0)
DATA_FOR_CLIENTS = (SIMULATE, SERVER, CLIENT)  # a client rebuilding "partition i of N" needs these too


AUTO = -1  # workers: choose by the expected training (fl/runs/workers.py worker_count)


def workers_flag(text: str) -> int:
    """``--workers auto`` or a number of worker processes (0: the clients run in this process)."""
    return AUTO if text.strip().lower() == "auto" else int(text)


class ConfigError(FLError, ValueError):
    """A setting is out of range or inconsistent; str(e) says which and what to do."""


def _parameters_travel(v: dict) -> bool:
    """Robust rules, optimisers, DP and FedProx act on parameter arrays of a non-exact-merge model."""
    aggregation, model = STRATEGIES.get(v.get("aggregation", "")), MODELS.get(v.get("model", ""))
    return bool(aggregation and model and aggregation.payload is Payload.PARAMETERS and not model.exact_merge)


def _secure_rule(v: dict) -> bool:
    """Secure aggregation is offered for the rules that aggregate from a sum alone."""
    aggregation, model = STRATEGIES.get(v.get("aggregation", "")), MODELS.get(v.get("model", ""))
    return bool(aggregation and model and aggregation.secagg_refusal is None and not model.exact_merge)


def _mean_rule(v: dict) -> bool:
    """Differential privacy's noise calibration assumes a mean of clipped updates (see WithDifferentialPrivacy)."""
    aggregation = STRATEGIES.get(v.get("aggregation", ""))
    return bool(aggregation and aggregation.is_mean)


def _one_shot(v: dict) -> bool:
    """Whole-model rules and one-shot models run a single round: no rounds or epochs to choose."""
    aggregation, model = STRATEGIES.get(v.get("aggregation", "")), MODELS.get(v.get("model", ""))
    return bool(aggregation and aggregation.payload is Payload.MODEL) or bool(model and model.one_shot)


def _has_learning_rate(v: dict) -> bool:
    """Models trained with a learning rate (a schedule applies): the MLP and the SGD models."""
    model = MODELS.get(v.get("model", ""))
    return bool(model and model.iterative and model.learning_rate(v.get("model_params")) is not None)


def _statistics(v: dict) -> bool:
    """A model grown on the server from the sites' sums (boosted trees): no local epochs, its own rule."""
    model = MODELS.get(v.get("model", ""))
    return bool(model and model.statistics)


def _iterative(v: dict) -> bool:
    model = MODELS.get(v.get("model", ""))
    return bool(model and model.iterative)


@dataclass
class RunConfig:
    """Everything that decides a run's numbers (network settings live in ServerSettings)."""

    # data
    dataset: str = knob("digits", help="built-in dataset, or csv", label="Dataset", group="data", kind=str,
                        choices=lambda: list(DATASETS), names=DATASETS, widget="select", commands=DATA_FOR_CLIENTS)
    csv_path: str | None = knob(None, help="CSV file (with --target)", label="CSV file", group="data", kind=str,
                                optional=True,
                                flag="--csv", commands=DATA_FOR_CLIENTS)
    target: str | None = knob(None, help="label column of the CSV", label="Target (label) column", group="data",
                              kind=str, optional=True,
                              commands=DATA_FOR_CLIENTS)
    target_bins: int = knob(0, help="turn a continuous numeric target into K quantile classes (0: no binning)",
                            label="Turn the label into quantile classes",
                            group="data", kind=int, low=0, high=20)
    keep_columns: str = knob("", label="Keep excluded columns",
                             help="CSV columns to use although they look like row numbers, IDs or constants "
                                      "(excluded by default, as they can fake a result), comma-separated: COL,COL",
                             group="data", kind=str, commands=DATA_FOR_CLIENTS)
    n_samples: int = knob(1000, help="rows for synthetic and xor", label="Rows", group="data", kind=int, low=20,
                          high=10_000_000, widget="number", step=500, commands=DATA_FOR_CLIENTS,
                          shown=lambda v: v.get("dataset") in ("synthetic", "xor"))
    n_features: int = knob(20, help="features for synthetic", label="Features", group="data", kind=int, low=2,
                           high=100_000, widget="number", commands=DATA_FOR_CLIENTS,
                           shown=lambda v: v.get("dataset") == "synthetic")
    n_classes: int = knob(2, help="classes for synthetic", label="Classes", group="data", kind=int, low=2, high=50,
                          widget="number", commands=DATA_FOR_CLIENTS, shown=lambda v: v.get("dataset") == "synthetic")
    test_size: float = knob(0.2, help="share of the data the server holds out to test", group="data", low=0.0,
                            high=0.9, low_open=True, high_open=True, commands=DATA_FOR_CLIENTS)
    val_size: float = knob(0.15, help="share the server holds out to fit stacking's meta-learner (stacking only)",
                           group="data", low=0.0, high=0.5, high_open=True, commands=DATA_FOR_CLIENTS)
    standardize: bool = knob(True, help="standardise features with the training pool's statistics",
                             group="data", kind=bool)
    min_category_count: int = knob(5, help="a server without data: a text value held by fewer rows at a site is "
                                           "pooled as 'other' in its summary (never named, never a feature)",
                                   label="Fewest rows a text value needs at a site to be named", group="data",
                                   kind=int, low=1, high=1_000_000, commands=(SERVER,))
    local_test_size: float = knob(0.2, help="share of each client's rows kept out of its training to score "
                                            "the global model", label="Each client's held-out share",
                                  group="rounds", low=0.0, high=0.5, widget="slider", step=0.05, more=True)
    # split across clients
    clients: int = knob(10, help="number of clients (a column split makes one per value instead)", label="Clients",
                        group="split", kind=int, low=1, high=100_000, widget="slider", ui_range=(1, 1000),
                        commands=(SIMULATE,))
    partition: str = knob("dirichlet", help="how the data is split across clients", label="How the data is split",
                          group="split", kind=str, choices=lambda: list(PARTITIONERS), names=PARTITIONERS,
                          widget="select", commands=DATA_FOR_CLIENTS)
    split_column: str | None = knob(None, help="with --partition column: the CSV column whose values are the clients "
                                              "(a hospital, region, store), one client per value (2 to 50), named "
                                              "after it; it is not a feature", label="Split by the column",
                                    group="split", kind=str, optional=True, commands=DATA_FOR_CLIENTS,
                                    shown=lambda v: v.get("partition") == "column")
    alpha: float = knob(0.5, help="Dirichlet concentration (smaller = more skew)",
                        label="Dirichlet α (smaller = more skew)", group="split", low=0.0, high=1e6, low_open=True,
                        widget="select_slider", options=ALPHAS, commands=DATA_FOR_CLIENTS,
                        shown=lambda v: v.get("partition") == "dirichlet")
    shards_per_client: int = knob(2, help="label shards per client", label="Label shards per client", group="split",
                                  kind=int, low=1, high=1000, widget="slider", ui_range=(1, 10),
                                  commands=DATA_FOR_CLIENTS, shown=lambda v: v.get("partition") == "shards")
    quantity_skew: float = knob(1.5, help="power-law exponent of client sizes",
                                label="Size skew (power-law exponent)", group="split", low=0.0, high=10.0,
                                widget="slider", ui_range=(0.0, 4.0), step=0.25, commands=DATA_FOR_CLIENTS,
                                shown=lambda v: v.get("partition") == "quantity")
    min_samples: int = knob(2, help="smallest client partition", group="split", kind=int, low=1, high=1_000_000,
                            commands=DATA_FOR_CLIENTS)
    # model and aggregation
    model: str = knob("mlp", help="the scikit-learn model", label="Model", group="model", kind=str,
                      choices=lambda: list(MODELS), names={n: m.label for n, m in MODELS.items()}, widget="select")
    model_params: dict[str, Any] = knob(default_factory=dict, help='hyperparameters as JSON, e.g. \'{"C": 0.5}\'',
                                        group="model", kind=dict)
    aggregation: str = knob("fedavg", help="how the server combines the clients' results", label="Aggregation",
                            group="model", kind=str, choices=lambda: list(STRATEGIES),
                            names={n: s.label for n, s in STRATEGIES.items()}, widget="radio",
                            commands=DATA_FOR_CLIENTS)
    trim_beta: float = knob(0.2, help="trimmed mean: share cut at each end", label="Share trimmed at each end (β)",
                            group="model", low=0.0, high=0.5, high_open=True, widget="slider",
                            ui_range=(0.0, 0.45), step=0.05, shown=lambda v: v.get("aggregation") == "trimmed_mean")
    num_malicious: int = knob(0, help="krum: assumed number of bad clients f", label="Assumed malicious clients f",
                              group="model", kind=int, low=0, high=1000, widget="number",
                              shown=lambda v: v.get("aggregation") == "krum")
    num_to_keep: int = knob(0, help="krum: 0 = Krum, k = multi-Krum over the k best",
                            label="Keep the k best (0 = Krum, k > 0 = multi-Krum)", group="model", kind=int, low=0,
                            high=1000, widget="number", shown=lambda v: v.get("aggregation") == "krum")
    # rounds
    rounds: int = knob(20, help="rounds of training", label="Rounds", group="rounds", kind=int, low=1, high=10_000,
                       widget="slider", ui_range=(1, 200), shown=lambda v: not _one_shot(v))
    local_epochs: int = knob(1, help="passes over each client's own data per round", label="Local epochs per round",
                             group="rounds", kind=int, low=1, high=1000, widget="slider", ui_range=(1, 50),
                             fit_key="local_epochs", shown=lambda v: not _one_shot(v) and not _statistics(v))
    learning_rate: float | None = knob(None, help="clients' learning rate (default: the model's own)",
                                       group="rounds", low=0.0, high=10.0, low_open=True, optional=True,
                                       fit_key="learning_rate")
    lr_schedule: str = knob("constant", help="the clients' learning rate per round, set by the server: constant, "
                                             "step:FACTOR:EVERY (step:0.5:5 halves it every 5 rounds), "
                                             "exponential:GAMMA or cosine; from the initial rate and the round",
                            label="Learning-rate schedule", group="rounds", kind=str, widget="text",
                            check=schedule_problem, more=True, shown=lambda v: _has_learning_rate(v))
    fraction: float = knob(1.0, help="share of clients sampled per round", label="Clients per round (fraction)",
                           group="rounds", low=0.0, high=1.0, low_open=True, widget="slider", ui_range=(0.1, 1.0),
                           step=0.1)
    min_clients: int = knob(1, help="fewest clients in a round (a server waits for them to start)",
                            label="Minimum clients per round", group="rounds", kind=int, low=1, high=100_000,
                            widget="number", more=True)
    round_timeout: float = knob(60.0, help="seconds to wait for results", label="Round timeout (s)", group="rounds",
                                low=0.0, high=86_400.0, low_open=True, widget="number", ui_range=(1.0, 3600.0),
                                more=True)
    seed: int = knob(0, help="seed for splits, sampling and training", label="Seed", group="rounds", kind=int,
                     low=0, high=2**31 - 1, widget="number", commands=DATA_FOR_CLIENTS, more=True)
    client_eval: bool = knob(True, help="every round, each client scores the global model on its held-out rows",
                             label="Score the global model on each client's held-out rows", group="rounds",
                             kind=bool, widget="checkbox", more=True)
    # server optimisers and FedProx (parameter aggregations only)
    server_opt: str = knob("none", help="server optimiser", label="Server optimiser", group="optimizer", kind=str,
                           choices=lambda: list(SERVER_OPTIMIZERS), names=SERVER_OPTIMIZERS, widget="select",
                           shown=_parameters_travel)
    server_lr: float | None = knob(None, help="server learning rate η (default: the optimiser's own)",
                                   label="Server learning rate η", group="optimizer", low=0.0, high=100.0,
                                   low_open=True, optional=True, widget="select_slider",
                                   options=(None, 0.001, 0.01, 0.03, 0.1, 0.3, 1.0),
                                   names={None: "the optimiser's default"},
                                   shown=lambda v: _parameters_travel(v) and v.get("server_opt", "none") != "none")
    server_momentum: float = knob(0.9, help="FedAvgM server momentum", label="Server momentum", group="optimizer",
                                  low=0.0, high=1.0, high_open=True, widget="slider", ui_range=(0.0, 0.99),
                                  step=0.01, shown=lambda v: _parameters_travel(v) and v.get("server_opt") == "fedavgm")
    proximal_mu: float = knob(0.0, help="FedProx μ (0 = off)", label="FedProx μ (0 = off)", group="optimizer",
                              low=0.0, high=1000.0, widget="select_slider", options=(0.0, 0.001, 0.01, 0.1, 1.0),
                              fit_key="proximal_mu", shown=lambda v: _parameters_travel(v) and _iterative(v))
    # simulated faults and attacks (simulation only; the server does not know who)
    dropout_prob: float = knob(0.0, help="chance a client skips a round", label="Chance a client skips a round",
                               group="faults", low=0.0, high=1.0, high_open=True, widget="slider",
                               ui_range=(0.0, 0.9), step=0.05, commands=(SIMULATE,))
    slow_clients: int = knob(0, help="clients that answer late", label="Slow clients", group="faults", kind=int,
                             low=0, high=100_000, widget="number", commands=(SIMULATE,))
    slow_delay: float = knob(5.0, help="seconds a slow client waits before answering",
                             label="Their delay (s); past the round timeout they are dropped", group="faults",
                             low=0.0, high=3600.0, widget="number", commands=(SIMULATE,),
                             shown=lambda v: v.get("slow_clients", 0) > 0)
    malicious_clients: int = knob(0, help="clients that send bad updates (the server is not told)",
                                  label="Malicious clients", group="faults", kind=int, low=0, high=100_000,
                                  widget="number", commands=(SIMULATE,))
    attack: str = knob("sign_flip", help="what malicious clients do", label="Attack", group="faults", kind=str,
                       choices=lambda: list(ATTACKS), names=ATTACKS, widget="select", commands=(SIMULATE,),
                       shown=lambda v: v.get("malicious_clients", 0) > 0)
    attack_scale: float = knob(4.0, help="attack strength: factor (sign_flip, scale) or noise std",
                               label="Attack strength (factor or noise std)", group="faults", low=0.0, high=1e6,
                               widget="number", commands=(SIMULATE,), shown=lambda v: v.get("malicious_clients", 0) > 0)
    archive_weights: bool = knob(False, help="keep every round's global parameters (weights.npz) and per-layer "
                                             "statistics (weights.csv) in the run's directory",
                                 label="Archive every round's weights", group="rounds", kind=bool,
                                 widget="checkbox", more=True, shown=_parameters_travel)
    # runtime (how the simulation runs; the numbers are the same whatever it is)
    workers: int = knob(AUTO, help="worker processes for a simulation's clients: 0 runs them in this process; "
                                   "auto (-1) times one client's local fit and uses one process per core when "
                                   "the run's training is long enough to pay for starting them",
                        label="Worker processes (-1 = auto, 0 = none)", group="runtime", kind=int, low=-1, high=256,
                        widget="number", commands=(SIMULATE,), parse=workers_flag)
    join_timeout: float | None = knob(None, help="seconds a simulation's clients have to join; fewer by then fail "
                                                 "the run unless «min_clients» allows it (default: 60, or 20 ms per "
                                                 "client from 3,000 clients)",
                                      label="Join timeout (s; empty: 60, or 20 ms per client)", group="runtime",
                                      low=0.0, high=86_400.0, low_open=True, optional=True, commands=(SIMULATE,))
    cluster: str = knob(LOCAL, help="where a simulation's client hosts run: local (worker processes here), "
                                    "dask://HOST:PORT (the workers of a running Dask scheduler), ray://HOST:PORT "
                                    "or ray (a Ray cluster; ray alone: this machine's, else a local one started "
                                    "for the run); one host per worker slot, «workers» hosts (auto: every free slot)",
                        label="Cluster: local, dask://HOST:PORT, ray://HOST:PORT or ray", group="runtime", kind=str,
                        widget="text", check=cluster_problem, commands=(SIMULATE,))
    # experiment tracking (never changes the numbers; fl/runs/tracking.py)
    mlflow_uri: str = knob("", help="log params, metrics per round and models to MLflow: --mlflow alone logs to "
                                    "./mlruns, --mlflow URI to that tracking server or store (http://..., a path)",
                           label="Track in MLflow", group="tracking", kind=str, flag="--mlflow", const=LOCAL_STORE,
                           widget="checkbox_text", check=tracking_problem, commands=(SIMULATE, SERVER))
    # differential privacy
    dp: str = knob("none", help="differential privacy: clip updates on the server or on the clients",
                   label="Clip and add noise", group="privacy", kind=str, choices=lambda: list(DP_MODES),
                   names=DP_MODES, widget="select", shown=lambda v: _parameters_travel(v) and _mean_rule(v))
    clip_norm: float = knob(1.0, help="DP clip norm C", label="Clip norm C", group="privacy", low=0.0, high=1e6,
                            low_open=True, widget="number", shown=lambda v: v.get("dp", "none") != "none")
    noise_multiplier: float = knob(1.0, help="DP noise multiplier σ", label="Noise multiplier σ", group="privacy",
                                   low=0.0, high=1e4, widget="number", step=0.1,
                                   shown=lambda v: v.get("dp", "none") != "none")
    secagg: bool = knob(False, help="secure aggregation (SecAgg+): the server learns only the sum of the "
                                    "clients' updates, never one of them (FedAvg, FedProx, SCAFFOLD, server "
                                    "optimisers, client-side DP, boosted trees' histograms)",
                        label="Secure aggregation (the server sees only the sum)", group="privacy", kind=bool,
                        widget="checkbox", shown=_secure_rule, commands=(SIMULATE, SERVER))
    dp_delta: float = knob(1e-5, help="DP δ", label="δ", group="privacy", low=0.0, high=1.0, low_open=True,
                           high_open=True, widget="select_slider", options=(1e-7, 1e-6, 1e-5, 1e-4, 1e-3),
                           shown=lambda v: v.get("dp", "none") != "none")

    def __post_init__(self) -> None:
        """A model with a rule of its own (boosted trees: 'histograms') gets it when the rule is the default."""
        model = MODELS.get(self.model)
        if model is not None and model.statistics and self.aggregation == "fedavg":
            self.aggregation = "histograms"

    # ------------------------------------------------------------------ validation
    def validate(self, data_at_clients: bool = False) -> "RunConfig":
        """Raise ConfigError on the first bad setting; return self when all is well.

        ``data_at_clients``: a hosted server whose CSV rows are all at the sites
        (the task is built from their summaries), so it needs no file of its own.
        """
        for name, k in knobs_of(type(self)).items():
            problem = check_value(name, k, getattr(self, name))
            if problem:
                raise ConfigError(problem)
        for problem in self._relations(data_at_clients):
            raise ConfigError(problem)
        return self

    def _relations(self, data_at_clients: bool = False):
        """Settings that are fine alone but not together; yields sentences."""
        model, rule = get_model(self.model), get_strategy(self.aggregation)
        if self.dataset == "csv" and not self.csv_path and not data_at_clients:
            yield "a CSV dataset needs a file: choose one («csv_path»)"
        if self.dataset == "csv" and not self.target:
            yield "a CSV dataset needs its label column: choose it («target»)"
        if self.partition == "column" and self.dataset != "csv":
            yield (f"only a CSV can be split by a column (a hospital, a region); {self.dataset} has no such "
                   "column: choose iid, dirichlet, shards or quantity")
        elif self.partition == "column" and not (self.split_column or "").strip():
            yield "the column split needs its column («split_column»): one client per value of it"
        if self.cluster.strip().lower() != LOCAL and self.workers == 0:
            yield ("a cluster run places its clients in hosts on the cluster's workers: set «workers» to auto "
                   "(one host per free worker slot) or a number of hosts, or run here with «cluster=local»")
        if self.target_bins == 1:
            yield "«target_bins» must be 0 (no binning) or a whole number of quantile classes from 2 to 20"
        refusal = rule.refuses(model)
        if refusal:
            yield refusal
        if self.partition != "column":  # a column split's count comes with its data (build.clients_of_split)
            yield from self.count_problems()
        if rule.needs_validation and self.val_size <= 0:
            yield "stacking needs a validation split on the server: set «val_size» above 0 (e.g. 0.15)"
        if self.test_size + self.effective_val_size >= 0.9:
            yield "test_size plus val_size must stay below 0.9, or no data is left for the clients"
        if self.malicious_clients and self.attack == "none":
            yield "malicious clients need an attack: label_flip, gaussian_noise, sign_flip or scale"
        if not parse_schedule(self.lr_schedule).is_constant and not _has_learning_rate(self.to_dict()):
            yield (f"a learning-rate schedule needs a model trained with a learning rate "
                   f"({', '.join(n for n, m in MODELS.items() if m.iterative and m.learning_rate({}) is not None)}); "
                   f"{model.label} has none: use «lr_schedule=constant»")
        yield from self._parameter_only(model, rule)
        try:
            model.check_params(self.model_params)
        except ValueError as exc:
            yield str(exc)

    def count_problems(self):
        """Settings that must fit the number of clients; yields sentences."""
        problem = get_strategy(self.aggregation).from_config(self).problem(self.clients)
        if problem:
            yield problem
        if self.min_clients > self.clients:
            yield f"min_clients ({self.min_clients}) cannot exceed the number of clients ({self.clients})"
        if self.slow_clients > self.clients or self.malicious_clients > self.clients:
            yield "slow_clients and malicious_clients cannot exceed the number of clients"

    def _parameter_only(self, model: Any, rule: Any):
        used = {"a server optimiser": self.server_opt != "none", "differential privacy": self.dp != "none",
                "FedProx": self.proximal_mu > 0}
        for what, on in used.items():
            if on and rule.payload is Payload.MODEL:
                yield f"{what} works on parameter arrays; stacking and voting combine whole models"
            elif on and model.exact_merge and what != "FedProx":
                yield f"{model.label} statistics are merged exactly; {what} does not apply to them"
        if self.proximal_mu > 0 and not model.iterative:
            yield "FedProx needs an iterative model: " + ", ".join(n for n, m in MODELS.items() if m.iterative)
        if self.secagg:
            yield from self._secagg_problems(model, rule)
        if self.dp != "none" and rule.dp_refusal:
            yield rule.dp_refusal
        elif self.dp != "none" and rule.payload is Payload.PARAMETERS and not rule.is_mean and not model.exact_merge:
            yield (f"differential privacy's noise is calibrated for a mean of clipped updates (sensitivity C/m); "
                   f"{self.aggregation} is not a mean (Krum returns one client's update, sensitivity about 2C), so "
                   "its ε would be false: use fedavg with dp")

    def _secagg_problems(self, model: Any, rule: Any):
        """Secure aggregation reveals only the sum: rules and settings that need each update are refused."""
        if model.exact_merge:
            yield (f"secure aggregation cannot serve {model.label}: its statistics are merged from each site's own, "
                   "which secure aggregation hides; turn it off («secagg») or use another model")
        elif self.dp == "server":
            yield ("secure aggregation hides each update from the server, so server-side differential privacy "
                   "cannot clip them: use client-side clipping («dp=client»), whose clipped updates then add up")
        elif rule.secagg_refusal:
            yield (f"secure aggregation cannot serve {self.aggregation}: {rule.secagg_refusal}; use fedavg (or "
                   "scaffold) with it, or turn it off («secagg»)")
        if self.min_clients < 3 and self.clients < 3:
            yield ("secure aggregation needs at least 3 clients in every round («clients» or «min_clients» ≥ 3): "
                   "with two, each could subtract its own update from the sum and read the other's")

    # ------------------------------------------------------------------ derived
    @property
    def is_ensemble(self) -> bool:
        """Whole fitted models travel instead of parameter arrays."""
        return get_strategy(self.aggregation).payload is Payload.MODEL

    @property
    def effective_rounds(self) -> int:
        """Ensembles and one-shot models (naive Bayes, trees) run one round: one round says it all."""
        return 1 if self.is_ensemble or get_model(self.model).one_shot else self.rounds

    @property
    def effective_val_size(self) -> float:
        return self.val_size if get_strategy(self.aggregation).needs_validation else 0.0

    def learning_rate_at(self, round_no: int) -> float | None:
        """The clients' learning rate in round ``round_no`` under the schedule, from the initial rate (the
        learning_rate knob, else the model's own) and the round alone; None when no schedule is set."""
        schedule = parse_schedule(self.lr_schedule)
        if schedule.is_constant:
            return None
        initial = self.learning_rate or get_model(self.model).learning_rate(self.model_params)
        return schedule.rate(float(initial), round_no, self.effective_rounds)

    def fit_config(self) -> dict[str, Any]:
        """What every ``fit`` tells clients: the knobs with a ``fit_key`` that are set."""
        return {k.fit_key: getattr(self, name) for name, k in knobs_of(type(self)).items()
                if k.fit_key and getattr(self, name) not in (None, 0, 0.0)}

    # ------------------------------------------------------------------ JSON
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
