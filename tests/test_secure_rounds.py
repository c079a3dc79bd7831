"""Secure aggregation in real runs over sockets (issue 19): the same model as without it, within the
quantisation error; clients that drop after masking; too few survivors; clients that do not speak it."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from fl.federation.server import ServerSettings
from fl.runs import hosting, simulation
from fl.runs.build import load_data
from fl.runs.config import ConfigError, RunConfig
from tests.hostile_helpers import honest_partition_clients

pytestmark = pytest.mark.timeout(180)


def config(**over) -> RunConfig:
    base = dict(dataset="digits", model="logreg", clients=5, partition="iid", rounds=3, workers=0, seed=3)
    return RunConfig(**{**base, **over}).validate()


def relative_gap(a, b) -> float:
    """Largest |a - b| over the largest |b|, array by array of two fitted models' parameters."""
    return max(float(np.abs(x - y).max() / max(np.abs(y).max(), 1e-12)) for x, y in zip(a, b))


def params_of(result) -> list[np.ndarray]:
    est = result.model.named_steps["model"]
    if hasattr(est, "coefs_"):
        return [*est.coefs_, *est.intercepts_]
    return [est.coef_, est.intercept_]


@pytest.mark.parametrize("model, over", [("logreg", {}), ("mlp", {"local_epochs": 2}),
                                         ("logreg", {"aggregation": "scaffold"}),
                                         ("logreg", {"server_opt": "fedavgm", "server_lr": 0.5})])
def test_the_secure_sum_gives_the_model_of_the_plain_one(model, over) -> None:
    """Done-when: --secagg gives the same global model as the run without it, to 1e-6 relative."""
    # Prepare
    plain_cfg = config(model=model, **over)
    secure_cfg = config(model=model, secagg=True, **over)
    # Execute
    plain, secure = simulation.run(plain_cfg), simulation.run(secure_cfg)
    # Assert
    assert plain.status == secure.status == "completed", secure.error
    assert relative_gap(params_of(secure), params_of(plain)) < 1e-6
    assert [r["secagg_survivors"] for r in secure.rounds] == [5, 5, 5]
    assert all("secure aggregation" in r["scrutiny"] for r in secure.rounds)


def test_boosted_trees_sum_their_histograms_securely() -> None:
    # Prepare
    cfg = dict(dataset="breast_cancer", model="hist_gbdt", clients=4, rounds=3, model_params={"max_depth": 3})
    # Execute
    plain, secure = simulation.run(config(**cfg)), simulation.run(config(secagg=True, **cfg))
    # Assert: the same trees (sums within the quantisation step cannot move a split here) and the same scores
    assert secure.status == "completed", secure.error
    a, b = secure.model.named_steps["model"], plain.model.named_steps["model"]
    assert np.array_equal(a.tree_feature_, b.tree_feature_) and np.allclose(a.tree_value_, b.tree_value_, atol=1e-6)
    assert [r["accuracy"] for r in secure.rounds] == [r["accuracy"] for r in plain.rounds]


def _hosted(cfg: RunConfig, ids: list[str], leave_at: dict[str, str], timeout: float = 120):
    """A hosted secure run with one client per id; ``leave_at``: client -> the stage at which it leaves
    (its process dies: an error and a closed socket)."""
    handle = hosting.host(cfg, ServerSettings(port=0, wait_for_clients=len(ids), join_timeout_s=30))
    clients = honest_partition_clients(load_data(cfg, len(ids)), handle.server.address[1], ids)
    for client in clients:
        stage = leave_at.get(client.client_id)
        if stage:
            original = client.handle_fit

            def handle_fit(msg, original=original, stage=stage):
                if msg.config.get("secagg") == stage:
                    raise SystemError(f"killed in the {stage} stage")
                return original(msg)

            client.handle_fit = handle_fit
    threads = [threading.Thread(target=c.run, daemon=True) for c in clients]
    for t in threads:
        t.start()
    try:
        result = handle.wait(timeout)
    finally:
        handle.stop()
        for t in threads:
            t.join(15)
    return handle, result


def test_clients_killed_after_masking_leave_the_sum_whole() -> None:
    """Done-when: 30 % of the sampled clients drop after sending their masked input; the round completes with
    their updates in the sum (their self-masks rebuilt from the others' shares): the plain run's model."""
    # Prepare: 10 clients, 3 die in the unmask stage of round 1
    ids = [f"site{i}" for i in range(10)]
    cfg = config(clients=10, rounds=1, min_clients=3, secagg=True)
    _, plain = _hosted(config(clients=10, rounds=1), ids, {})  # the same sites, without secure aggregation
    # Execute
    handle, result = _hosted(cfg, ids, {"site1": "unmask", "site4": "unmask", "site8": "unmask"})
    # Assert
    assert result is not None and result.status == "completed", result and result.error
    record = result.rounds[0]
    assert record["secagg_survivors"] == 10 and record["secagg_dropped"] == 0
    assert relative_gap(params_of(result), params_of(plain)) < 1e-6


def test_clients_that_drop_before_masking_leave_the_sum_of_the_others() -> None:
    # Prepare: 2 of 8 die before sending their masked input
    ids = [f"site{i}" for i in range(8)]
    cfg = config(clients=8, rounds=2, min_clients=3, secagg=True)
    # Execute
    handle, result = _hosted(cfg, ids, {"site2": "masked", "site6": "masked"})
    # Assert: round 1 sums 6 clients (the dropped ones' pair masks rebuilt and removed); round 2 has 6 left
    assert result is not None and result.status == "completed", result and result.error
    first = result.rounds[0]
    assert first["secagg_survivors"] == 6 and first["secagg_dropped"] == 2 and first["n_fit_clients"] == 6
    assert result.rounds[-1]["accuracy"] > 0.8


def test_a_round_with_too_few_survivors_fails_with_the_reason() -> None:
    """5 clients (threshold 4 of 5 holders): two dying after masking leave 3 to answer: the round's sum is lost,
    every client is told why, the model stays as it was and the next round sets up afresh (and fails too:
    only 3 clients are left, below the threshold)."""
    # Prepare
    ids = [f"site{i}" for i in range(5)]
    cfg = config(clients=5, rounds=1, min_clients=3, secagg=True)
    # Execute
    handle, result = _hosted(cfg, ids, {"site0": "unmask", "site3": "unmask"})
    # Assert
    assert result is not None and result.status == "completed", result and result.error
    assert "round needs at least 4" in result.rounds[0]["secagg_failure"]
    reasons = {e["reason"] for e in handle.snapshot()["events"] if e["type"] == "failure"}
    assert any("secure aggregation could not finish" in r for r in reasons), reasons


def test_rules_that_need_each_update_are_refused_with_the_reason() -> None:
    for over, words in [(dict(aggregation="median"), "median"), (dict(dp="server"), "client-side clipping"),
                        (dict(model="random_forest", aggregation="voting"), "voting"),
                        (dict(model="gaussian_nb"), "naive Bayes"), (dict(clients=2), "at least 3")]:
        with pytest.raises(ConfigError, match=words):
            config(secagg=True, **over)
    assert config(secagg=True, dp="client").secagg  # client-side clipping adds up


def test_a_client_without_secure_aggregation_is_refused_at_join() -> None:
    """A client written before secure aggregation (hello.features lacks 'secagg') is told why at once."""
    from tests.hostile_helpers import Hostile

    cfg = config(clients=3, secagg=True)
    handle = hosting.host(cfg, ServerSettings(port=0, wait_for_clients=3, join_timeout_s=5))
    try:
        old = Hostile(handle.server.address[1], client_id="old").start()
        old.join(15)
    finally:
        handle.stop()
        handle.wait(15)
    assert [e.code for e in old.errors] == ["feature"]
    assert "secure aggregation" in old.errors[0].message and "update the client" in old.errors[0].message


def test_hosted_processes_over_tls_finish_the_round_when_one_dies_after_masking(tmp_path) -> None:
    """Done-when: server_new.py --secagg over TLS, three client_new.py processes; one process is killed after it
    sent its masked input (in round 1); the round completes with its update in the sum and the run goes on."""
    import json
    import subprocess
    import sys

    from tests.test_cli import ENV, ROOT, Processes, _listening_port

    # Prepare: certificates from the CLI itself
    made = subprocess.run([sys.executable, "-m", "fl", "certs", "--out", str(tmp_path), "--host", "127.0.0.1"],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    procs = Processes()
    try:
        server = procs.spawn("server_new.py", "--dataset", "digits", "--port", "0", "--min-clients", "3",
                             "--rounds", "2", "--secagg", "--tls-cert", str(tmp_path / "server.pem"),
                             "--tls-key", str(tmp_path / "server.key"), "--token", "abc", "--out", str(tmp_path / "run"))
        port = _listening_port(server)
        tls = ("--port", str(port), "--tls-ca", str(tmp_path / "ca.pem"), "--token", "abc", "--dataset", "digits",
               "--num-partitions", "3")
        clients = [procs.spawn("client_new.py", *tls, "--partition-id", str(i)) for i in range(2)]
        doomed = procs.spawn("tests/scripts/client_killed_after_masking.py", *tls, "--partition-id", "2")
        # Execute
        out, err = server.communicate(timeout=150)
        for c in clients:
            c.wait(timeout=30)
        doomed.wait(timeout=30)
        # Assert
        assert server.returncode == 0, err
        assert doomed.returncode == 17 and all(c.returncode == 0 for c in clients)
        rounds = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
        records = [e for e in rounds if e["type"] == "round"]
        assert records[0]["secagg_survivors"] == 3 and records[0]["n_fit_clients"] == 3
        assert records[0]["accuracy"] > 0.5 and "completed" in out  # one gradient step from zero: well above 0.1
        assert "at least 3 clients" in records[1]["secagg_failure"]  # two left: round 2 has no secure sum
    finally:
        procs.close()
