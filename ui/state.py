"""Process-wide and per-session state of the dashboard.

The RunRegistry lives in ``st.cache_resource``: one per process, shared by
every session and rerun, so runs survive reruns, page switches and reloads.
Which run a browser tab is looking at lives in ``st.session_state``.
"""

from __future__ import annotations

import os

import streamlit as st

from fl.registry import RunRegistry
from fl.runs import RunStore
from fl.runstate import RunHandle

CURRENT_RUN = "current_run_id"
PENDING_CONFIG = "pending_config"  # a config dict the Runs page sends to the Run page
DRAFT_CONFIG = "draft_config"  # the Run page's sidebar settings, for the Clients page preview


def runs_root() -> str:
    """Where runs are stored; FL_RUNS_DIR overrides (tests use a temporary folder)."""
    return os.environ.get("FL_RUNS_DIR", "runs")


@st.cache_resource(show_spinner=False)
def _registry(root: str) -> RunRegistry:
    return RunRegistry(RunStore(root))


def registry() -> RunRegistry:
    return _registry(runs_root())


def store() -> RunStore:
    return registry().store


def current_handle(kind: str | None = "simulation") -> RunHandle | None:
    """The run this tab follows: the one it started, else the newest live one.

    A reload starts a new session; it then finds the newest run of the
    registry instead of losing it.
    """
    reg = registry()
    handle = reg.get(st.session_state.get(CURRENT_RUN))
    if handle is not None and (kind is None or handle.kind == kind):
        return handle
    candidates = [h for h in reg.handles() if kind is None or h.kind == kind]
    live = [h for h in candidates if not h.done]
    chosen = (live or candidates or [None])[0]
    if chosen is not None:
        st.session_state[CURRENT_RUN] = chosen.run_id
    return chosen


def follow(handle: RunHandle) -> None:
    st.session_state[CURRENT_RUN] = handle.run_id
