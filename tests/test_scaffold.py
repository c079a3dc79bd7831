"""SCAFFOLD (issue 17): control variates that correct every local step, kept by clients between rounds."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy.optimize import approx_fprime

from fl.federation.checkpoint import Checkpoint
from fl.learning.aggregation import scaffold
from fl.learning.models import get_model
from fl.learning.models.neural import full_gradient
from fl.learning.strategies import Scaffold, strategies_for
from fl.runs import simulation
from fl.runs.config import ConfigError, RunConfig
from fl.runs.resume import open_resume


def test_the_server_step_by_hand() -> None:
    # Prepare: two clients, one model array; each result is the model, then its change of variate
    results = [([np.array([1.0, 2.0]), np.array([0.5, 0.0])], 30), ([np.array([3.0, 0.0]), np.array([0.0, 1.0])], 10)]
    control = [np.array([0.1, 0.1])]
    # Execute: 100 rows in the federation, 40 of them sampled
    model, new_control = scaffold(results, 1, control, pool_rows=100)
    # Assert: FedAvg of the models; c + Σ n_i Δc_i / N
    assert np.allclose(model[0], [(30 * 1 + 10 * 3) / 40, (30 * 2) / 40])
    assert np.allclose(new_control[0], [0.1 + 30 * 0.5 / 100, 0.1 + 10 * 1.0 / 100])


def test_the_mlp_gradient_is_its_losss() -> None:
    """Pins the one private scikit-learn call SCAFFOLD's MLP uses (``_backprop`` through ``full_gradient``)."""
    # Prepare
    adapter = get_model("mlp")
    rng = np.random.default_rng(0)
    X, y, classes = rng.normal(size=(20, 3)), rng.integers(0, 3, 20), np.arange(3)
    params = {"hidden_layer_sizes": (4,)}
    arrays = adapter.initial_parameters(params, classes, 3, seed=1)
    shapes = [a.shape for _, a in arrays]
    names = [n for n, _ in arrays]

    def loss(theta):
        parts, at = [], 0
        for shape in shapes:
            parts.append(theta[at:at + int(np.prod(shape))].reshape(shape))
            at += int(np.prod(shape))
        est = adapter.global_estimator(params, list(zip(names, parts)), classes, 3)
        proba = np.clip(est.predict_proba(X), 1e-15, 1)
        coefs = [p for n, p in zip(names, parts) if n.startswith("coefs_")]
        return -np.mean(np.log(proba[np.arange(20), y])) + 0.5 * est.alpha * sum(np.sum(c**2) for c in coefs) / 20

    # Execute
    got = adapter.local_gradient(params, X, y, classes, 3, arrays, {})
    # Assert
    flat = np.concatenate([g.ravel() for g in got])
    numeric = approx_fprime(np.concatenate([a.ravel() for _, a in arrays]), loss, 1e-6)
    assert np.allclose(flat, numeric, atol=1e-4)


def test_the_correction_leaves_no_function_on_the_estimator() -> None:
    # Prepare
    adapter = get_model("mlp")
    rng = np.random.default_rng(0)
    X, y, classes = rng.normal(size=(40, 3)), rng.integers(0, 2, 40), np.arange(2)
    arrays = adapter.initial_parameters({}, classes, 3, seed=0)
    correction = [np.full(a.shape, 0.5) for _, a in arrays]
    # Execute
    plain = adapter.fit_local(None, {}, X, y, classes, 3, arrays, 1, {}, 0)
    corrected = adapter.fit_local(None, {}, X, y, classes, 3, arrays, 1, {}, 0, correction=correction)
    # Assert: the correction moved the weights, and the estimator is a plain MLPClassifier again
    assert "_backprop" not in vars(corrected)
    assert not np.allclose(plain.coefs_[0], corrected.coefs_[0])
    assert full_gradient(corrected, X, y)[0][0].shape == corrected.coefs_[0].shape


def test_one_local_step_with_full_participation_is_fedavg() -> None:
    """With one step and every client, c = Σ w_i c_i: the corrections cancel in the average."""
    base = dict(dataset="wine", model="logreg", clients=4, partition="dirichlet", alpha=0.3, rounds=4, workers=0)
    fedavg = simulation.run(RunConfig(**base).validate())
    corrected = simulation.run(RunConfig(**base, aggregation="scaffold").validate())
    for a, b in zip(fedavg.rounds, corrected.rounds):
        assert a["accuracy"] == pytest.approx(b["accuracy"], abs=1e-12)
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-9)


@pytest.mark.parametrize("model", ["logreg", "sgd", "mlp"])
def test_scaffold_runs_for_the_iterative_models_and_moves_off_fedavg(model: str) -> None:
    # Prepare: several local epochs on skewed clients, where SCAFFOLD's correction matters
    base = dict(dataset="digits", model=model, clients=5, partition="dirichlet", alpha=0.1, rounds=3,
                local_epochs=3, workers=0)
    # Execute
    fedavg = simulation.run(RunConfig(**base).validate())
    corrected = simulation.run(RunConfig(**base, aggregation="scaffold").validate())
    # Assert
    assert corrected.status == "completed" and all(r["n_failures"] == 0 for r in corrected.rounds)
    assert corrected.rounds[-1]["loss"] != pytest.approx(fedavg.rounds[-1]["loss"], abs=1e-9)


def test_who_scaffold_serves_and_what_it_refuses() -> None:
    assert "scaffold" in strategies_for(get_model("logreg")) and "scaffold" in strategies_for(get_model("mlp"))
    assert "scaffold" not in strategies_for(get_model("gaussian_nb"))
    assert "scaffold" not in strategies_for(get_model("random_forest"))
    with pytest.raises(ConfigError, match="control variates travel unclipped"):
        RunConfig(model="logreg", aggregation="scaffold", dp="server").validate()
    RunConfig(model="logreg", aggregation="scaffold", server_opt="fedadam").validate()  # a server step on top


def test_the_variates_survive_a_checkpoint() -> None:
    # Prepare
    strategy = Scaffold()
    strategy.bind([("coef_", (1, 2)), ("intercept_", (1,))])
    strategy.begin_round(1, 50)
    strategy.accepted(["a", "b"])
    strategy.aggregate([([np.ones((1, 2)), np.ones(1), np.full((1, 2), 2.0), np.ones(1)], 20),
                        ([np.zeros((1, 2)), np.zeros(1), np.ones((1, 2)), np.zeros(1)], 30)], None)
    # Execute
    state = Checkpoint.from_bytes(Checkpoint(1, [], {}, {}, {"inner": strategy.state()}).to_bytes()).strategy
    # Assert
    variates = Scaffold.variates_in(state)
    assert np.allclose(variates["a"][0], 2.0) and np.allclose(variates["b"][1], 0.0)
    back = Scaffold()
    back.load_state(state["inner"])
    assert np.allclose(back.control[0], (20 * 2.0 + 30 * 1.0) / 50)


def test_a_stopped_scaffold_run_resumed_ends_with_the_uninterrupted_numbers(tmp_path) -> None:
    """The clients' variates come back from the checkpoint: restarted clients go on where they were."""
    # Prepare
    config = RunConfig(dataset="digits", model="logreg", clients=5, partition="dirichlet", alpha=0.3, rounds=6,
                       local_epochs=3, aggregation="scaffold", workers=0, seed=2).validate()
    straight = simulation.run(config, out_dir=str(tmp_path / "straight"))
    handle = simulation.start(config, out_dir=str(tmp_path / "cut"))
    deadline = time.monotonic() + 60
    while handle.state.current_round < 4 and time.monotonic() < deadline and handle.result is None:
        time.sleep(0.005)
    handle.stop()
    handle.wait(30)
    # Execute
    resumable = open_resume(tmp_path / "cut")
    assert 1 <= resumable.checkpoint.round < config.rounds
    resumed = simulation.start(resumable.config, out_dir=str(tmp_path / "cut"), run_id=resumable.run_id,
                               resume=resumable.checkpoint)
    resumed.wait(120)
    # Assert
    assert resumed.result is not None and resumed.result.status == "completed"
    for key in ("accuracy", "loss"):
        assert resumed.result.final_metrics[key] == pytest.approx(straight.final_metrics[key], abs=1e-9)
