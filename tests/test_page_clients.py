"""The Clients page: split preview before a run, status and charts after."""

from __future__ import annotations

from tests.apptest_helpers import new_app, run_until, texts


def test_before_a_run_the_split_is_previewed(app_env):
    # Prepare
    at = new_app()
    at.sidebar.selectbox(key="cfg_partition").set_value("dirichlet").run()
    # Execute
    at.switch_page("app_pages/clients.py").run()
    # Assert
    assert not at.exception
    assert "No run in this tab yet" in texts(at.info)
    assert len(at.get("plotly_chart")) == 1


def test_after_a_run_clients_have_status_heatmap_and_metrics(app_env):
    # Prepare
    at = new_app()
    at.sidebar.selectbox(key="cfg_model").set_value("logreg").run()
    at.sidebar.slider(key="cfg_clients").set_value(4).run()
    at.sidebar.slider(key="cfg_rounds").set_value(2).run()
    at.sidebar.button(key="start_run").click().run()
    run_until(at, lambda a: len(a.success) > 0)
    # Execute
    at.switch_page("app_pages/clients.py").run()
    # Assert
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table["Client"]) == [f"client_{i:03d}" for i in range(4)]
    assert set(table["Rounds trained"]) == {2}
    assert len(at.get("plotly_chart")) >= 5  # heatmap, global model per client, accuracy, loss, bytes
    assert "Worst client" in [m.label for m in at.metric]
    assert all(v.endswith("%") for v in table["Global model on its data"])
    # what a flag means and what it does not, beside the scrutiny heatmap
    said = texts(at.markdown)
    assert "What a flag means." in said and "does not prove an attack" in said
    assert "Nobody is excluded or down-weighted because of a flag" in said
