"""Runs: every stored run; pick some to compare, download, reload or delete one."""

import streamlit as st

from ui.format import words

from fl.runs.for_pages import FLError
from fl.runs import manage
from ui import charts, history
from ui.live import model_buttons
from ui.app_state import PENDING_CONFIG, RESUME_RUN, follow, registry, store
from ui.sweep_view import live_run_ids as sweep_live_run_ids

FLASH = "runs_flash"  # a message that must survive the rerun after a delete

st.title("Runs")
if FLASH in st.session_state:
    st.success(st.session_state.pop(FLASH))

runs = store().list()
if not runs:
    st.info("No runs yet. Start one on the **Run** page (or host one on **Deploy**); every run is kept here "
            "to compare, download or run again.")
    st.stop()

live_ids = {h.run_id for h in registry().active()} | sweep_live_run_ids() | manage.live_ids(runs)  # any process
st.caption(f"{len(runs)} run{'s' if len(runs) != 1 else ''}, newest first. Select rows to compare them; "
           "select one to download, reload or delete it.")
event = st.dataframe(
    history.runs_frame(runs, live_ids), hide_index=True, on_select="rerun", selection_mode="multi-row",
    key=history.table_key(runs),
    column_config={"Final accuracy": st.column_config.NumberColumn(format="%.1f%%"),
                   "Run id": st.column_config.TextColumn(width="large", help="The run's folder under the runs "
                                                                            "directory; select the cell to copy it")},
)
chosen = history.selected(runs, event.selection.rows)

if not chosen:
    st.caption("Tip: click the boxes at the left of the rows to pick runs.")
    st.stop()

st.subheader("Compare" if len(chosen) > 1 else "Run")
curves = history.curves(chosen)
left, right = st.columns(2)
left.plotly_chart(charts.compare_figure(curves, "accuracy"), key="compare-accuracy")
right.plotly_chart(charts.compare_figure(curves, "loss"), key="compare-loss")

if len(chosen) > 1:
    st.caption("Select a single run to download, reload or delete it.")
    st.stop()

run = chosen[0]
st.caption(f"Run `{run.run_id}`")
if run.run_id in live_ids and st.button("Stop this run", key=f"stop_{run.run_id}",
                                        help="It ends within its round, whichever process runs it: this "
                                             "dashboard, a sweep or the command line (python -m fl runs stop)."):
    manage.stop(run.path, wait_s=0)  # a stop request in its directory (fl/runs/control.py)
    st.info(f"Asked run {run.run_id} to stop; it ends within its round.")
c1, c2, c3 = st.columns(3)
c1.download_button("Download run (zip)", lambda: history.zip_run(run), file_name=f"{run.run_id}.zip",
                   mime="application/zip", on_click="ignore", key="download_zip", width="stretch",
                   help="config.json, summary.json, metrics.csv, clients.csv, events.jsonl and the models")
model_buttons(run.run_id, c3)
if c2.button("Load config into Run page", key="load_config", width="stretch",
             help="Sets the Run page's sidebar to this run's settings, to repeat or vary it."):
    st.session_state[PENDING_CONFIG] = run.config
    st.switch_page("app_pages/run.py")

if run.resumable and run.run_id not in live_ids:
    if run.kind != "simulation":
        st.info(history.resume_note(run))
        if st.button("Resume on the Deploy page", key=f"resume_{run.run_id}", type="primary",
                     help="Host a server for this run again; it goes on from its last finished round."):
            st.session_state[RESUME_RUN] = run.run_id
            st.switch_page("app_pages/deploy.py")
    else:
        st.caption(history.resume_note(run))
        if st.button("Resume this run", key=f"resume_{run.run_id}", type="primary",
                     help="Continue from the last finished round, in this run's directory, under its id."):
            try:
                follow(registry().resume(run.run_id))
            except FLError as exc:
                st.error(f"Cannot resume this run: {words(exc)}")
            except OSError as exc:
                st.error(f"Cannot resume this run: {exc.strerror or exc}")
            else:
                st.switch_page("app_pages/run.py")

with st.expander("Delete this run"):
    sure = st.checkbox("I really want to delete this run", key=f"confirm_delete_{run.run_id}")
    if st.button("Delete", type="primary", disabled=not sure, key="delete_run"):
        error = history.delete_run(store(), registry(), run.run_id)
        if error:
            st.error(error)
        else:
            st.session_state[FLASH] = f"Deleted run {run.run_id}."
            st.rerun()
