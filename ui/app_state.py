"""Process-wide and per-session state of the dashboard.

The RunRegistry lives in ``st.cache_resource``: one per process, shared by
every session and rerun, so runs survive reruns, page switches and reloads.

What a browser tab shows lives in ``st.session_state`` and is mirrored in the
URL (``?run=<id>``, ``?compare=<id>,<id>,...``), so a reload, which starts a
new session, finds the tab's own run and puts its settings back into the
sidebar. A new tab has no such URL: it starts with a new run to configure,
never with somebody else's run.
"""

from __future__ import annotations

import os

import streamlit as st
from threadpoolctl import threadpool_limits

from fl.runs.processes import warm_up
from fl.runs.run_registry import RunRegistry
from fl.runs.store import RunStore
from fl.runs.live_run import RunHandle
from fl.runs.tls_dirs import clean_stale

CURRENT_RUN = "current_run_id"  # the run this tab shows on the Run page; absent = a new run being configured
COMPARISON = "comparison_run_ids"  # the runs of a rule comparison this tab started
PENDING_CONFIG = "pending_config"  # a config dict to put into the sidebar before it is drawn
DRAFT_CONFIG = "draft_config"  # the Run page's sidebar settings, for the Clients page preview
START_REFUSED = "start_refused"  # why the Start just pressed started nothing, for the page's next script run
DEPLOY_RUN = "deploy_run_id"  # the hosted run this tab started or found (Deploy page)
RESUME_RUN = "deploy_resume_run_id"  # a stored hosted run the Runs page sent to Deploy to be resumed
RESTORED = "restored_from_url"  # the URL has been read once for this session
URL_RUN, URL_COMPARE = "run", "compare"


def runs_root() -> str:
    """Where runs are stored; FL_RUNS_DIR overrides (tests use a temporary folder)."""
    return os.environ.get("FL_RUNS_DIR", "runs")


@st.cache_resource(show_spinner=False)
def _registry(root: str) -> RunRegistry:
    """Once per process (the app starting): the TLS keys of hosted servers no longer running go first.

    BLAS runs on one thread in this process: its runs' in-process clients
    share the cores with this server and, often, the browser; OpenBLAS's
    other threads spin between a client's small matrix products and took a
    core for no gain (20 rounds of the default run: 11-14 s with two
    threads, 4.4-5 s with one, same numbers; docs/performance.md). Worker
    processes set their own (cores // processes).

    The forkserver that starts runs' worker processes starts here, importing
    the engine in its own process while the page draws, so that the first
    run's workers start warm (fl/runs/processes.py).
    """
    threadpool_limits(1, user_api="blas")
    warm_up()
    clean_stale(root)
    return RunRegistry(RunStore(root))


def registry() -> RunRegistry:
    return _registry(runs_root())


def store() -> RunStore:
    return registry().store


def restore_from_url() -> None:
    """Once per session: follow the run (or comparison) the URL names, with its settings.

    Call at the top of a page, before the sidebar widgets are drawn.
    """
    if st.session_state.get(RESTORED):
        return
    st.session_state[RESTORED] = True
    reg = registry()
    compare = [i for i in str(st.query_params.get(URL_COMPARE, "")).split(",") if i]
    handles = [h for h in (reg.get(i) for i in compare) if h is not None]
    if handles:
        st.session_state[COMPARISON] = [h.run_id for h in handles]
        st.session_state[PENDING_CONFIG] = handles[0].config.to_dict()
        return
    handle = reg.get(st.query_params.get(URL_RUN))
    if handle is not None and handle.kind == "simulation":
        st.session_state[CURRENT_RUN] = handle.run_id
        st.session_state[PENDING_CONFIG] = handle.config.to_dict()


def sync_url() -> None:
    """Write what this tab shows into the URL, so a reload comes back to it."""
    wanted: dict[str, str] = {}
    if st.session_state.get(COMPARISON):
        wanted[URL_COMPARE] = ",".join(st.session_state[COMPARISON])
    elif st.session_state.get(CURRENT_RUN):
        wanted[URL_RUN] = st.session_state[CURRENT_RUN]
    for key in (URL_RUN, URL_COMPARE):
        if key in wanted and st.query_params.get(key) != wanted[key]:
            st.query_params[key] = wanted[key]
        elif key not in wanted and key in st.query_params:
            del st.query_params[key]


def shown_handle() -> RunHandle | None:
    """The simulated run this tab shows, or None when it is configuring a new one."""
    handle = registry().get(st.session_state.get(CURRENT_RUN))
    if handle is None:
        st.session_state.pop(CURRENT_RUN, None)
    return handle


def comparison_handles() -> list[RunHandle]:
    reg = registry()
    handles = [h for h in (reg.get(i) for i in st.session_state.get(COMPARISON) or []) if h is not None]
    if not handles:
        st.session_state.pop(COMPARISON, None)
    return handles


def follow(handle: RunHandle) -> None:
    """Show this run in this tab (and only this one), its settings in the sidebar (a run resumed from the Runs
    page, a sweep's run: the sidebar describes it, locked while it goes, and the view keeps it when it ends)."""
    st.session_state.pop(COMPARISON, None)
    st.session_state[CURRENT_RUN] = handle.run_id
    st.session_state[PENDING_CONFIG] = handle.config.to_dict()


def follow_comparison(run_ids: list[str]) -> None:
    st.session_state.pop(CURRENT_RUN, None)
    st.session_state[COMPARISON] = list(run_ids)


def new_run() -> None:
    """Stop showing any run: the tab configures a new one (the old ones stay on the Runs page)."""
    st.session_state.pop(CURRENT_RUN, None)
    st.session_state.pop(COMPARISON, None)


def stop_runs(run_ids: list[str]) -> None:
    """A Stop button's callback: it runs before the page's script, so the runs stop at once."""
    for run_id in run_ids:
        handle = registry().get(run_id)
        if handle is not None:
            handle.stop()


def current_handle(kind: str | None = "simulation") -> RunHandle | None:
    """The run the Clients page describes: this tab's run, else this tab's hosted run (Deploy)."""
    handle = shown_handle()
    if handle is None:
        comparison = comparison_handles()
        handle = comparison[0] if comparison else None
    if handle is None and kind in (None, "hosted"):
        hosted = registry().get(st.session_state.get(DEPLOY_RUN))
        handle = hosted if hosted is not None and hosted.kind == "hosted" else None
    if handle is not None and kind is not None and handle.kind != kind:
        return None
    return handle
