"""Sweep: the Run page's settings over a grid of values and seeds, in parallel; table, bands, heatmap, error bars.

The tab shows one sweep (``?sweep=<id>`` in the URL, so a reload finds it)
or a new one being configured, with the past sweeps to open.
"""

import streamlit as st

from ui.format import words

from fl.runs.sweep_spec import GridError
from ui import sweep_view
from ui.sweep_view import SWEEP_SHOWN, URL_SWEEP, sweeps

st.title("Sweep")
if SWEEP_SHOWN not in st.session_state and st.query_params.get(URL_SWEEP):
    st.session_state[SWEEP_SHOWN] = st.query_params[URL_SWEEP]  # a reload: the URL names the tab's sweep
shown = st.session_state.get(SWEEP_SHOWN)
handle = sweeps().get(shown)
running = handle is not None and not handle.done

if shown:
    st.query_params[URL_SWEEP] = shown
    stop_col, new_col = st.columns(2)
    stop_col.button("Stop", disabled=not running, key="sweep_stop", width="stretch", type="primary",
                    on_click=handle.stop if running else None,
                    help="Cancel the runs not started; the running ones stop within their round.")
    if new_col.button("New sweep", disabled=running, key="sweep_new", width="stretch",
                      help="Configure another sweep; this one stays in the list of past sweeps."):
        st.session_state.pop(SWEEP_SHOWN, None)
        del st.query_params[URL_SWEEP]
        st.rerun()
    sweep_view.show(shown, running)
    st.stop()

spec, parallel = sweep_view.configure()
if st.button("Start sweep", type="primary", disabled=spec is None, key="sweep_start"):
    try:
        with st.spinner("Starting the worker processes…"):
            started = sweeps().start(spec, parallel=parallel)
        st.session_state[SWEEP_SHOWN] = started.sweep_id
        st.rerun()
    except GridError as exc:
        st.error(f"Cannot start this sweep: {words(exc)}.")
    except OSError as exc:
        st.error(f"Cannot write the sweep's files ({exc.strerror or exc}). Check the runs folder's permissions.")

past = sweeps().store.list()
if past:
    st.subheader("Past sweeps")
    st.dataframe(sweep_view.past_sweeps_frame(past), hide_index=True)
    ids = [s.sweep_id for s in past]
    chosen = st.selectbox("Sweep", ids, key="sweep_past", label_visibility="collapsed")
    if st.button("Open this sweep", key="sweep_open"):
        st.session_state[SWEEP_SHOWN] = chosen
        st.rerun()
