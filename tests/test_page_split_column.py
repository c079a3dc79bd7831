"""The Run page's column split, driven by Streamlit's AppTest: choose the column, see the sites, run them."""

from __future__ import annotations

import pandas as pd

from tests.apptest_helpers import new_app, new_app_with_url, run_until, texts
from tests.column_split_helpers import SITE_IDS, write_sites_csv

BY_COLUMN = "By a column (one client per value)"


def _with_csv(path) -> object:
    at = new_app()
    at.session_state["cfg_csv_path"] = str(path)
    at.sidebar.selectbox(key="cfg_dataset").set_value("csv").run()
    at.sidebar.selectbox(key="cfg_target").set_value("outcome").run()
    return at


def test_choosing_the_column_split_shows_the_sites_in_the_split_picture_and_runs_them(app_env, tmp_path):
    # Prepare
    at = _with_csv(write_sites_csv(tmp_path / "sites.csv"))
    assert BY_COLUMN in at.sidebar.selectbox(key="cfg_partition").options
    # Execute
    at.sidebar.selectbox(key="cfg_partition").set_value("column").run()
    # Assert: the column is guessed by its name, the clients slider gives way to it, the picture names the sites
    assert not at.exception and not at.error
    assert at.sidebar.selectbox(key="cfg_split_column").value == "hospital"
    assert "cfg_clients" not in [s.key for s in at.sidebar.slider]
    assert "4 clients, one per value of `hospital`" in texts(at.sidebar.caption)
    assert "4 clients, one per value of `hospital`" in texts(at.caption)
    assert "Zurich_Nord = Zürich/Nord" in texts(at.caption)
    heatmap = at.get("plotly_chart")[-1].proto.spec
    assert all(f'"{name}"' in heatmap for name in SITE_IDS)
    columns = at.dataframe[0].value
    assert columns.loc[columns["Column"] == "hospital", "What the run does"].str.contains("split column").all()
    # Execute: start it
    at.sidebar.selectbox(key="cfg_model").set_value("logreg").run()
    at.sidebar.slider(key="cfg_rounds").set_value(2).run()
    at.sidebar.button(key="start_run").click().run()
    at = run_until(at, lambda a: len(a.success) > 0)
    # Assert: the run's clients are the sites
    assert not at.exception and "Finished 2 rounds" in texts(at.success)
    run_dir = next(p for p in app_env.iterdir() if (p / "clients.csv").exists())
    assert sorted(set(pd.read_csv(run_dir / "clients.csv")["client_id"])) == sorted(SITE_IDS)
    run_id = at.query_params["run"]
    # Execute: the Clients page of the run
    at.switch_page("app_pages/clients.py").run()
    # Assert: its table and its split picture name the sites
    assert not at.exception
    assert sorted(at.dataframe[0].value["Client"]) == sorted(SITE_IDS)
    assert all(f'"{name}"' in at.get("plotly_chart")[0].proto.spec for name in SITE_IDS)
    # Execute: a reload of the run's URL puts its settings back in the sidebar
    reload = new_app_with_url(run=run_id)
    # Assert
    assert reload.sidebar.selectbox(key="cfg_partition").value == "column"
    assert reload.sidebar.selectbox(key="cfg_split_column").value == "hospital"


def test_a_csv_without_a_column_of_few_values_is_not_offered_the_column_split(app_env, tmp_path):
    # Prepare: every feature continuous, so only the label has few values
    csv = tmp_path / "plain.csv"
    csv.write_text("a,b,outcome\n" + "".join(f"{i * 0.37:.2f},{i * 1.9:.1f},{i % 2}\n" for i in range(60)))
    # Execute
    at = _with_csv(csv)
    # Assert
    assert not at.exception
    assert BY_COLUMN not in at.sidebar.selectbox(key="cfg_partition").options
    assert "cfg_clients" in [s.key for s in at.sidebar.slider]
