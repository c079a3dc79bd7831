"""The Runs page, driven by AppTest: list, compare, download, reload and delete stored runs."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

from fl.runs import simulation
from fl.runs.config import RunConfig
from fl.runs.store import RunStore
from fl.federation.server import ServerSettings
from tests.apptest_helpers import new_app, texts
from ui import history


def make_runs(root: Path) -> list:
    """Two finished runs in the store, run by the engine itself (newest first, as the page lists them)."""
    store = RunStore(root)
    simulation.run(RunConfig(partition="iid", dataset="iris", clients=3, rounds=3, model="logreg"), store=store)
    simulation.run(RunConfig(partition="iid", dataset="iris", clients=2, rounds=2, model="sgd"), store=store)
    return store.list()


def stopped_run(root: Path, *, clients: int, rounds: int):
    """A simulated logistic-regression run on iris, stopped during round 3 (two rounds finished)."""
    import time

    handle = simulation.start(RunConfig(partition="iid", dataset="iris", clients=clients, rounds=rounds,
                                        model="logreg", workers=0), store=RunStore(root))
    deadline = time.monotonic() + 60
    while handle.state.current_round < 3 and handle.result is None and time.monotonic() < deadline:
        time.sleep(0.01)
    handle.stop()
    assert handle.wait(30) is not None
    return handle


def runs_page(at):
    at.switch_page("app_pages/runs.py").run()
    return at


def select(at, rows: list[int]):
    """AppTest cannot click dataframe rows; the selection state of a keyed table accepts writes."""
    table = at.dataframe[0]
    at.session_state[table.key] = {"selection": {"rows": rows, "columns": [], "cells": []}}
    return at.run()


def chart_trace_names(at) -> list[list[str]]:
    return [[t.get("name") for t in json.loads(c.proto.spec)["data"]] for c in at.get("plotly_chart")]


def test_empty_store_says_where_to_start_a_run(app_env):
    # Execute
    at = runs_page(new_app())
    # Assert
    assert not at.exception
    assert "Start one on the **Run** page" in texts(at.info)
    assert len(at.dataframe) == 0


def test_table_lists_every_stored_run_newest_first(app_env):
    # Prepare
    runs = make_runs(app_env)
    # Execute
    at = runs_page(new_app())
    # Assert
    assert not at.exception and not at.error
    table = at.dataframe[0].value
    assert list(table["Run id"]) == [r.run_id for r in runs]
    assert list(table["Model"]) == ["sgd", "logreg"]
    assert list(table["Rounds done"]) == [2, 3]
    assert set(table["Status"]) == {"completed"}
    accuracy = runs[1].summary["final_metrics"]["accuracy"]
    assert table["Final accuracy"].iloc[1] == round(100 * accuracy, 1)  # a percentage, one decimal
    assert len(at.get("plotly_chart")) == 0  # nothing selected yet


def test_selecting_two_runs_overlays_their_accuracy_and_loss(app_env):
    # Prepare
    runs = make_runs(app_env)
    at = runs_page(new_app())
    # Execute
    select(at, [0, 1])
    # Assert
    assert not at.exception
    names = chart_trace_names(at)
    assert len(names) == 2  # accuracy and loss
    for traces in names:  # the legend names what differs between the two runs: model, clients, rounds
        assert sorted(traces) == ["model logreg · clients 3 · rounds 3", "model sgd · clients 2 · rounds 2"]
    assert len(at.get("download_button")) == 0  # single-run actions need exactly one run
    assert {r.run_id for r in runs} == {r.run_id for r in history.selected(runs, [1, 0, 7])}


def test_one_selected_run_can_be_downloaded_as_a_zip(app_env):
    # Prepare
    runs = make_runs(app_env)
    at = runs_page(new_app())
    # Execute
    select(at, [1])
    data = history.zip_run(runs[1])
    # Assert
    assert not at.exception
    labels = [b.label for b in at.get("download_button")]
    assert labels[:2] == ["Download run (zip)", "Final model (joblib)"]
    assert labels[2] == f"Best model (round {runs[1].summary['best_round']})"
    names = set(zipfile.ZipFile(io.BytesIO(data)).namelist())
    prefix = runs[1].run_id + "/"
    for name in ("config.json", "summary.json", "metrics.csv", "clients.csv", "events.jsonl", "model.joblib",
                 "best_model.joblib"):
        assert prefix + name in names
    assert not any(n.endswith(".tmp") for n in names)


def test_load_config_sends_the_run_settings_to_the_run_page(app_env):
    # Prepare
    make_runs(app_env)
    at = runs_page(new_app())
    select(at, [0])  # the sgd run: 2 clients, 2 rounds
    # Execute
    at.button(key="load_config").click().run()
    # Assert: the Run page took the pending config and set its sidebar from it
    assert not at.exception
    assert "Federated learning workbench" in texts(at.title)
    assert "pending_config" not in at.session_state  # consumed by the Run page
    assert at.session_state["cfg_model"] == "sgd"
    assert at.sidebar.slider(key="cfg_clients").value == 2
    assert at.sidebar.slider(key="cfg_rounds").value == 2


def test_delete_needs_confirmation_then_removes_the_run(app_env):
    # Prepare
    runs = make_runs(app_env)
    at = runs_page(new_app())
    select(at, [0])
    # Execute: the button stays disabled until the box is ticked
    assert at.button(key="delete_run").disabled
    at.checkbox(key=f"confirm_delete_{runs[0].run_id}").check().run()
    at.button(key="delete_run").click().run()
    # Assert
    assert not at.exception and not at.error
    assert f"Deleted run {runs[0].run_id}" in texts(at.success)
    assert not runs[0].path.exists()
    assert list(at.dataframe[0].value["Run id"]) == [runs[1].run_id]
    assert len(at.get("plotly_chart")) == 0  # the selection starts afresh


def test_a_run_still_running_is_not_deleted(app_env):
    # Prepare: a hosted run waiting for clients that never come, in the page's own registry
    from ui.app_state import _registry

    handle = _registry(str(app_env)).host(
        RunConfig(model="logreg", partition="iid", dataset="iris", clients=2),
        ServerSettings(host="127.0.0.1", port=0, wait_for_clients=2, join_timeout_s=30))
    at = runs_page(new_app())
    assert at.dataframe[0].value["Status"].iloc[0] == "running"
    select(at, [0])
    # Execute
    at.checkbox(key=f"confirm_delete_{handle.run_id}").check().run()
    at.button(key="delete_run").click().run()
    # Assert
    assert not at.exception
    assert "still running" in texts(at.error)
    assert (app_env / handle.run_id).exists()
    handle.stop()
    assert handle.wait(10) is not None


def test_a_stopped_run_can_be_resumed_and_completes_every_round_once(app_env):
    # Prepare: a simulated run of 6 rounds, stopped once it has finished 2
    from ui.app_state import CURRENT_RUN, _registry

    handle = stopped_run(app_env, clients=3, rounds=6)
    assert handle.result.status == "stopped"
    at = runs_page(new_app())
    select(at, [0])
    assert "it can go on from round" in texts(at.caption)
    # Execute
    at.button(key=f"resume_{handle.run_id}").click().run()
    # Assert: this tab follows the resumed run, which ends with every round once
    assert not at.exception and not at.error
    assert at.session_state[CURRENT_RUN] == handle.run_id
    resumed = _registry(str(app_env)).get(handle.run_id)
    assert resumed is not None and resumed is not handle
    assert resumed.wait(60) is not None and resumed.result.status == "completed"
    stored = RunStore(app_env).load(handle.run_id)
    assert list(stored.metrics()["round"]) == [1, 2, 3, 4, 5, 6]
    assert stored.summary["status"] == "completed" and not stored.resumable


def test_a_stopped_hosted_run_is_resumed_from_the_deploy_page(app_env):
    # Prepare: a run stopped after round 2, recorded as hosted (its clients were other machines)
    from ui.app_state import DEPLOY_RUN, _registry

    handle = stopped_run(app_env, clients=2, rounds=8)
    summary_path = app_env / handle.run_id / "summary.json"
    summary_path.write_text(json.dumps({**json.loads(summary_path.read_text()), "kind": "hosted"}))
    at = runs_page(new_app())
    select(at, [0])
    assert "Resume it here on the Deploy page" in texts(at.info)
    # Execute: Runs -> Deploy, then host it again on a free loopback port
    at.button(key=f"resume_{handle.run_id}").click().run()
    assert "Resuming run" in texts(at.info)
    at.switch_page("app_pages/deploy.py").run()  # AppTest stays on the page it was given; the app switched
    at.text_input(key="deploy_host").set_value("127.0.0.1")
    at.number_input(key="deploy_port").set_value(0)
    at.button(key="start_server").click().run()
    # Assert: the same run id is hosted again and waits for its clients
    assert not at.exception and not at.error
    assert at.session_state[DEPLOY_RUN] == handle.run_id
    resumed = _registry(str(app_env)).get(handle.run_id)
    try:
        assert resumed is not None and resumed.kind == "hosted" and resumed.resume is not None
        assert any(e.get("type") == "resumed" for e in resumed.snapshot()["events"])
    finally:
        resumed.stop()
        resumed.wait(10)
