"""Simulations placed on a real Dask cluster (a scheduler and two one-thread workers on 127.0.0.1, started here):
the same numbers as a local run, hosts on the cluster's workers, nothing left on it after a run or a Stop, and
one sentence when the cluster cannot take the run."""

from __future__ import annotations

import json
import time

import pytest

from fl.runs import simulation
from fl.cli.main import main
from fl.runs.cluster import ClusterError
from fl.runs.config import RunConfig
from tests.apptest_helpers import new_app, run_until, texts
from tests.cluster_helpers import dask_cluster, run_threads, scheduler_tasks, worker_names  # noqa: F401 - fixture

pytest.importorskip("distributed")

RUN = dict(dataset="digits", clients=200, partition="iid", model="logreg", rounds=2, seed=3)


def on(cluster, **over) -> RunConfig:
    """The run on the test's cluster, two hosts unless said."""
    return RunConfig(**{**RUN, "workers": 2, "cluster": "dask://" + cluster.address.split("://")[1], **over})


def per_round(result) -> list[tuple]:
    return [(r["round"], r["accuracy"], r["loss"], r["f1_macro"], r["n_failures"]) for r in result.rounds]


def test_a_run_on_the_cluster_has_the_local_numbers_its_hosts_on_the_workers_and_leaves_nothing(dask_cluster,
                                                                                                    tmp_path):
    # Prepare: the same run in this process
    local = simulation.run(RunConfig(**RUN, workers=0))
    before = set(run_threads())
    # Execute
    remote = simulation.run(on(dask_cluster), out_dir=str(tmp_path / "run"))
    # Assert: the same numbers, every client took part, each host on a worker of the cluster, nothing left
    assert remote.status == "completed"
    assert per_round(remote) == per_round(local)
    assert all(r["n_failures"] == 0 for r in remote.rounds)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert (summary["clients_took_part"], summary["clients_planned"], summary["hosts_placed"]) == (200, 200, 2)
    workers = worker_names(dask_cluster.address)
    assert sorted((h["worker"], h["name"]) for h in summary["hosts"]) == sorted(workers.items())
    assert [h["clients"] for h in summary["hosts"]] == ["clients 0-99", "clients 100-199"]
    assert scheduler_tasks(dask_cluster.address) == 0
    assert set(run_threads()) <= before


def test_stop_takes_every_host_off_the_cluster(dask_cluster):
    # Prepare: a long run, going
    before = set(run_threads())
    handle = simulation.start(on(dask_cluster, rounds=500))
    deadline = time.monotonic() + 60
    while not handle.snapshot(client_rows=False)["rounds"] and time.monotonic() < deadline:
        time.sleep(0.1)
    # Execute
    handle.stop()
    handle.wait(60)
    # Assert
    assert handle.result is not None and handle.result.status == "stopped"
    assert scheduler_tasks(dask_cluster.address) == 0
    assert set(run_threads()) <= before


def test_too_few_worker_slots_is_one_sentence_or_an_honest_partial_run(dask_cluster, tmp_path, capsys):
    # Execute: three hosts for two slots, from the command line
    code = main(["simulate", "--dataset", "digits", "--clients", "200", "--partition", "iid", "--model", "logreg",
                 "--rounds", "1", "--workers", "3", "--cluster", on(dask_cluster).cluster, "--no-baselines"])
    refused = capsys.readouterr().err.strip()
    # ... and again, with the user allowing 100 clients
    partial = simulation.run(on(dask_cluster, workers=3, min_clients=100), out_dir=str(tmp_path / "run"))
    out = tmp_path / "run" / "summary.json"
    # Assert: refused in one line; the partial run says it had 133 of 200 clients (hosts 0 and 1 of 3)
    assert code == 2 and refused.count("\n") == 0
    assert "has 2 free worker slots, fewer than the run's 3 hosts" in refused and "--min-clients" in refused
    assert partial.status == "completed"
    summary = json.loads(out.read_text())
    assert (summary["clients_took_part"], summary["clients_planned"]) == (133, 200)
    assert (summary["hosts_wanted"], summary["hosts_placed"]) == (3, 2)
    assert all(r["n_fit_clients"] == 133 for r in partial.rounds)
    assert scheduler_tasks(dask_cluster.address) == 0


def test_a_worker_without_fl_is_named_in_one_sentence(dask_cluster):
    # Prepare: a third worker on which fl cannot be imported
    dask_cluster.add_worker("bare", hide_fl=True)
    before = set(run_threads())
    try:
        dask_cluster.wait_for({"w0", "w1", "bare"})
        bare = next(a for a, n in worker_names(dask_cluster.address).items() if n == "bare")
        # Execute
        with pytest.raises(ClusterError) as refused:
            simulation.start(on(dask_cluster))
    finally:
        dask_cluster.stop("bare")
        dask_cluster.wait_for({"w0", "w1"})
    # Assert: which worker, why, what to do; nothing placed, nothing running
    message = str(refused.value)
    assert message.startswith(f"worker {bare} ") and "cannot import fl (ModuleNotFoundError: No module named" in message
    assert "pip install -e ." in message and "\n" not in message
    assert scheduler_tasks(dask_cluster.address) == 0 and set(run_threads()) <= before


def test_the_run_page_runs_on_the_cluster_named_under_runtime(dask_cluster, app_env):
    # Prepare: the Run page, the cluster in the runtime settings
    at = new_app()
    at.sidebar.selectbox(key="cfg_dataset").set_value("digits").run()
    at.sidebar.selectbox(key="cfg_model").set_value("logreg").run()
    at.sidebar.slider(key="cfg_clients").set_value(40).run()
    at.sidebar.slider(key="cfg_rounds").set_value(2).run()
    at.sidebar.number_input(key="cfg_workers").set_value(2).run()
    at.sidebar.text_input(key="cfg_cluster").set_value(on(dask_cluster).cluster).run()
    # Execute
    at.sidebar.button(key="start_run").click().run()
    at = run_until(at, lambda a: len(a.success) + len(a.warning) + len(a.error) > 0 and "Finished" in
                   texts(a.success) + texts(a.warning) or len(a.error) > 0, timeout=120)
    # Assert
    assert not at.exception and not at.error
    assert "Finished 2 rounds" in texts(at.success) + texts(at.warning)
    summary = json.loads(next(app_env.glob("*/summary.json")).read_text())
    assert summary["cluster"] == on(dask_cluster).cluster and summary["status"] == "completed"
    assert {h["name"] for h in summary["hosts"]} == {"w0", "w1"}
    assert scheduler_tasks(dask_cluster.address) == 0
