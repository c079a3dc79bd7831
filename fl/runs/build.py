"""build_run: the one place a RunConfig becomes a run's pieces.

A simulation, a hosted run (dashboard or ``server_new.py``), the client that
rebuilds "partition i of N" and the tests all come through here, so they
load the same data, hold out the same rows, hand clients the same task and
aggregate with the same strategy. Nothing here starts a thread or opens a
socket: that is simulation.py's and hosting.py's job.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from fl.data import (
    DataError, Dataset, FederatedData, check_config_size, load_dataset, make_federated_data, normalize_labels,
)
from fl.federation.rounds import RoundSettings, ServerData
from fl.federation.summary_exchange import SummaryPlan
from fl.federation.task import Task, make_preprocess
from fl.learning.models import get_model
from fl.learning.schedules import parse_schedule
from fl.learning.server_opt import make_server_optimizer
from fl.learning.strategies import ExactMerge, ParameterStrategy, Strategy, get_strategy
from fl.learning.wrappers import WithDifferentialPrivacy, WithServerOptimizer
from fl.runs.config import ConfigError, RunConfig


def client_id_for(i: int) -> str:
    return f"client_{i:03d}"


def client_ids_for(data: FederatedData) -> list[str]:
    """Every client's id: a column split's sites by name (``North_East``), otherwise client_000, client_001, ..."""
    return list(data.site_names) if data.site_names else [client_id_for(i) for i in range(len(data.parts))]


@dataclass
class RunPlan:
    """Everything a run needs, built once from its config."""

    config: RunConfig
    task: Task
    server_data: ServerData | None  # None: the server has no data and evaluates federatedly
    data: FederatedData | None  # the whole split, partitions included (simulations and partition clients)
    settings: RoundSettings
    summaries: SummaryPlan | None = None  # no data anywhere but at the sites: the task comes from their summaries

    def strategy(self) -> Strategy:
        """A fresh strategy (it keeps state across rounds: optimiser moments, privacy spent)."""
        return make_strategy(self.config)

    @property
    def client_ids(self) -> list[str]:
        return client_ids_for(self.data) if self.data is not None else []


def build_run(config: RunConfig, *, classes: list | None = None, n_features: int | None = None,
              data_at_clients: bool = False) -> RunPlan:
    """Validate, load and split the data, and make the task, the settings and the server's data.

    With ``classes`` and ``n_features`` (a server without data of its own)
    nothing is loaded: clients bring all the data and evaluation is federated.
    With ``data_at_clients`` (a CSV run without a file here) the task is built
    from the sites' data summaries before round 1 (fl/federation/summary_exchange.py).
    Raises ConfigError or DataError (ResourceError when the data is too big).
    """
    config.validate(data_at_clients=data_at_clients)
    if classes is not None:
        return _plan_without_data(config, classes, n_features)
    if data_at_clients:
        return _plan_from_summaries(config)
    data = load_data(config)
    config = clients_of_split(config, data)
    return RunPlan(config, make_task(config, data), server_data(data), data, round_settings(config))


def clients_of_split(config: RunConfig, data: FederatedData) -> RunConfig:
    """A column split has one client per value: the config then says that many clients (whatever it said),
    and the settings that depend on the count (min_clients, Krum's f, ...) are checked against it."""
    if config.partition != "column":
        return config
    config = replace(config, clients=len(data.parts))
    for problem in config.count_problems():
        raise ConfigError(f"splitting by '{config.split_column}' makes {config.clients} clients (one per value): "
                          f"{problem}")
    return config


def data_inputs(config: RunConfig, n_partitions: int | None = None) -> dict[str, Any]:
    """Every setting ``load_data`` reads: configs with equal inputs get the same rows and the same split
    (the dashboard's split preview is cached on them, so changing the model does not re-split)."""
    return dict(dataset=config.dataset, csv_path=config.csv_path, target=config.target, n_samples=config.n_samples,
                n_features=config.n_features, n_classes=config.n_classes, seed=config.seed,
                target_bins=config.target_bins, keep_columns=config.keep_columns,
                n_clients=n_partitions or config.clients,
                partition_method=config.partition, alpha=config.alpha, shards_per_client=config.shards_per_client,
                quantity_skew=config.quantity_skew, min_samples=config.min_samples, test_size=config.test_size,
                val_size=config.effective_val_size,
                split_column=config.split_column if config.partition == "column" else None)


def load_data(config: RunConfig, n_partitions: int | None = None) -> FederatedData:
    """Load, hold out the server's rows and partition the rest; a pure, seeded function of ``data_inputs``."""
    check_config_size(config)
    inputs = data_inputs(config, n_partitions)
    dataset = load_dataset(inputs["dataset"], csv_path=inputs["csv_path"], target=inputs["target"],
                           n_samples=inputs["n_samples"], n_features=inputs["n_features"],
                           n_classes=inputs["n_classes"], seed=inputs["seed"], target_bins=inputs["target_bins"],
                           split_column=inputs["split_column"], keep_columns=inputs["keep_columns"])
    return make_federated_data(
        dataset, n_clients=inputs["n_clients"], partition_method=inputs["partition_method"], alpha=inputs["alpha"],
        shards_per_client=inputs["shards_per_client"], quantity_skew=inputs["quantity_skew"],
        min_samples=inputs["min_samples"], test_size=inputs["test_size"], val_size=inputs["val_size"],
        seed=inputs["seed"])


def data_split(config: RunConfig, dataset: Dataset | None = None) -> dict[str, Any] | None:
    """What decides which rows the server holds out, for a client to check it rebuilt the same pool.

    None for a CSV (each site has its own file).
    """
    if config.dataset == "csv":
        return None
    split = {"dataset": config.dataset, "test_size": config.test_size, "val_size": config.effective_val_size,
             "seed": config.seed}
    if config.dataset in ("synthetic", "xor"):
        split["n_samples"] = config.n_samples
    if config.dataset == "synthetic":
        split.update(n_features=config.n_features, n_classes=config.n_classes)
    return split


def make_task(config: RunConfig, data: FederatedData) -> Task:
    return Task(model=config.model, model_params=dict(config.model_params),
                n_features=int(data.split.X_train.shape[1]), classes=list(data.dataset.classes),
                feature_names=list(data.dataset.feature_names),
                preprocess=make_preprocess(data.stats if config.standardize else None, data.dataset.target_edges),
                local_test_size=config.local_test_size, data_split=data_split(config))


def server_data(data: FederatedData) -> ServerData:
    split = data.split
    has_val = split.X_val is not None and len(split.X_val) > 0
    return ServerData(split.X_test, split.y_test, split.X_val if has_val else None, split.y_val if has_val else None)


def round_settings(config: RunConfig) -> RoundSettings:
    schedule = None if parse_schedule(config.lr_schedule).is_constant else config.learning_rate_at
    return RoundSettings(rounds=config.effective_rounds, fraction=config.fraction, min_clients=config.min_clients,
                         round_timeout=config.round_timeout, seed=config.seed, client_eval=config.client_eval,
                         fit_config=config.fit_config(), learning_rate=schedule, secagg=config.secagg)


def make_strategy(config: RunConfig) -> Strategy:
    """The rule, its model's exact merge where it has one, then differential privacy and a server optimiser."""
    model = get_model(config.model)
    strategy = get_strategy(config.aggregation).from_config(config)
    if not isinstance(strategy, ParameterStrategy):
        return strategy
    if model.exact_merge:
        return ExactMerge(model)
    if config.dp != "none":
        strategy = WithDifferentialPrivacy(strategy, config.dp, config.clip_norm, config.noise_multiplier,
                                           config.dp_delta, seed=config.seed)
    if config.server_opt != "none":
        strategy = WithServerOptimizer(strategy, make_server_optimizer(
            config.server_opt, server_lr=config.server_lr, momentum=config.server_momentum))
    return strategy


def check_partitions(data: FederatedData, n_partitions: int) -> None:
    """A column split has as many partitions as values: a client told another N would take another site."""
    if data.site_names and len(data.parts) != n_partitions:
        raise DataError(f"splitting by '{data.dataset.groups.column if data.dataset.groups else '?'}' makes "
                        f"{len(data.parts)} partitions, one per value ({', '.join(data.site_names)}), not "
                        f"{n_partitions}: use --num-partitions {len(data.parts)}")


def _plan_without_data(config: RunConfig, classes: list, n_features: int | None) -> RunPlan:
    if get_strategy(config.aggregation).needs_validation:
        raise ConfigError("stacking needs a validation split on the server: give it a dataset or a CSV")
    labels = sorted(set(normalize_labels([str(c).strip() for c in classes if str(c).strip()]).tolist()))
    if len(labels) < 2:
        raise ConfigError("a server without data needs at least two class labels, e.g. --classes 0,1")
    if not n_features or n_features < 1:
        raise ConfigError("a server without data needs the number of features, e.g. --features 30")
    task = Task(config.model, dict(config.model_params), int(n_features), labels,
                local_test_size=config.local_test_size)
    return RunPlan(config, task, None, None, round_settings(config))


def _plan_from_summaries(config: RunConfig) -> RunPlan:
    """A server with no rows at all: the sites' summaries will say the columns, the scaling and the classes."""
    if get_strategy(config.aggregation).needs_validation:
        raise ConfigError("stacking needs a validation split on the server: give it a dataset or a CSV")
    if config.target_bins:
        raise ConfigError("binning the target into quantile classes needs the server's own copy of the data "
                          "(--csv): the sites' summaries do not carry quantiles")
    task = Task(config.model, dict(config.model_params), 0, [], local_test_size=config.local_test_size)
    plan = SummaryPlan(target=config.target, min_category_count=config.min_category_count,
                       standardize=config.standardize)
    return RunPlan(config, task, None, None, round_settings(config), summaries=plan)


def client_partition(config: RunConfig, partition_id: int, n_partitions: int) -> tuple[np.ndarray, np.ndarray,
                                                                                        list[str]]:
    """Partition ``partition_id`` of ``n_partitions``: the rows a simulation would give that client.

    The same split as the server's (test and validation rows held out the
    same way), so no client trains on rows the server tests or validates on.
    """
    data = load_data(config, n_partitions)
    check_partitions(data, n_partitions)
    X, y = data.client_data(partition_id)
    return X, y, list(data.dataset.feature_names)
