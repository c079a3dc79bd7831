"""Run: configure in the sidebar, press Start, watch the rounds live, Stop.

One state for sidebar and view: the tab either shows one run (or one rule
comparison), whose settings the sidebar holds and locks while it goes, or a
new run being configured, with the preview of its data and split. Changing a
setting after a run has ended, or pressing New run, turns the tab back to a
new run; the old one stays on the Runs page.
"""

import streamlit as st

from ui.format import words

from fl.runs.for_pages import FLError
from ui import live, preview, sidebar
from ui.compare import can_compare, same_settings, show_comparison, start_comparison
from ui.app_state import (
    DRAFT_CONFIG, PENDING_CONFIG, START_REFUSED, comparison_handles, follow, new_run, registry, shown_handle, stop_runs,
    sync_url,
)

if PENDING_CONFIG in st.session_state:  # a reload of a run, or "load into Run page" from Runs
    sidebar.apply_config(st.session_state.pop(PENDING_CONFIG))

handle = shown_handle()
comparison = comparison_handles()
shown = comparison or ([handle] if handle is not None else [])
running = any(not h.done for h in shown)
# Start pressed (its value holds for this script run): the settings are drawn locked at once and the run starts
# below, in this same run; a second script run would send the whole sidebar to the browser again
starting = bool(st.session_state.get("start_run")) and not running

with st.sidebar:
    buttons = st.container()  # Start/Stop on top, drawn once the settings below are read
    config = sidebar.config_sidebar(locked=running or starting)

if config is not None:
    st.session_state[DRAFT_CONFIG] = config.to_dict()
if shown and not running and not same_settings(config, shown):
    new_run()  # a setting changed after the run ended: the sidebar now describes a new run
    handle, comparison, shown = None, [], []
# Settings that cannot run: Start is off, and the one reason is said beside it (not again on the page)
problem = preview.start_problem(config) if config is not None and not shown else None

if starting:
    why_not = None
    if config is not None and problem is None:
        try:
            with st.spinner("Preparing data and starting the clients…"):
                started = registry().start(config)
            follow(started)
            handle, comparison, shown, running = started, [], [started], True
            sync_url()
        except FLError as exc:
            why_not = f"Cannot start this run: {words(exc)}"
        except OSError as exc:
            why_not = (f"Cannot open a local socket for the run ({exc.strerror or exc}). "
                       "Try again, or stop other runs.")
    if not running:  # nothing started: the settings were drawn locked for nothing; again, open, saying why
        st.session_state[START_REFUSED] = why_not
        st.rerun()

with buttons:
    start_col, stop_col = st.columns(2)
    start_col.button("Start", type="primary", disabled=config is None or running or problem is not None,
                     width="stretch", key="start_run", help="Train with these settings.")  # read above, as `starting`
    stop = stop_col.button("Stop", disabled=not running, width="stretch", key="stop_run",
                           help="End the run now; the rounds done so far are kept.",
                           on_click=stop_runs, args=([h.run_id for h in shown],))
    fresh = st.button("New run", disabled=running or not shown, width="stretch", key="new_run",
                      help="Clear the view and configure another run; this one stays on the Runs page.")
    if problem is not None:
        st.error(f"Start is off: {words(problem)}")
    compare = problem is None and can_compare(config) and not running and st.button(
        "Compare FedAvg, median, trimmed mean, Krum", width="stretch", key="compare_rules",
        help="The same run under four rules, one chart.")

if stop and running:
    with st.spinner("Stopping…"):  # stop_runs already asked them to stop, before this rerun began
        for h in shown:
            h.wait_until_done(10)  # the rounds' end, not the worker processes' (they end on their own)
    st.rerun()

if fresh and not running:
    new_run()
    st.rerun()

if refused := st.session_state.pop(START_REFUSED, None):
    st.error(refused)

if compare and config is not None and not running:
    if start_comparison(config):
        sync_url()
        st.rerun()

sync_url()
st.title("Federated learning workbench")
if comparison:
    show_comparison(comparison, done=not running)
elif handle is not None:
    st.caption(f"Run `{handle.run_id}` · {live.run_title(handle.config.to_dict(), handle.config.effective_rounds)}")
    live.show_run(handle, done=not running)  # as the buttons above were drawn, though it may end meanwhile
else:
    preview.new_run_view(config, problem)
