"""Issue 4 acceptance over real sockets: attacks vs robust rules, DP trend, faults, FedProx."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pandas as pd
import pytest

from fl.runs import simulation
from fl.federation.behaviour import Behaviour, assign_behaviours
from fl.runs.config import RunConfig
from fl.learning.fedprox import prox_logreg, proximal_step
from fl.learning.privacy import PrivacyAccountant, add_gaussian_noise, clip_update, update_norm
from fl.cli.main import main
from ui.charts import metrics_table
from ui.format import epsilon_shown

ATTACKED = dict(dataset="digits", clients=10, rounds=8, model="logreg", partition="iid", local_epochs=5, malicious_clients=3, attack="sign_flip",
                seed=0)


def _final(config: RunConfig) -> float:
    result = simulation.run(config)
    assert result.status == "completed"
    return result.final_metrics["accuracy"]


def test_sign_flip_breaks_fedavg_and_robust_rules_recover(no_thread_leaks):
    # Prepare / Execute
    fedavg = _final(RunConfig(**ATTACKED, aggregation="fedavg"))
    robust = {
        "median": _final(RunConfig(**ATTACKED, aggregation="median")),
        "trimmed_mean": _final(RunConfig(**ATTACKED, aggregation="trimmed_mean", trim_beta=0.3)),
        "krum": _final(RunConfig(**ATTACKED, aggregation="krum", num_malicious=3)),
    }
    # Assert: clearly worse means by at least 30 points
    for name, accuracy in robust.items():
        assert accuracy > 0.85, name
        assert accuracy - fedavg > 0.3, name


def test_dp_noise_costs_accuracy_and_epsilon_grows_with_rounds():
    # Prepare
    base = dict(dataset="digits", clients=10, rounds=6, model="logreg", partition="iid", local_epochs=5, dp="server", clip_norm=1.0, seed=0)
    # Execute
    runs = {sigma: simulation.run(RunConfig(**base, noise_multiplier=sigma)) for sigma in (0.3, 1.0, 4.0)}
    # Assert
    accuracy = [runs[s].final_metrics["accuracy"] for s in (0.3, 1.0, 4.0)]
    assert accuracy[0] > accuracy[2] + 0.1 and accuracy[0] >= accuracy[1] - 0.02
    for sigma, result in runs.items():
        eps = [r["epsilon"] for r in result.rounds]
        assert all(b > a for a, b in zip(eps, eps[1:])), (sigma, eps)
    assert runs[0.3].rounds[-1]["epsilon"] > runs[4.0].rounds[-1]["epsilon"]


def test_client_side_dp_clips_on_the_client_and_the_server_checks():
    # Prepare / Execute
    result = simulation.run(RunConfig(model="logreg", partition="iid", dataset="iris", clients=3, rounds=3, dp="client", clip_norm=0.5,
                                      noise_multiplier=0.5))
    # Assert: every client update passed the server's norm check
    assert result.status == "completed"
    assert all(r["n_failures"] == 0 and r["epsilon"] > 0 for r in result.rounds)


def test_dropout_and_slow_clients_are_failures_and_stragglers_not_crashes(no_thread_leaks):
    # Prepare
    config = RunConfig(model="logreg", partition="iid", dataset="iris", clients=6, rounds=4, dropout_prob=0.3, slow_clients=1, slow_delay=1.2,
                       round_timeout=0.6, seed=1)
    # Execute
    handle = simulation.start(config)
    result = handle.wait(60)
    roles = {cid: c.get("role") for cid, c in handle.snapshot()["clients"].items() if c.get("role")}
    # Assert
    assert result.status == "completed" and len(result.rounds) == 4
    assert sum(r["n_failures"] for r in result.rounds) >= 4  # the slow one every round, plus dropouts
    assert sum(r["n_stragglers"] for r in result.rounds) >= 1
    assert list(roles.values()) == ["slow (+1.2 s)"]


def test_fedprox_runs_for_every_iterative_model():
    for model in ("logreg", "sgd", "mlp"):
        result = simulation.run(RunConfig(partition="iid", dataset="wine", clients=3, rounds=3, model=model, proximal_mu=0.1))
        assert result.status == "completed" and result.final_metrics["accuracy"] > 0.8, model


def test_server_optimisers_run_end_to_end():
    for opt in ("fedavgm", "fedadagrad", "fedadam", "fedyogi"):
        result = simulation.run(RunConfig(model="logreg", partition="iid", dataset="wine", clients=3, rounds=4, server_opt=opt, server_lr=0.5,
                                          server_momentum=0.5 if opt == "fedavgm" else 0.0))
        assert result.status == "completed" and result.final_metrics["accuracy"] > 0.8, opt


# ---------------------------------------------------------------------- units
def test_behaviours_by_hand():
    # Prepare
    g = [np.array([1.0, 1.0])]
    w = [np.array([2.0, 0.0])]  # update (1, -1)
    classes = np.array([0, 1, 2])
    # Execute / Assert
    np.testing.assert_allclose(Behaviour(attack="sign_flip", attack_scale=4).update(g, w)[0], [-3.0, 5.0])
    np.testing.assert_allclose(Behaviour(attack="scale", attack_scale=10).update(g, w)[0], [11.0, -9.0])
    np.testing.assert_array_equal(Behaviour(attack="label_flip").labels(np.array([0, 1, 2, 2]), classes),
                                  [2, 1, 0, 0])
    noisy = Behaviour(attack="gaussian_noise", attack_scale=1.0, seed=3).update(g, w)[0]
    assert not np.allclose(noisy, w[0])
    assert Behaviour().update(g, w)[0] is w[0]


def test_assign_behaviours_is_seeded_and_counts_right():
    ids = [f"c{i}" for i in range(10)]
    a = assign_behaviours(ids, seed=5, malicious_clients=3, attack="scale", slow_clients=2, slow_delay=1.0)
    b = assign_behaviours(ids, seed=5, malicious_clients=3, attack="scale", slow_clients=2, slow_delay=1.0)
    assert [x.malicious for x in a.values()] == [x.malicious for x in b.values()]
    assert sum(x.malicious for x in a.values()) == 3 and sum(x.delay_s > 0 for x in a.values()) == 2


def test_clipping_and_noise():
    # Prepare
    g = [np.zeros(2), np.zeros(1)]
    w = [np.array([3.0, 0.0]), np.array([4.0])]  # norm 5
    # Execute
    clipped = clip_update(g, w, 1.0)
    # Assert
    assert update_norm(g, clipped) == pytest.approx(1.0)
    np.testing.assert_allclose(clipped[0], [0.6, 0.0])
    assert clip_update(g, w, 10.0)[1][0] == 4.0  # under the bound: unchanged
    noisy = add_gaussian_noise([np.zeros(10_000)], 2.0, np.random.default_rng(0))[0]
    assert noisy.std() == pytest.approx(2.0, rel=0.05)


def test_accountant_epsilon_grows_and_falls_with_noise():
    low, high = PrivacyAccountant(0.5, 1e-5), PrivacyAccountant(2.0, 1e-5)
    eps_low = [low.step(10, 10) for _ in range(3)]
    eps_high = [high.step(10, 10) for _ in range(3)]
    assert eps_low == sorted(eps_low) and eps_high[-1] < eps_low[-1]
    assert math.isinf(PrivacyAccountant(0.0, 1e-5).step(10, 10))
    sampled = PrivacyAccountant(1.0, 1e-5)
    assert sampled.step(100, 10) < PrivacyAccountant(1.0, 1e-5).step(100, 100)  # sampling amplifies privacy


def test_proximal_step_and_prox_logreg_pull_towards_the_global_model():
    # Prepare
    np.testing.assert_allclose(proximal_step([np.array([3.0])], [np.array([1.0])], 1.0)[0], [2.0])
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    y = (X[:, 0] > 0).astype(int)
    g_coef, g_int = np.zeros((1, 3)), np.zeros(1)
    # Execute
    free, _ = prox_logreg(X, y, np.array([0, 1]), g_coef, g_int, C=1.0, mu=0.0, max_iter=50)
    held, _ = prox_logreg(X, y, np.array([0, 1]), g_coef, g_int, C=1.0, mu=100.0, max_iter=50)
    # Assert: without the term the weights move far; with a huge mu they stay near the global zeros
    assert free[0, 0] > 1.0
    assert np.abs(held).max() < 0.01


def test_dp_without_noise_says_epsilon_is_infinite_everywhere(tmp_path, capsys, no_thread_leaks):
    # Prepare / Execute: clipping with noise multiplier 0, from the command line
    out = tmp_path / "run"
    code = main(["simulate", "--dataset", "iris", "--clients", "3", "--model", "logreg", "--rounds", "2",
                 "--dp", "server", "--noise-multiplier", "0", "--workers", "0", "--out", str(out)])
    stdout = capsys.readouterr().out.splitlines()
    # Assert: the round lines and the last line say it, metrics.csv and summary.json hold inf, not an empty cell
    assert code == 0
    said = [line for line in stdout if line.startswith("round ")] + [stdout[-1]]
    assert len(said) == 3 and all(line.endswith("epsilon inf (no noise: no privacy)") for line in said), said
    with open(out / "metrics.csv", newline="") as fh:
        assert [row["epsilon"] for row in csv.DictReader(fh)] == ["inf", "inf"]
    assert pd.read_csv(out / "metrics.csv")["epsilon"].tolist() == [math.inf, math.inf]
    assert json.loads((out / "summary.json").read_text())["epsilon"] == "inf"
    # ... and the dashboard's metric and rounds table (from the same rows)
    assert epsilon_shown(math.inf) == "∞ (no noise: no privacy)" and epsilon_shown(2.345) == "2.35"
    rounds = pd.read_csv(out / "metrics.csv").to_dict("records")
    assert metrics_table(rounds)["ε"].tolist() == ["∞", "∞"]
