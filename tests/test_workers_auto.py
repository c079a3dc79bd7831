"""``--workers auto``: in-process or worker processes, chosen by the run's expected training."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from fl.runs import workers
from fl.runs.build import build_run
from fl.runs.config import RunConfig
from fl.runs.simulation import PINGS_PER_S, heartbeat_interval
from fl.runs import processes
from fl.runs.workers import probe_fit_seconds, worker_count


def _config(**kw) -> SimpleNamespace:
    return SimpleNamespace(**{"workers": -1, "clients": 10, "rounds": 20, **kw})


def test_an_explicit_count_is_kept_and_capped_by_the_clients():
    # Prepare / Execute / Assert
    assert worker_count(_config(workers=0), fit_seconds=100.0) == 0
    assert worker_count(_config(workers=2, clients=1)) == 1
    assert worker_count(_config(workers=3), fit_seconds=0.0) == 3


def test_auto_stays_in_process_when_the_training_is_shorter_than_starting_processes(monkeypatch):
    # Prepare: two cores; 10 clients × 5 rounds of 2 ms fits: 0.225 s of work with the frames, half saved < the
    # start of warm processes; 20 rounds of 5 ms fits save more than that, not more than a cold start
    monkeypatch.setattr(workers.os, "cpu_count", lambda: 2)
    # Execute / Assert
    assert worker_count(_config(rounds=5), fit_seconds=0.002, start_s=processes.WARM_START_S) == 0
    assert worker_count(_config(), fit_seconds=0.005, start_s=processes.WARM_START_S) == 2
    assert worker_count(_config(), fit_seconds=0.005, start_s=processes.COLD_START_S) == 0


def test_auto_takes_every_core_when_the_training_outweighs_the_start(monkeypatch):
    # Prepare: 10 clients × 20 rounds of fits long enough that the second core saves 1.25 times the start
    monkeypatch.setattr(workers.os, "cpu_count", lambda: 2)
    fit = 2.5 * processes.SPAWN_START_S / (10 * 20)
    # Execute / Assert
    assert worker_count(_config(), fit_seconds=fit, start_s=processes.SPAWN_START_S) == 2
    assert worker_count(_config(), fit_seconds=fit / 10, start_s=processes.SPAWN_START_S) == 0
    # many clients: processes however short the fits
    assert worker_count(_config(clients=workers.PROCESSES_FROM_CLIENTS, rounds=1), fit_seconds=0.0) == 2


def test_without_a_measurement_the_client_count_decides(monkeypatch):
    monkeypatch.setattr(workers.os, "cpu_count", lambda: 2)
    assert worker_count(_config(clients=10)) == 0
    assert worker_count(_config(clients=workers.AUTO_PROCESSES_FROM)) == 2


def test_one_core_or_one_client_never_starts_processes(monkeypatch):
    monkeypatch.setattr(workers.os, "cpu_count", lambda: 1)
    assert worker_count(_config(), fit_seconds=100.0) == 0
    monkeypatch.setattr(workers.os, "cpu_count", lambda: 8)
    assert worker_count(_config(clients=1), fit_seconds=100.0) == 0


@pytest.mark.parametrize("model, measured", [("logreg", True), ("hist_gbdt", False)])
def test_the_probe_times_one_local_fit_and_leaves_the_run_as_it_was(model, measured):
    # Prepare
    plan = build_run(RunConfig(dataset="breast_cancer", clients=3, rounds=2, model=model))
    before = plan.data.client_data(0)[0].copy()
    # Execute
    seconds = probe_fit_seconds(plan)
    # Assert: a time for a model trained locally, none for one the server grows from sums; the data untouched
    assert (seconds is not None and seconds > 0) is measured
    assert (plan.data.client_data(0)[0] == before).all()


def test_many_clients_ping_less_often_so_their_pings_stay_bounded():
    assert heartbeat_interval(10) == heartbeat_interval(1000) == 5.0
    assert heartbeat_interval(10_000) == 10_000 / PINGS_PER_S
    assert 10_000 / heartbeat_interval(10_000) <= PINGS_PER_S
