"""Gradient-boosted trees that federate by histograms (issue 18): the sites send sums, the server grows trees.

With the same bin edges, the trees grown from the sites' summed histograms
are the trees grown from the pooled rows: the done-when test runs a real
simulation over sockets and compares its model with ``fit_pooled`` on the
very rows the clients trained on, to 1e-9 in the raw scores.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from fl.data import apply_standardization
from fl.learning import trees as T
from fl.learning.models import get_model
from fl.learning.models.gbdt import HistGBDTClassifier
from fl.runs import simulation
from fl.runs.baselines import training_rows
from fl.runs.build import client_ids_for, load_data
from fl.runs.config import ConfigError, RunConfig
from fl.runs.resume import open_resume


# ---------------------------------------------------------------- the math, no sockets

def test_summed_site_histograms_grow_the_pooled_trees() -> None:
    # Prepare: three sites of breast cancer, one benign-only, with missing values; the same edges everywhere
    X, y = load_breast_cancer(return_X_y=True)
    rng = np.random.default_rng(0)
    X = X.copy()
    X[rng.random(X.shape) < 0.05] = np.nan
    sites = [np.arange(0, 200), np.arange(200, 450), np.flatnonzero(y == 1)[:60]]
    edges = T.merge_sketches([T.quantile_sketch(X[s]) for s in sites], 32)
    settings, n_bins = T.Settings(max_depth=3), T.max_bin_count(edges)
    binned = [T.bin_rows(X[s], edges) for s in sites]
    raw = [np.zeros((len(s), 1)) for s in sites]
    forest = T.Forest.empty(settings.max_depth)
    # Execute: every level from the sum of the sites' histograms
    for _ in range(5):
        grads = [T.gradients(r, y[s], 2) for r, s in zip(raw, sites)]
        grower = T.TreeGrower(settings, 1)
        while not grower.done:
            parts = [T.histograms(b, g, h, T.node_of_rows(grower.trees(), b, n_bins), grower.frontier(), n_bins)
                     for b, (g, h) in zip(binned, grads)]
            grower.grow(sum(p[0] for p in parts), sum(p[1] for p in parts))
        new = grower.trees()
        raw = [T.raw_scores(new, b, 1, n_bins, start=r) for b, r in zip(binned, raw)]
        forest = forest.add(new)
    # Assert: the pooled rows, the same algorithm, the same trees
    pooled_rows = np.concatenate(sites)
    pooled = T.fit_pooled(X[pooled_rows], y[pooled_rows], 2, edges, settings, 5)
    assert np.array_equal(pooled.feature, forest.feature) and np.array_equal(pooled.threshold, forest.threshold)
    assert np.allclose(T.predict_raw(pooled, X, edges, 1), T.predict_raw(forest, X, edges, 1), atol=1e-9, rtol=0)


def test_merged_sketches_cut_where_the_pooled_quantiles_are() -> None:
    # Prepare: two sites of very different ranges
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, (3000, 1)), rng.normal(5, 1, (1000, 1))
    # Execute
    edges = T.merge_sketches([T.quantile_sketch(a), T.quantile_sketch(b)], 8)[0]
    # Assert: the edges are the pooled quantiles, within the sketches' resolution
    expected = np.quantile(np.concatenate([a, b])[:, 0], np.arange(1, 8) / 8)
    assert np.allclose(edges, expected, atol=0.05)


def test_a_feature_of_few_values_gets_a_bin_per_value() -> None:
    X = np.array([[0.0], [1.0], [1.0], [16.0]] * 10)
    edges = T.merge_sketches([T.quantile_sketch(X)], 64)[0]
    assert np.allclose(edges, [0.5, 8.5])


def test_the_estimator_is_a_classifier_with_importances() -> None:
    X, y = load_breast_cancer(return_X_y=True)
    est = HistGBDTClassifier(n_rounds=10, max_depth=3).fit(X, y)
    proba = est.predict_proba(X)
    assert proba.shape == (len(y), 2) and np.allclose(proba.sum(axis=1), 1)
    assert (est.predict(X) == y).mean() > 0.95
    assert est.feature_importances_.sum() == pytest.approx(1.0) and est.feature_importances_.argmax() >= 0
    with pytest.raises(ValueError, match="max_depth"):
        get_model("hist_gbdt").check_params({"max_depth": 0})


# ---------------------------------------------------------------- the product, over sockets

def config(**over) -> RunConfig:
    base = dict(dataset="breast_cancer", model="hist_gbdt", clients=5, partition="dirichlet", alpha=0.5, rounds=6,
                workers=0, seed=2, model_params={"max_depth": 3, "max_bins": 32})
    return RunConfig(**{**base, **over}).validate()


def pooled_reference(cfg: RunConfig, estimator) -> np.ndarray:
    """fit_pooled on exactly the rows the clients trained on, with the run's edges: raw scores of the test rows."""
    data = load_data(cfg)
    ids = client_ids_for(data)
    rows = [training_rows(cfg, data, i, cid) for i, cid in enumerate(ids)]
    X = apply_standardization(np.vstack([r[0] for r in rows]), data.stats)
    y = np.concatenate([r[1] for r in rows])
    classes = np.asarray(data.dataset.classes)
    edges = T.edges_list(estimator.edges_)
    forest = T.fit_pooled(X, np.searchsorted(classes, y), len(classes), edges, estimator.settings(), cfg.rounds)
    X_test = apply_standardization(data.split.X_test, data.stats)
    return T.predict_raw(forest, X_test, edges, T.n_outputs(len(classes))), X_test


@pytest.mark.parametrize("dataset, alpha", [("breast_cancer", 0.5), ("wine", 0.1)])
def test_a_federated_run_grows_the_pooled_trees(dataset: str, alpha: float) -> None:
    """Done-when: the same algorithm with the same bins, federated or pooled, to 1e-9 in predictions (wine at
    Dirichlet 0.1: sites lacking classes)."""
    # Prepare
    cfg = config(dataset=dataset, alpha=alpha)
    # Execute
    result = simulation.run(cfg)
    # Assert
    assert result.status == "completed" and all(r["n_failures"] == 0 for r in result.rounds)
    estimator = result.model.named_steps["model"]
    expected, X_test = pooled_reference(cfg, estimator)
    raw = estimator.decision_function(X_test)
    assert np.allclose(raw.reshape(expected.shape), expected, atol=1e-9, rtol=0)
    assert estimator.tree_feature_.shape[0] == cfg.rounds * T.n_outputs(len(estimator.classes_))


def test_a_level_too_large_for_one_message_is_asked_in_parts(monkeypatch) -> None:
    """Done-when (frames sized to the limits): with a budget of a few nodes per step, every level is asked in
    slices of the frontier; the trees are still the pooled ones."""
    # Prepare: digits (10 trees a round, 64 features): 2 nodes of histograms a step
    from fl.federation import global_model

    cfg = config(dataset="digits", clients=3, rounds=2, partition="iid", model_params={"max_depth": 3, "max_bins": 16})
    monkeypatch.setattr(global_model, "HISTOGRAM_BYTES_PER_STEP", 2 * 64 * 17 * 16)
    # Execute
    result = simulation.run(cfg)
    # Assert
    assert result.status == "completed", result.error
    estimator = result.model.named_steps["model"]
    expected, X_test = pooled_reference(cfg, estimator)
    assert np.allclose(estimator.decision_function(X_test), expected, atol=1e-9, rtol=0)


def test_the_aggregation_is_chosen_for_it_and_others_are_refused() -> None:
    assert RunConfig(model="hist_gbdt").aggregation == "histograms"
    with pytest.raises(ConfigError, match="histograms"):
        RunConfig(model="hist_gbdt", aggregation="median").validate()
    with pytest.raises(ConfigError, match="boosted trees"):
        RunConfig(model="mlp", aggregation="histograms").validate()


def test_a_stopped_run_resumed_between_trees_ends_with_the_uninterrupted_numbers(tmp_path) -> None:
    # Prepare
    cfg = config(rounds=8)
    straight = simulation.run(cfg, out_dir=str(tmp_path / "straight"))
    handle = simulation.start(cfg, out_dir=str(tmp_path / "cut"))
    deadline = time.monotonic() + 60
    while handle.state.current_round < 4 and handle.result is None and time.monotonic() < deadline:
        time.sleep(0.005)
    handle.stop()
    handle.wait(30)
    # Execute
    resumable = open_resume(tmp_path / "cut")
    assert 1 <= resumable.checkpoint.round < cfg.rounds
    resumed = simulation.start(resumable.config, out_dir=str(tmp_path / "cut"), run_id=resumable.run_id,
                               resume=resumable.checkpoint)
    resumed.wait(120)
    # Assert
    assert resumed.result is not None and resumed.result.status == "completed"
    for key in ("accuracy", "loss"):
        assert resumed.result.final_metrics[key] == pytest.approx(straight.final_metrics[key], abs=1e-9)


def test_a_site_that_leaves_mid_tree_fails_its_round_and_the_tree_is_finished_without_it() -> None:
    """A site gone between two levels of a tree: the level goes on with the others (its failure is reported,
    never a silent stall), and the run completes."""
    from tests.hostile_helpers import honest_partition_clients
    from fl.federation.server import ServerSettings
    from fl.runs import hosting
    import threading

    # Prepare: three sites; the last leaves when asked for level 1 of round 2
    cfg = config(clients=3, rounds=4, min_clients=2, partition="iid")
    handle = hosting.host(cfg, ServerSettings(port=0, wait_for_clients=3, join_timeout_s=30))
    clients = honest_partition_clients(load_data(cfg, 3), handle.server.address[1], ["a", "b", "leaver"])
    leaver = clients[2]
    real = leaver._statistics

    def leave_mid_tree(msg):
        if msg.round == 2 and msg.config.get("depth") == 1:
            leaver.conn.close()  # the process dies, as far as the server can tell
            raise ConnectionError("gone")
        return real(msg)

    leaver._statistics = leave_mid_tree
    threads = [threading.Thread(target=c.run, daemon=True) for c in clients]
    for t in threads:
        t.start()
    # Execute
    try:
        result = handle.wait(120)
    finally:
        handle.stop()
        for t in threads:
            t.join(15)
    # Assert
    assert result is not None and result.status == "completed", result and result.error
    failures = [e for e in handle.snapshot()["events"] if e["type"] == "failure"]
    assert {e["client_id"] for e in failures} == {"leaver"} and all(e["round"] == 2 for e in failures)
    assert [r["n_fit_clients"] for r in result.rounds] == [3, 2, 2, 2]


def test_histograms_no_honest_site_can_send_are_refused() -> None:
    """A site's sums must be possible for the rows it declared: |g| ≤ 1 and 0 ≤ h ≤ 1/4 a row, the same total
    over every feature's bins."""
    from tests.hostile_helpers import Hostile, honest_partition_clients
    from fl.federation.server import ServerSettings
    from fl.runs import hosting
    import threading

    def on_fit(fit, welcome):
        arrays = dict(fit.params or [])
        header = {"type": "fit_result", "round": fit.round, "n_samples": 50,
                  "metrics": {"step": fit.config.get("step")}}
        if fit.config.get("statistics") == "sketch":
            n_features = welcome.task["n_features"]
            return header, [("sketch", np.zeros((n_features, T.SKETCH_POINTS))),
                            ("sketch_count", np.full(n_features, 50.0))]
        entries = len(arrays["frontier_node"])
        width = T.max_bin_count(T.edges_list(arrays["edges"])) + 1
        huge = np.full((entries, welcome.task["n_features"], width), 1e6)
        return header, [("hist_g", huge), ("hist_h", huge)]

    cfg = config(clients=2, rounds=2, min_clients=2, partition="iid")
    handle = hosting.host(cfg, ServerSettings(port=0, wait_for_clients=3, join_timeout_s=30))
    port = handle.server.address[1]
    hostile = Hostile(port, n_samples=50, n_features=30, on_fit=on_fit,
                      on_evaluate=lambda ev, w: ({"type": "evaluate_result", "round": ev.round, "n_samples": 0,
                                                  "metrics": {}}, [])).start()
    clients = honest_partition_clients(load_data(cfg, 2), port, ["a", "b"])
    threads = [threading.Thread(target=c.run, daemon=True) for c in clients]
    for t in threads:
        t.start()
    try:
        result = handle.wait(120)
    finally:
        handle.stop()
        for t in threads:
            t.join(15)
        hostile.join(15)
    assert result is not None and result.status == "completed", result and result.error
    reasons = {e["reason"] for e in handle.snapshot()["events"] if e["type"] == "failure"}
    assert any("histograms no site of 50 rows can hold" in r for r in reasons), reasons
    assert {e["client_id"] for e in handle.snapshot()["events"] if e["type"] == "failure"} == {"mallory"}


def test_a_coordinator_without_data_grows_trees_from_three_site_csvs(tmp_path) -> None:
    """The hosted form: a server without rows, one CSV per site (penguin islands, one with a single species)."""
    penguins = pytest.importorskip("palmerpenguins")
    from tests.site_helpers import host_sites

    sites = {}
    for island, rows in penguins.load_penguins().groupby("island"):
        sites[island.lower()] = tmp_path / f"{island.lower()}.csv"
        rows.drop(columns="island").to_csv(sites[island.lower()], index=False)
    cfg = RunConfig(dataset="csv", target="species", model="hist_gbdt", rounds=5, min_clients=3, clients=3,
                    model_params={"max_depth": 3})
    handle, result, clients = host_sites(cfg, sites)
    assert result is not None and result.status == "completed", result and result.error
    assert all(r["n_failures"] == 0 for r in result.rounds) and result.rounds[-1]["accuracy"] > 0.9
    assert handle.server.task.model == "hist_gbdt"
