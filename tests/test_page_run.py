"""The Run page, driven by Streamlit's AppTest: start a run, watch it finish."""

from __future__ import annotations

from tests.apptest_helpers import new_app, new_app_with_url, run_until, texts


def test_landing_page_explains_and_previews_the_split(app_env):
    # Prepare / Execute
    at = new_app()
    # Assert
    assert not at.exception
    assert "Federated learning workbench" in texts(at.title)
    assert any("How the data will be split" in s.value for s in at.subheader)
    assert len(at.get("plotly_chart")) == 1  # the clients x classes heatmap


def test_small_run_finishes_with_metrics_charts_and_downloads(app_env):
    # Prepare
    at = new_app()
    at.sidebar.selectbox(key="cfg_dataset").set_value("iris").run()
    at.sidebar.slider(key="cfg_clients").set_value(3).run()
    at.sidebar.slider(key="cfg_rounds").set_value(3).run()
    # Execute
    at.sidebar.button(key="start_run").click().run()
    at = run_until(at, lambda a: len(a.success) > 0)
    # Assert
    assert not at.exception and not at.error
    assert "Finished 3 rounds" in texts(at.success)
    labels = [m.label for m in at.metric]
    assert {"Global accuracy", "Loss", "Worst client", "Centralized", "Local only (mean)",
            "Majority class"} <= set(labels)
    assert len(at.get("plotly_chart")) >= 5  # accuracy, loss, per-client, confusion matrix, recall per class
    assert any(e.label.startswith("Per class") for e in at.expander)
    assert at.select_slider(key="static-" + at.query_params["run"] + "-confusion-round").value == 3
    assert len(at.dataframe) >= 2  # the per-class table too
    labels = [b.label for b in at.get("download_button")]
    assert labels[:3] == ["Metrics (CSV)", "Config (JSON)", "Final model (joblib)"]
    assert labels[3].startswith("Best model (round ")  # the best round's model, beside the final one
    assert (app_env).exists() and any(app_env.iterdir())  # the run store has it


def test_reload_keeps_the_tabs_run_and_its_settings_and_a_new_tab_starts_fresh(app_env):
    # Prepare: a run on wine with 3 clients
    at = new_app()
    at.sidebar.selectbox(key="cfg_dataset").set_value("wine").run()
    at.sidebar.slider(key="cfg_clients").set_value(3).run()
    at.sidebar.slider(key="cfg_rounds").set_value(2).run()
    at.sidebar.button(key="start_run").click().run()
    run_until(at, lambda a: len(a.success) > 0)
    run_id = at.query_params["run"]
    # Execute: a reload (a new session with the same URL) and a new tab (no URL)
    reload = new_app_with_url(run=run_id)
    fresh = new_app()
    # Assert: the reload shows the run with its settings; the new tab configures a new run
    assert "Finished 2 rounds" in texts(reload.success)
    assert reload.sidebar.selectbox(key="cfg_dataset").value == "wine"
    assert reload.sidebar.slider(key="cfg_clients").value == 3
    assert not fresh.success and any("How the data will be split" in s.value for s in fresh.subheader)
    from fl.runs.store import RunStore

    assert len(RunStore(app_env).list()) == 1  # nothing restarted or duplicated


def test_start_locks_the_sidebar_and_stop_ends_the_run(app_env):
    # Prepare: a long run
    at = new_app()
    at.sidebar.selectbox(key="cfg_dataset").set_value("iris").run()
    at.sidebar.selectbox(key="cfg_model").set_value("logreg").run()
    at.sidebar.slider(key="cfg_rounds").set_value(200).run()
    # Execute
    at.sidebar.button(key="start_run").click().run()
    # Assert: mid-run, Start and the settings are disabled, Stop is enabled
    assert at.sidebar.button(key="start_run").disabled
    assert not at.sidebar.button(key="stop_run").disabled
    assert at.sidebar.selectbox(key="cfg_dataset").disabled
    at.sidebar.button(key="stop_run").click().run()
    assert "Stopped after" in texts(at.warning)
    assert not at.sidebar.button(key="start_run").disabled and at.sidebar.button(key="stop_run").disabled


def test_a_start_the_engine_refuses_says_why_and_leaves_the_settings_open(app_env, monkeypatch):
    # Prepare: the engine refuses the run when it is built (what the page's own checks cannot see)
    from fl.runs.config import ConfigError
    from fl.runs.run_registry import RunRegistry

    def refuse(self, config):
        raise ConfigError("the machine has no room for this run")

    monkeypatch.setattr(RunRegistry, "start", refuse)
    at = new_app()
    at.sidebar.selectbox(key="cfg_dataset").set_value("iris").run()
    # Execute
    at.sidebar.button(key="start_run").click().run()
    # Assert: the reason on the page, no traceback, the settings and Start usable again, nothing running
    assert not at.exception
    assert any("Cannot start this run" in e.value and "no room for this run" in e.value for e in at.error)
    assert not at.sidebar.selectbox(key="cfg_dataset").disabled
    assert not at.sidebar.button(key="start_run").disabled and at.sidebar.button(key="stop_run").disabled


def test_changing_a_setting_after_a_run_turns_the_view_into_a_new_run(app_env):
    # Prepare
    at = new_app()
    at.sidebar.selectbox(key="cfg_dataset").set_value("iris").run()
    at.sidebar.selectbox(key="cfg_model").set_value("logreg").run()
    at.sidebar.slider(key="cfg_rounds").set_value(2).run()
    at.sidebar.button(key="start_run").click().run()
    # finished, baselines included (the sidebar stays locked while they train: on a busy machine, a while)
    run_until(at, lambda a: len(a.success) > 0 and not a.sidebar.slider(key="cfg_clients").disabled)
    # Execute
    at.sidebar.slider(key="cfg_clients").set_value(4).run()
    # Assert: the split preview of the new settings, no run on screen
    assert not at.success
    assert any("How the data will be split" in s.value for s in at.subheader)
    assert "run" not in at.query_params


def test_impossible_split_shows_an_error_not_a_traceback(app_env):
    # Prepare
    at = new_app()
    at.sidebar.selectbox(key="cfg_dataset").set_value("iris").run()
    # Execute: 100 clients cannot each get 2 rows of iris' training split
    at.sidebar.slider(key="cfg_clients").set_value(100).run()
    # Assert: Start is off, and the reason is said once, beside it
    assert not at.exception
    assert at.sidebar.button(key="start_run").disabled
    assert len(at.error) == 1 and "Start is off" in at.error[0].value and "cannot" in at.error[0].value.lower()


def test_unreadable_csv_shows_an_error_and_start_stays_off(app_env, tmp_path):
    # Prepare
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"\x00\x01\x02 not text")
    at = new_app()
    at.session_state["cfg_csv_path"] = str(bad)
    # Execute
    at.sidebar.selectbox(key="cfg_dataset").set_value("csv").run()
    # Assert
    assert not at.exception
    assert "not a text CSV" in texts(at.sidebar.error)
    assert at.sidebar.button(key="start_run").disabled


def test_single_class_csv_target_is_refused_with_advice(app_env, tmp_path):
    # Prepare
    csv = tmp_path / "one.csv"
    csv.write_text("a,b,label\n" + "".join(f"{i},{i * 2},yes\n" for i in range(40)))
    at = new_app()
    at.session_state["cfg_csv_path"] = str(csv)
    # Execute
    at.sidebar.selectbox(key="cfg_dataset").set_value("csv").run()
    # Assert: one message, beside the Start it turns off
    assert not at.exception
    assert at.sidebar.button(key="start_run").disabled
    assert sum("only one class" in e.value for e in at.error) == 1


def test_attack_and_privacy_settings_run_and_show_epsilon_and_roles(app_env):
    # Prepare: 4 clients, one malicious (sign flip), FedAvg with server-side DP
    at = new_app()
    at.sidebar.selectbox(key="cfg_dataset").set_value("iris").run()
    at.sidebar.selectbox(key="cfg_model").set_value("logreg").run()
    at.sidebar.slider(key="cfg_clients").set_value(4).run()
    at.sidebar.slider(key="cfg_rounds").set_value(3).run()
    at.sidebar.number_input(key="cfg_malicious_clients").set_value(1).run()
    at.sidebar.selectbox(key="cfg_dp").set_value("server").run()
    # Execute
    at.sidebar.button(key="start_run").click().run()
    at = run_until(at, lambda a: len(a.success) > 0)
    # Assert
    assert not at.exception and not at.error
    assert "Privacy ε" in [m.label for m in at.metric]
    assert "malicious" in texts(at.caption)
    at.switch_page("app_pages/clients.py").run()
    roles = list(at.dataframe[0].value["Role (set by you)"])
    assert roles.count("malicious (sign_flip)") == 1


def test_compare_rules_under_attack_draws_one_chart_of_four_runs(app_env):
    # Prepare
    at = new_app()
    at.sidebar.selectbox(key="cfg_dataset").set_value("digits").run()
    at.sidebar.selectbox(key="cfg_model").set_value("logreg").run()
    at.sidebar.selectbox(key="cfg_partition").set_value("iid").run()
    at.sidebar.slider(key="cfg_clients").set_value(10).run()
    at.sidebar.slider(key="cfg_rounds").set_value(3).run()
    at.sidebar.slider(key="cfg_local_epochs").set_value(5).run()
    at.sidebar.number_input(key="cfg_malicious_clients").set_value(3).run()
    # Execute
    at.sidebar.button(key="compare_rules").click().run()
    at = run_until(at, lambda a: len(a.metric) >= 4 and all(m.value != "–" for m in a.metric[:4]))
    # Assert: sign flip is the default attack; FedAvg collapses, the median holds
    values = {m.label: float(m.value.rstrip("%")) for m in at.metric[:4]}
    assert set(values) == {"fedavg", "median", "trimmed_mean", "krum"}
    assert values["median"] > values["fedavg"] + 30


def test_boosted_trees_run_shows_importances_and_says_only_sums_crossed(app_env):
    # Prepare: hist_gbdt on breast cancer; its aggregation is chosen for it
    at = new_app()
    at.sidebar.selectbox(key="cfg_dataset").set_value("breast_cancer").run()
    at.sidebar.selectbox(key="cfg_model").set_value("hist_gbdt").run()
    at.sidebar.slider(key="cfg_clients").set_value(3).run()
    at.sidebar.slider(key="cfg_rounds").set_value(3).run()
    # Execute
    at.sidebar.button(key="start_run").click().run()
    at = run_until(at, lambda a: len(a.success) > 0)
    # Assert
    assert not at.exception and not at.error
    assert "Finished 3 rounds" in texts(at.success)
    captions = texts(at.caption)
    assert "Only sums crossed the sockets" in captions and "fitted models" not in captions
    assert any("importance" in chart.proto.spec.lower() for chart in at.get("plotly_chart"))


def test_a_secure_run_says_the_server_saw_only_the_sum(app_env):
    # Prepare
    at = new_app()
    at.sidebar.selectbox(key="cfg_dataset").set_value("iris").run()
    at.sidebar.selectbox(key="cfg_model").set_value("logreg").run()
    at.sidebar.slider(key="cfg_clients").set_value(4).run()
    at.sidebar.slider(key="cfg_rounds").set_value(2).run()
    at.sidebar.checkbox(key="cfg_secagg").check().run()
    # Execute
    at.sidebar.button(key="start_run").click().run()
    at = run_until(at, lambda a: len(a.success) > 0)
    # Assert
    assert not at.exception and not at.error
    assert "the server learned only their sum (4 sites in the last one)" in texts(at.caption)
