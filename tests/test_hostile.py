"""A hostile site cannot break or steer the federation (issue 23): the wire, the reader, the counts.

Each test runs a real hosted server on loopback with honest clients and one
scripted peer that holds the token (tests/hostile_helpers.py) and sends
what no honest client would: integers past 2^53, sample counts beyond the
rows it declared, impossible metrics, a message the server trips over. The
run must complete for the honest sites, nothing must be charged to them,
and the hostile peer is refused or dropped with a reason.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import fl.federation.server as server_module
from fl.federation.server import ServerSettings
from fl.runs import hosting
from fl.runs.build import load_data
from fl.runs.config import RunConfig
from tests.hostile_helpers import Hostile, honest_partition_clients, params_like, raw_bytes, rss_mib

HONEST = ["site_a", "site_b", "site_c"]


def hosted_run(config: RunConfig, hostiles: list[Hostile], settings: ServerSettings, *, classes=None,
               n_features=None, hostiles_first: bool = True, timeout: float = 120):
    """Host ``config``, start the hostile peers (first, or after the honest ones), then the honest partition
    clients; wait for the end. Returns (handle, result, honest clients' results, the peak RSS in MiB)."""
    handle = hosting.host(config, settings, classes=classes, n_features=n_features)
    port = handle.server.address[1]
    for h in hostiles:
        h.port = port
    data = load_data(RunConfig(**{**config.to_dict(), "clients": len(HONEST)}), len(HONEST))
    honest = honest_partition_clients(data, port, HONEST)
    results: dict = {}
    threads = [threading.Thread(target=lambda c=c: results.__setitem__(c.client_id, c.run()), daemon=True)
               for c in honest]
    peak, sampling = [rss_mib()], threading.Event()

    def sample() -> None:
        while not sampling.wait(0.05):
            peak.append(rss_mib())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    if hostiles_first:
        for h in hostiles:
            h.start()
        time.sleep(0.3)
    for t in threads:
        t.start()
    if not hostiles_first:
        for h in hostiles:
            h.start()
    try:
        result = handle.wait(timeout)
    finally:
        handle.stop()
        for t in threads:
            t.join(15)
        for h in hostiles:
            h.join(15)
        sampling.set()
        sampler.join(5)
    return handle, result, results, max(peak)


def base_config(**over) -> RunConfig:
    return RunConfig(**{**dict(dataset="digits", model="sgd", partition="iid", clients=3, rounds=3, min_clients=3,
                               round_timeout=20, seed=1), **over})


def settings(wait_for: int, **over) -> ServerSettings:
    return ServerSettings(**{**dict(port=0, wait_for_clients=wait_for, join_timeout_s=8), **over})


def assert_honest_done(result, results, rounds: int = 3) -> None:
    assert result is not None and result.status == "completed", result and result.error
    assert len(result.rounds) == rounds
    assert sorted(results) == HONEST and all(r.ok and r.rounds_trained == rounds for r in results.values()), results


def leave_of(handle, client_id: str) -> str:
    events = [e for e in handle.snapshot()["events"] if e["type"] == "leave" and e.get("client_id") == client_id]
    return events[0]["reason"] if events else ""


HUGE = 10**400


@pytest.mark.parametrize("where", ["fit n_samples", "evaluate n_samples", "fit metadata", "ping t", "pong t"])
def test_an_integer_past_2_53_is_the_senders_protocol_error(where, no_thread_leaks):
    # Prepare: the hostile peer puts a 401-digit integer where a number goes
    def on_fit(fit, welcome):
        header = {"type": "fit_result", "round": fit.round, "n_samples": 10, "metrics": {}}
        if where == "fit n_samples":
            header["n_samples"] = HUGE
        if where == "fit metadata":
            header["metadata"] = {"train_time_s": HUGE, "epoch_losses": [], "converged": None, "samples_used": 1,
                                  "update_norm": None}
        return header, params_like(welcome)

    def on_evaluate(ev, welcome):
        return {"type": "evaluate_result", "round": ev.round, "n_samples": HUGE if where == "evaluate n_samples"
                else 0, "metrics": {}}, []

    def before(welcome):
        if where == "ping t":
            return [raw_bytes({"type": "ping", "t": HUGE})]
        if where == "pong t":
            return [raw_bytes({"type": "pong", "t": HUGE})]
        return []

    hostile = Hostile(0, on_fit=on_fit, on_evaluate=on_evaluate, before=before)
    # Execute
    handle, result, results, _ = hosted_run(base_config(), [hostile], settings(4))
    # Assert: the honest sites' run completes; the hostile peer is told why and dropped
    assert_honest_done(result, results)
    assert any(e.code == "json" and "2^53" in e.message for e in hostile.errors), hostile.messages
    assert "protocol error (json)" in leave_of(handle, "mallory")
    failed = {e["client_id"] for e in handle.snapshot()["events"] if e["type"] == "failure"}
    assert failed <= {"mallory"}


def test_dropped_peers_leave_no_ghost_slot_that_fills_the_run(no_thread_leaks):
    # Prepare: room for 3; two peers take the slots (and the ids) of two honest sites, then send a ping no float
    # can hold: dropped, they must leave neither a slot ("the run is full") nor a live id ("already connected")
    ghosts = [Hostile(0, client_id=cid, before=lambda w: [raw_bytes({"type": "ping", "t": HUGE})])
              for cid in HONEST[:2]]
    # Execute: the three honest sites come after them
    handle, result, results, _ = hosted_run(base_config(), ghosts, settings(3, max_clients=3))
    # Assert: every honest site got in and trained every round
    assert_honest_done(result, results)
    assert not [e for e in handle.snapshot()["events"]
                if e["type"] == "refused" and ("full" in str(e) or "already" in str(e))]
    assert all(any(e.code == "json" for e in g.errors) for g in ghosts)


def test_a_result_claiming_more_rows_than_declared_is_refused_and_steers_nothing(no_thread_leaks):
    # Prepare: a clean run, then the same with a peer declaring 50 rows whose results claim 10^15 samples
    # with every parameter at -50 (under FedAvg it would own the model)
    clean_handle, clean, clean_results, clean_peak = hosted_run(base_config(), [], settings(3))

    def on_fit(fit, welcome):
        return {"type": "fit_result", "round": fit.round, "n_samples": 10**15, "metrics": {}}, \
            params_like(welcome, -50.0)

    def on_evaluate(ev, welcome):
        return {"type": "evaluate_result", "round": ev.round, "n_samples": 10**15,
                "metrics": {"accuracy": 0.0, "loss": 9.0}}, []

    hostile = Hostile(0, n_samples=50, on_fit=on_fit, on_evaluate=on_evaluate)
    # Execute
    handle, result, results, peak = hosted_run(base_config(), [hostile], settings(4))
    # Assert: every claim refused as the peer's failure; the model and its numbers are the clean run's
    assert_honest_done(result, results)
    reasons = [e["reason"] for e in handle.snapshot()["events"] if e["type"] == "failure"]
    assert reasons and all("more than the 50 rows it declared" in r for r in reasons), reasons
    assert {e["client_id"] for e in handle.snapshot()["events"] if e["type"] == "failure"} == {"mallory"}
    assert [r["accuracy"] for r in result.rounds] == [r["accuracy"] for r in clean.rounds]
    got, want = result.model.named_steps["model"], clean.model.named_steps["model"]
    assert np.array_equal(got.coef_, want.coef_) and np.array_equal(got.intercept_, want.intercept_)
    assert peak - clean_peak < 100  # MiB: the server and the honest clients (this process) as in a clean run


def test_impossible_metrics_are_refused_and_do_not_reach_the_global_numbers(no_thread_leaks):
    # Prepare: a server without data takes its numbers from the sites; one claims accuracy 1.7 and loss -3
    def on_evaluate(ev, welcome):
        return {"type": "evaluate_result", "round": ev.round, "n_samples": 40,
                "metrics": {"accuracy": 1.7, "loss": -3.0, "f1_macro": 3.55}}, []

    def on_fit(fit, welcome):
        return {"type": "fit_result", "round": fit.round, "n_samples": 40, "metrics": {"train_accuracy": 2.0}}, \
            params_like(welcome)

    hostile = Hostile(0, n_samples=50, on_fit=on_fit, on_evaluate=on_evaluate)
    config = base_config(dataset="digits")
    # Execute
    handle, result, results, _ = hosted_run(config, [hostile], settings(4), classes=list(range(10)), n_features=64)
    # Assert
    assert_honest_done(result, results)
    assert all(0.0 <= r["accuracy"] <= 1.0 and r["loss"] >= 0 for r in result.rounds)
    assert all(r["f1_macro"] is None or 0.0 <= r["f1_macro"] <= 1.0 for r in result.rounds)
    reasons = [e["reason"] for e in handle.snapshot()["events"] if e["type"] == "failure"]
    assert any("impossible" in r for r in reasons) and any("train_accuracy 2 is impossible" in r for r in reasons)
    assert result.best is None or result.best.score <= 1.0


def test_a_message_the_server_trips_over_is_that_peers_error(monkeypatch, no_thread_leaks):
    # Prepare: answering this peer's ping raises inside the server (an input nothing foresaw)
    real_pong = server_module.Pong

    def pong(t):
        if t == 4242.0:
            raise RuntimeError("unforeseen")
        return real_pong(t=t)

    monkeypatch.setattr(server_module, "Pong", pong)
    hostile = Hostile(0, before=lambda w: [raw_bytes({"type": "ping", "t": 4242})])
    # Execute
    handle, result, results, _ = hosted_run(base_config(), [hostile], settings(3))
    # Assert: only the peer's session ended, with a reason; the run is the honest sites'
    assert_honest_done(result, results)
    assert "could not handle its message (RuntimeError)" in leave_of(handle, "mallory")
    assert any(e.code == "message" for e in hostile.errors)
