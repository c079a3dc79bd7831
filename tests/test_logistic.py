"""Logistic regression that converges (issue 17): local gradient steps the server sizes.

A local epoch of ``logreg`` used to be one warm-started L-BFGS iteration,
whose first step always has unit length: every site moved the model a fixed
distance whatever its gradient, and on non-IID sites the model never settled.
The ``gd`` solver takes full-batch gradient steps on the site's share of the
pooled objective, so FedAvg of one step is one step of gradient descent on
the pooled rows, and the run goes where scikit-learn goes on the pooled rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import approx_fprime
from sklearn.linear_model import LogisticRegression

from fl.data import apply_standardization
from fl.learning.logistic import gradient_steps, loss_and_gradient, one_vs_rest_gradient, targets
from fl.learning.models import get_model
from fl.runs import simulation
from fl.runs.baselines import training_rows
from fl.runs.build import load_data
from fl.runs.config import ConfigError, RunConfig
from tests.site_helpers import host_sites, pooled_rows


@pytest.mark.parametrize("k", [2, 4])
def test_the_gradient_is_the_objectives(k: int) -> None:
    # Prepare
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(30, 3)), rng.integers(0, k, 30)
    classes = np.arange(k)
    outputs = 1 if k == 2 else k
    W, b = rng.normal(size=(outputs, 3)), rng.normal(size=outputs)
    T = targets(y, classes, outputs)

    def f(theta):
        return loss_and_gradient(X, T, theta[:outputs * 3].reshape(outputs, 3), theta[outputs * 3:], 0.1)[0]

    # Execute
    _, dW, db = loss_and_gradient(X, T, W, b, 0.1)
    # Assert
    numeric = approx_fprime(np.concatenate([W.ravel(), b]), f, 1e-7)
    assert np.allclose(np.concatenate([dW.ravel(), db]), numeric, atol=1e-5)


def test_sgds_gradient_is_its_one_vs_rest_objective() -> None:
    # Prepare: scikit-learn's SGDClassifier minimises, per class, mean log loss of ±1 targets + alpha/2 ||w||²
    rng = np.random.default_rng(1)
    X, y, classes = rng.normal(size=(25, 3)), rng.integers(0, 3, 25), np.arange(3)
    W, b = rng.normal(size=(3, 3)), rng.normal(size=3)
    sign = 2.0 * targets(y, classes, 3) - 1.0

    def f(theta):
        z = X @ theta[:9].reshape(3, 3).T + theta[9:]
        return float(np.mean(np.sum(np.logaddexp(0, -sign * z), axis=1))) + 0.5 * 0.01 * np.sum(theta[:9] ** 2)

    # Execute
    dW, db = one_vs_rest_gradient(X, y, classes, W, b, 0.01, "log_loss")
    # Assert
    assert np.allclose(np.concatenate([dW.ravel(), db]), approx_fprime(np.concatenate([W.ravel(), b]), f, 1e-7),
                       atol=1e-5)


def test_fedavg_of_one_step_is_one_step_on_the_pooled_rows() -> None:
    # Prepare: three sites of different sizes and class subsets, a penalty of the pooled rows
    rng = np.random.default_rng(2)
    classes = np.arange(3)
    sites = [(rng.normal(size=(n, 4)), rng.choice(cl, n)) for n, cl in ((40, [0, 1]), (25, [1, 2]), (10, [0]))]
    N = sum(len(y) for _, y in sites)
    W, b = rng.normal(size=(3, 4)), rng.normal(size=3)
    # Execute
    steps = [gradient_steps(X, y, classes, W, b, steps=1, learning_rate=0.7, l2=1.0 / N) for X, y in sites]
    W_fed = sum(len(y) / N * w for (_, y), (w, _) in zip(sites, steps))
    b_fed = sum(len(y) / N * v for (_, y), (_, v) in zip(sites, steps))
    X_all, y_all = np.vstack([X for X, _ in sites]), np.concatenate([y for _, y in sites])
    _, dW, db = loss_and_gradient(X_all, targets(y_all, classes, 3), W, b, 1.0 / N)
    # Assert
    assert np.allclose(W_fed, W - 0.7 * dW, atol=1e-12) and np.allclose(b_fed, b - 0.7 * db, atol=1e-12)


def test_a_simulation_of_one_local_step_is_gradient_descent_on_the_pooled_rows() -> None:
    # Prepare: a real run over sockets, full participation, one local step a round
    config = RunConfig(dataset="wine", model="logreg", clients=4, partition="dirichlet", alpha=0.5, rounds=5,
                       learning_rate=0.5, workers=0, seed=4).validate()
    # Execute
    result = simulation.run(config)
    # Assert: the same steps on the pooled training rows, with numpy
    data = load_data(config)
    ids = [f"client_{i:03d}" for i in range(4)]
    rows = [training_rows(config, data, i, cid) for i, cid in enumerate(ids)]
    X = apply_standardization(np.vstack([X for X, _ in rows]), data.stats)
    y = np.concatenate([y for _, y in rows])
    classes = np.asarray(data.dataset.classes)
    W, b = np.zeros((3, X.shape[1])), np.zeros(3)
    W, b = gradient_steps(X, y, classes, W, b, steps=5, learning_rate=0.5, l2=1.0 / (1.0 * len(y)))
    model = result.model.named_steps["model"]
    assert np.allclose(model.coef_, W, rtol=0, atol=1e-9) and np.allclose(model.intercept_, b, rtol=0, atol=1e-9)


def test_the_lbfgs_solver_is_kept_and_the_solver_is_checked() -> None:
    # Prepare / Execute
    lbfgs = RunConfig(model="logreg", model_params={"local_solver": "lbfgs"}).validate()
    # Assert: a schedule needs a rate, which L-BFGS does not take; a made-up solver is refused by name
    assert get_model("logreg").learning_rate(lbfgs.model_params) is None
    with pytest.raises(ConfigError, match="learning-rate schedule"):
        RunConfig(model="logreg", model_params={"local_solver": "lbfgs"}, lr_schedule="cosine").validate()
    RunConfig(model="logreg", lr_schedule="cosine").validate()  # gd takes one
    with pytest.raises(ConfigError, match="local_solver must be one of gd, lbfgs"):
        RunConfig(model="logreg", model_params={"local_solver": "newton"}).validate()


# ---------------------------------------------------------------- the penguin islands, as the issue ran them

penguins = pytest.importorskip("palmerpenguins")


def island_run(tmp_path: Path, model_params: dict, rounds: int = 20):
    """Three island sites (Torgersen: Adelie only), a server without data; returns (accuracies, pooled LR)."""
    sites = {}
    for island, rows in penguins.load_penguins().groupby("island"):
        sites[island.lower()] = tmp_path / f"{island.lower()}.csv"
        rows.drop(columns="island").to_csv(sites[island.lower()], index=False)
    config = RunConfig(dataset="csv", target="species", model="logreg", model_params=model_params, rounds=rounds,
                       min_clients=3, clients=3)
    handle, result, _ = host_sites(config, sites)
    assert result is not None and result.status == "completed", result and result.error
    (train_X, train_y), (test_X, test_y) = pooled_rows(handle.server.task, sites, "species")
    pooled = LogisticRegression(max_iter=5000).fit(train_X, train_y)
    return [r["accuracy"] for r in result.rounds], pooled.score(test_X, test_y)


def test_three_islands_converge_to_the_pooled_logistic_regression(tmp_path: Path) -> None:
    # Prepare / Execute: the default local solver (gd)
    accuracies, pooled = island_run(tmp_path, {})
    # Assert: within 2 points of the pooled model, and no fall of more than 2 points below the best round
    assert accuracies[-1] >= pooled - 0.02, (accuracies, pooled)
    assert accuracies[-1] >= max(accuracies) - 0.02, accuracies


def test_the_lbfgs_solver_drifts_on_the_same_islands(tmp_path: Path) -> None:
    """What the issue measured, kept as the reason for the default: one L-BFGS iteration a round falls."""
    accuracies, pooled = island_run(tmp_path, {"local_solver": "lbfgs"}, rounds=10)
    assert accuracies[-1] < max(accuracies) - 0.05, accuracies
