"""Reference numbers that tell whether federating paid off.

- centralized: the same model trained on the union of the clients' training
  rows (what you could do if the data could be pooled);
- local-only: each client's model trained on its own training rows alone,
  scored on the same test split (what each client gets without federating).

Training rows are what the clients train on: each partition minus the share
a client holds out to score the global model (``local_test_size``).

Both are scored on the server's held-out test split, like the global model.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from fl.runs.config import RunConfig
from fl.data import FederatedData, apply_standardization, local_holdout
from fl.learning.metrics import score_classifier
from fl.federation.task import client_seed
from fl.learning.training import LocalModel

MAX_LOCAL_BASELINE_CLIENTS = 100


class BaselinesCancelled(Exception):
    """The run was stopped while its baselines were being computed."""


def _fit_and_score(config: RunConfig, X: np.ndarray, y: np.ndarray, X_test: np.ndarray, y_test: np.ndarray,
                   classes: np.ndarray, seed: int) -> dict[str, float]:
    model = LocalModel(config.model, config.model_params, classes, X.shape[1], seed=seed)
    model.fit(X, y, whole_model=True)
    return score_classifier(model.estimator_, X_test, y_test, classes)


def compute_baselines(config: RunConfig, data: FederatedData, client_ids: list[str],
                      should_stop: Callable[[], bool] = lambda: False) -> dict[str, Any]:
    """Centralized and local-only baselines for a simulated run (seconds to a minute).

    ``should_stop`` is asked before every fit; when it says yes, BaselinesCancelled.
    """
    if should_stop():
        raise BaselinesCancelled()
    stats = data.stats if config.standardize else None
    classes = np.asarray(data.dataset.classes)
    X_test = apply_standardization(data.split.X_test, stats)
    y_test = data.split.y_test
    # Exactly the rows the clients train on: each client's partition minus its own held-out rows.
    own = [training_rows(config, data, i, client_ids[i]) for i in range(len(data.parts))]
    X_pool = apply_standardization(np.vstack([X for X, _ in own]), stats)
    y_pool = np.concatenate([y for _, y in own])
    central = _fit_and_score(config, X_pool, y_pool, X_test, y_test, classes, config.seed)
    per_client: dict[str, float] = {}
    rows = []
    for i in range(min(len(data.parts), MAX_LOCAL_BASELINE_CLIENTS)):
        if should_stop():
            raise BaselinesCancelled()
        X, y = own[i]
        scores = _fit_and_score(config, apply_standardization(X, stats), y, X_test, y_test, classes, config.seed + i)
        per_client[client_ids[i]] = scores["accuracy"]
        rows.append(scores)
    local = {k: float(np.nanmean([r[k] for r in rows])) if rows else math.nan for k in ("accuracy", "loss", "f1_macro")}
    local["per_client"] = per_client
    return {"centralized": central, "local_only": local}


def training_rows(config: RunConfig, data: FederatedData, i: int, client_id: str) -> tuple[np.ndarray, np.ndarray]:
    """Client i's raw training rows: its partition without the rows it holds out to score the global model."""
    X, y = data.client_data(i)
    train, _ = local_holdout(len(y), config.local_test_size, client_seed(config.seed, client_id))
    return X[train], y[train]
