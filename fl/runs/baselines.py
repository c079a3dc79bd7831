"""Reference numbers that tell whether federating paid off.

- centralized: the same model trained on the union of the clients' training
  rows (what you could do if the data could be pooled);
- local-only: each client's model trained on its own training rows alone,
  scored on the same test split (what each client gets without federating);
- majority: always answering the most frequent training label (what a model
  that learned nothing from the features scores; a skewed label makes it high).

Training rows are what the clients train on: each partition minus the share
a client holds out to score the global model (``local_test_size``).

All three are scored on the server's held-out test split, like the global
model. Each is computed on its own: one that cannot be computed keeps the
keys of the others, with ``None`` for its numbers and a ``reason`` (a
sentence); a client whose local-only fit fails is left out of the mean, its
reason in ``left_out``.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from sklearn.dummy import DummyClassifier

from fl.runs.config import RunConfig
from fl.data import FederatedData, apply_standardization, local_holdout
from fl.learning.metrics import score_classifier
from fl.federation.task import client_seed
from fl.learning.models import get_model
from fl.learning.training import LocalModel

MAX_LOCAL_BASELINE_CLIENTS = 100
METRICS = ("accuracy", "loss", "f1_macro")
KINDS = ("centralized", "local_only", "majority")


class BaselinesCancelled(Exception):
    """The run was stopped while its baselines were being computed."""


def missing(reason: str, **extra: Any) -> dict[str, Any]:
    """A baseline that could not be computed: no numbers, and why (a sentence)."""
    return {**{k: None for k in METRICS}, **extra, "reason": reason}


def all_missing(reason: str) -> dict[str, Any]:
    """Every baseline missing for one shared reason (the data could not be prepared)."""
    return {kind: missing(reason, **({"per_client": {}} if kind == "local_only" else {})) for kind in KINDS}


def _why(exc: Exception) -> str:
    return str(exc).strip() or type(exc).__name__


def _fit_and_score(config: RunConfig, X: np.ndarray, y: np.ndarray, X_test: np.ndarray, y_test: np.ndarray,
                   classes: np.ndarray, seed: int) -> dict[str, float]:
    if len(y) == 0:
        raise ValueError("no training rows")
    params = get_model(config.model).whole_params(config.model_params, config.effective_rounds)  # as many trees
    model = LocalModel(config.model, params, classes, X.shape[1], seed=seed)
    model.fit(X, y, whole_model=True)
    return score_classifier(model.estimator_, X_test, y_test, classes)


def majority_baseline(y_train: np.ndarray, X_test: np.ndarray, y_test: np.ndarray,
                      classes: np.ndarray) -> dict[str, Any]:
    """Always answer the most frequent training label, with the training labels' frequencies as probabilities.

    Scored like every model (score_classifier: the loss clips the prior of a
    class no client holds). ``class`` is that label; a tie goes to the first
    class in the task's order.
    """
    if len(y_train) == 0:
        return missing("the clients hold no training rows")
    prior = DummyClassifier(strategy="prior").fit(np.zeros((len(y_train), 1)), y_train)
    scores = score_classifier(prior, np.zeros((len(y_test), 1)), y_test, classes)
    counts = np.array([np.sum(y_train == c) for c in classes])
    label = classes[int(np.argmax(counts))]
    return {**scores, "class": label.item() if hasattr(label, "item") else label}


def compute_baselines(config: RunConfig, data: FederatedData, client_ids: list[str],
                      should_stop: Callable[[], bool] = lambda: False,
                      on_partial: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Centralized, local-only and majority-class baselines for a simulated run (seconds to a minute).

    ``should_stop`` is asked before every fit; when it says yes, BaselinesCancelled.
    A baseline that fails is recorded with its reason; it never takes the others with it.
    ``on_partial`` gets the majority and centralized baselines as soon as they are known, before the
    local-only fits (up to a hundred of them), so a page can show them meanwhile.
    """
    if should_stop():
        raise BaselinesCancelled()
    stats = data.stats if config.standardize else None
    classes = np.asarray(data.dataset.classes)
    X_test = apply_standardization(data.split.X_test, stats)
    y_test = data.split.y_test
    # Exactly the rows the clients train on: each client's partition minus its own held-out rows.
    own = [training_rows(config, data, i, client_ids[i]) for i in range(len(data.parts))]
    y_pool = np.concatenate([y for _, y in own]) if own else np.empty(0)
    try:
        majority = majority_baseline(y_pool, X_test, y_test, classes)
    except Exception as exc:
        majority = missing(f"the majority class could not be scored: {_why(exc)}")
    try:
        X_pool = apply_standardization(np.vstack([X for X, _ in own]), stats)
        central: dict[str, Any] = _fit_and_score(config, X_pool, y_pool, X_test, y_test, classes, config.seed)
    except Exception as exc:  # a model that cannot fit the pooled data, say
        central = missing(f"the {config.model} model could not be trained on the pooled rows: {_why(exc)}")
    if on_partial is not None:
        on_partial({"centralized": central, "majority": majority})
    local = local_only_baseline(config, data, client_ids, own, X_test, y_test, classes, should_stop)
    return {"centralized": central, "local_only": local, "majority": majority}


def local_only_baseline(config: RunConfig, data: FederatedData, client_ids: list[str],
                        own: list[tuple[np.ndarray, np.ndarray]], X_test: np.ndarray, y_test: np.ndarray,
                        classes: np.ndarray, should_stop: Callable[[], bool]) -> dict[str, Any]:
    """Each client's model on its own rows; the mean over the clients whose fit succeeded.

    ``per_client``: client -> accuracy of those in the mean; ``left_out``:
    client -> why it is not; ``n_clients``: how many the mean is over, of
    ``clients_total`` (at most MAX_LOCAL_BASELINE_CLIENTS are fitted).
    """
    stats = data.stats if config.standardize else None
    per_client: dict[str, float] = {}
    left_out: dict[str, str] = {}
    rows = []
    fitted = min(len(data.parts), MAX_LOCAL_BASELINE_CLIENTS)
    for i in range(fitted):
        if should_stop():
            raise BaselinesCancelled()
        X, y = own[i]
        try:
            scores = _fit_and_score(config, apply_standardization(X, stats), y, X_test, y_test, classes,
                                    config.seed + i)
        except Exception as exc:
            left_out[client_ids[i]] = _why(exc)
            continue
        per_client[client_ids[i]] = scores["accuracy"]
        rows.append(scores)
    extra: dict[str, Any] = {"per_client": per_client, "left_out": left_out, "n_clients": len(rows),
                             "clients_total": len(data.parts)}
    if not rows:
        if not fitted:
            return missing("there are no clients", **extra)
        return missing(f"no client's model could be trained on its own rows ({_first_reason(left_out)})", **extra)
    means = {k: float(np.nanmean([r[k] for r in rows])) for k in METRICS}
    return {**means, **extra}


def _first_reason(left_out: dict[str, str]) -> str:
    cid, reason = next(iter(left_out.items()))
    more = f", and {len(left_out) - 1} more" if len(left_out) > 1 else ""
    return f"{cid}: {reason}{more}"


def training_rows(config: RunConfig, data: FederatedData, i: int, client_id: str) -> tuple[np.ndarray, np.ndarray]:
    """Client i's raw training rows: its partition without the rows it holds out to score the global model."""
    X, y = data.client_data(i)
    train, _ = local_holdout(len(y), config.local_test_size, client_seed(config.seed, client_id))
    return X[train], y[train]
