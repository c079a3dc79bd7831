"""End-to-end runs over real loopback sockets: the issue's acceptance numbers."""

from __future__ import annotations

import time

import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from fl.runs import simulation
from fl.runs.config import ConfigError, RunConfig
from fl.data import DataError, apply_standardization, label_distribution
from fl.runs.store import RunStore


def _run(config: RunConfig, **kwargs):
    handle = simulation.start(config, **kwargs)
    result = handle.wait(timeout=180)
    assert result is not None, "run did not finish in time"
    return handle, result


def test_fedavg_logreg_digits_matches_centralized_within_two_points(no_thread_leaks):
    # Prepare
    config = RunConfig(dataset="digits", clients=5, partition="iid", model="logreg", aggregation="fedavg",
                       rounds=10, local_epochs=5, seed=0)
    # Execute
    handle, result = _run(config)
    data = handle.data
    X_train = apply_standardization(data.split.X_train, data.stats)  # the union of the partitions
    X_test = apply_standardization(data.split.X_test, data.stats)
    central = LogisticRegression(max_iter=2000).fit(X_train, data.split.y_train).score(X_test, data.split.y_test)
    # Assert
    assert result.status == "completed"
    assert len(result.rounds) == 10
    assert result.final_metrics["accuracy"] >= central - 0.02
    # the saved model predicts on raw feature rows
    assert (result.model.predict(data.split.X_test) == data.split.y_test).mean() == pytest.approx(
        result.final_metrics["accuracy"])


@pytest.mark.parametrize("model", ["logreg", "mlp"])
def test_dirichlet_clients_missing_classes_still_give_a_ten_class_model(model, no_thread_leaks):
    # Prepare
    config = RunConfig(dataset="digits", clients=20, partition="dirichlet", alpha=0.1, model=model, rounds=5,
                       seed=0)
    # Execute
    handle, result = _run(config)
    presence = label_distribution(handle.data.split.y_train, handle.data.parts, handle.data.dataset.classes)
    # Assert
    assert (presence == 0).any(axis=1).sum() >= 5, "the split should leave several clients without some classes"
    assert result.status == "completed"
    assert all(r["n_failures"] == 0 for r in result.rounds)
    assert list(result.model.classes_) == list(range(10))
    assert result.model.predict_proba(handle.data.split.X_test).shape[1] == 10


def test_stacking_random_forest_beats_every_single_client(no_thread_leaks):
    # Prepare
    config = RunConfig(partition="iid", dataset="breast_cancer", clients=5, model="random_forest", aggregation="stacking", seed=0)
    # Execute
    handle, result = _run(config)
    data = handle.data
    X_test = apply_standardization(data.split.X_test, data.stats)
    singles = []
    for i in range(config.clients):
        X, y = data.client_data(i)
        model = RandomForestClassifier(n_estimators=100, random_state=0).fit(apply_standardization(X, data.stats), y)
        singles.append(model.score(X_test, data.split.y_test))
    # Assert
    assert result.status == "completed"
    assert result.final_metrics["accuracy"] >= max(singles)
    assert result.model.predict(data.split.X_test).shape == data.split.y_test.shape


def test_voting_and_gaussian_nb_are_one_shot(no_thread_leaks):
    # Prepare
    configs = [RunConfig(partition="iid", dataset="wine", clients=3, model="knn", aggregation="voting", rounds=5),
               RunConfig(partition="iid", dataset="wine", clients=3, model="gaussian_nb", rounds=5)]
    for config in configs:
        # Execute
        _, result = _run(config)
        # Assert
        assert result.status == "completed"
        assert len(result.rounds) == 1
        assert result.final_metrics["accuracy"] > 0.85


def test_two_runs_at_once_and_stop_is_prompt(tmp_path, no_thread_leaks):
    # Prepare: a long run and a short run side by side
    store = RunStore(tmp_path)
    long_run = simulation.start(RunConfig(model="logreg", partition="iid", dataset="iris", clients=3, rounds=10_000), store=store)
    short = simulation.start(RunConfig(model="logreg", partition="iid", dataset="iris", clients=3, rounds=3), store=store)
    # Execute
    short_result = short.wait(60)
    deadline = time.monotonic() + 30
    while long_run.snapshot()["round"] < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    t0 = time.monotonic()
    long_run.stop()
    long_result = long_run.wait(10)
    stop_seconds = time.monotonic() - t0
    # Assert
    assert short_result.status == "completed"
    assert long_result is not None and long_result.status == "stopped"
    assert stop_seconds < 3.0
    assert {r.run_id for r in store.list()} == {long_run.run_id, short.run_id}
    assert store.load(long_run.run_id).summary["status"] == "stopped"


def test_snapshot_is_a_consistent_copy(no_thread_leaks):
    # Prepare
    handle = simulation.start(RunConfig(model="logreg", partition="iid", dataset="iris", clients=4, rounds=3))
    # Execute
    handle.wait(60)
    snap = handle.snapshot()
    snap["rounds"].clear()
    # Assert
    again = handle.snapshot()
    assert len(again["rounds"]) == 3
    assert again["status"] == "completed"
    assert set(again["clients"]) == {f"client_{i:03d}" for i in range(4)}
    assert all(c["rounds_trained"] == 3 for c in again["clients"].values())
    assert len(again["client_rows"]) == 12


def test_bad_settings_fail_before_any_thread_starts():
    # Prepare / Execute / Assert
    with pytest.raises(ConfigError, match="stacking"):
        simulation.start(RunConfig(partition="iid", model="random_forest", aggregation="fedavg"))
    with pytest.raises(DataError, match="clients"):
        simulation.start(RunConfig(model="logreg", partition="iid", dataset="iris", clients=200, min_samples=2))


def test_same_seed_same_numbers(no_thread_leaks):
    # Prepare
    config = RunConfig(dataset="wine", clients=4, rounds=4, model="sgd", fraction=0.5, partition="dirichlet", seed=3)
    # Execute
    _, a = _run(config)
    _, b = _run(RunConfig(**config.to_dict()))
    # Assert
    assert [r["accuracy"] for r in a.rounds] == [r["accuracy"] for r in b.rounds]
    assert [r["n_fit_clients"] for r in a.rounds] == [2, 2, 2, 2]


def test_every_client_scores_the_global_model_on_its_own_data(tmp_path, no_thread_leaks):
    # Prepare: a non-IID split, so clients differ
    import joblib

    from fl.data import local_holdout
    from fl.federation.task import client_seed
    import pandas as pd
    from sklearn.metrics import accuracy_score

    config = RunConfig(dataset="digits", clients=5, partition="dirichlet", alpha=0.3, model="logreg", rounds=3)
    # Execute
    handle, result = _run(config, out_dir=str(tmp_path))
    # Assert: clients.csv has each client's accuracy of each round's global model on its own rows ...
    clients = pd.read_csv(tmp_path / "clients.csv")
    last = clients[clients["round"] == 3].set_index("client_id")
    assert len(clients) == 15 and clients["eval_accuracy"].notna().all()
    # ... equal to the saved final model scored independently on each client's partition
    model = joblib.load(tmp_path / "model.joblib")
    for i in range(5):
        cid = f"client_{i:03d}"
        X, y = handle.data.client_data(i)
        train, held = local_holdout(len(y), config.local_test_size, client_seed(config.seed, cid))
        assert len(held) == round(0.2 * len(y)) and not set(train) & set(held)  # scored on rows it never trained on
        assert last.loc[cid, "eval_accuracy"] == pytest.approx(accuracy_score(y[held], model.predict(X[held])))
        assert last.loc[cid, "n_samples"] == len(train)
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert metrics["worst_client_accuracy"].iloc[-1] == pytest.approx(last["eval_accuracy"].min())
    assert metrics["client_accuracy_std"].iloc[-1] == pytest.approx(last["eval_accuracy"].std(ddof=0))


def test_stop_ends_a_run_within_the_round_in_progress(no_thread_leaks):
    # Prepare: rounds of about a tenth of a second
    handle = simulation.start(RunConfig(dataset="digits", clients=10, model="mlp", rounds=1000, partition="iid"))
    deadline = time.monotonic() + 30
    while handle.snapshot()["round"] < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    # Execute
    at_stop = handle.snapshot()["round"]
    handle.stop()
    result = handle.wait(10)
    # Assert: the round in progress may finish, no further round starts
    assert result is not None and result.status == "stopped"
    assert len(result.rounds) <= at_stop
    assert handle.snapshot()["status"] == "stopped"


def test_clients_seen_evaluating_reach_the_live_state(no_thread_leaks):
    # Bug: the round loop set "evaluating" on its own registry only; the Clients page never showed it
    holder: list = []
    seen: list[str] = []

    def listen(event: dict) -> None:
        if holder and event["type"] == "client_status" and event["status"] == "evaluating":
            seen.append(str(holder[0].snapshot()["clients"]["client_000"]["status"]))

    # Execute
    handle = simulation.start(RunConfig(dataset="iris", clients=3, rounds=4, model="logreg", partition="iid"),
                              on_event=listen)
    holder.append(handle)
    handle.wait(60)
    # Assert
    assert "evaluating" in seen
    assert handle.snapshot()["clients"]["client_000"]["status"] == "finished"
