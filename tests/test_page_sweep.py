"""The Sweep page, driven by AppTest: the Run page's settings as base, a grid from widgets, a live sweep, reload."""

from __future__ import annotations

import pytest

from fl.runs.store import RunStore
from tests.apptest_helpers import new_app, new_app_with_url, run_until, texts


@pytest.fixture
def sweep_env(app_env):
    """app_env, and every sweep the page started stopped and waited for (no worker process left)."""
    yield app_env
    from ui.sweep_view import _sweeps

    _sweeps(str(app_env)).stop_all()


def sweep_page(at):
    at.switch_page("app_pages/sweep.py").run()
    return at


def tiny_base(at):
    """A small run on the Run page's sidebar: the sweep's base settings."""
    at.sidebar.selectbox(key="cfg_dataset").set_value("iris").run()
    at.sidebar.selectbox(key="cfg_model").set_value("logreg").run()
    at.sidebar.slider(key="cfg_clients").set_value(3).run()
    at.sidebar.slider(key="cfg_rounds").set_value(2).run()
    return at


def set_axis(at, position: int, name: str, values):
    at.selectbox(key=f"sweep_axis_{position}").set_value(name).run()
    widget_key = f"sweep_values_{position}_{name}"
    if isinstance(values, str):
        at.text_input(key=widget_key).input(values).run()
    else:
        at.multiselect(key=widget_key).set_value(values).run()
    return at


def test_the_page_shows_the_run_pages_settings_and_refuses_bad_values_in_words(sweep_env):
    # Prepare
    at = sweep_page(tiny_base(new_app()))
    # Execute: a number that is not one, then the same axis twice
    set_axis(at, 0, "alpha", "0.1, abc")
    bad_value = texts(at.error)
    set_axis(at, 0, "alpha", "0.1, 10")
    set_axis(at, 1, "alpha", "1")
    twice = texts(at.error)
    # Assert
    assert not at.exception
    assert "iris · logreg · fedavg · 3 clients" in texts(at.caption)
    assert "alpha=abc is refused: alpha must be a number" in bad_value
    assert "axis 2 repeats alpha" in twice
    assert at.button(key="sweep_start").disabled


def test_a_sweep_runs_live_then_shows_its_charts_downloads_and_runs(sweep_env):
    # Prepare: 2 x 2 cells x 2 seeds of the small base
    at = sweep_page(tiny_base(new_app()))
    set_axis(at, 0, "aggregation", ["fedavg", "median"])
    set_axis(at, 1, "local_epochs", "1, 2")
    at.number_input(key="sweep_seeds").set_value(2).run()
    at.number_input(key="sweep_parallel").set_value(2).run()
    assert "4 cells × 2 seeds = 8 runs, 2 at a time." in texts(at.caption)
    # Execute
    at.button(key="sweep_start").click().run()
    assert not at.button(key="sweep_stop").disabled and at.button(key="sweep_new").disabled  # while it goes
    at = run_until(at, lambda a: "Sweep completed" in texts(a.success), timeout=120)
    # Assert: the table of runs, the three charts, the three downloads, every run on the Runs page
    assert not at.exception and not at.error
    assert "8 of 8 runs completed" in texts(at.success)
    table = at.dataframe[0].value
    assert len(table) == 8 and set(table["Status"]) == {"completed"}
    assert table["Cell"].iloc[0] == "aggregation=fedavg, local_epochs=1"
    assert len(at.get("plotly_chart")) == 3  # bands, heatmap, error bars
    assert [b.label for b in at.get("download_button")] == ["summary.csv", "cells.csv", "Whole sweep (zip)"]
    assert at.button(key="sweep_stop").disabled
    sweep_id = at.query_params["sweep"]
    runs = RunStore(sweep_env).list()
    assert len(runs) == 8 and {r.summary["sweep_id"] for r in runs} == {sweep_id}
    runs_page = at.switch_page("app_pages/runs.py").run()
    assert len(runs_page.dataframe[0].value) == 8 and not runs_page.exception
    # Execute: a reload comes back to it; New sweep lists it among the past sweeps, Open shows it again
    reload = sweep_page(new_app_with_url(sweep=sweep_id))
    assert "Sweep completed" in texts(reload.success)
    reload.button(key="sweep_new").click().run()
    assert list(reload.dataframe[0].value["Sweep id"]) == [sweep_id]
    reload.button(key="sweep_open").click().run()
    assert "Sweep completed" in texts(reload.success) and not reload.exception


def test_stop_on_the_page_ends_the_sweep_as_stopped(sweep_env):
    # Prepare: the default run's settings (digits, MLP, 20 rounds) as base, one run at a time
    at = sweep_page(new_app())
    assert "digits · mlp · fedavg · 10 clients · dirichlet · 20 rounds" in texts(at.caption)
    set_axis(at, 0, "aggregation", ["fedavg", "median"])
    at.number_input(key="sweep_parallel").set_value(1).run()
    at.number_input(key="sweep_seeds").set_value(1).run()
    at.button(key="sweep_start").click().run()
    run_until(at, lambda a: "1 running" in str(a.get("progress")[0].proto.text) if a.get("progress") else False,
              timeout=60)
    # Execute
    at.button(key="sweep_stop").click().run()
    at = run_until(at, lambda a: "Sweep stopped" in texts(a.warning), timeout=60)
    # Assert
    assert not at.exception and not at.error
    assert list(at.dataframe[0].value["Status"]) == ["stopped", "cancelled"]
