"""Shared fixtures: every run, thread and port a test starts is cleaned up."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import streamlit as st

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_thread_leaks():
    """Fail a test that leaves engine threads running after it ends."""
    before = {t.ident for t in threading.enumerate()}
    yield
    import time

    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        left = [t for t in threading.enumerate() if t.ident not in before and t.name.startswith("fl-") and t.is_alive()]
        if not left:
            return
        time.sleep(0.05)
    pytest.fail(f"threads left running: {[t.name for t in left]}")


@pytest.fixture
def app_env(tmp_path, monkeypatch):
    """Each test gets its own run store and registry; every run is stopped after."""
    monkeypatch.setenv("FL_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.chdir(ROOT)
    st.cache_resource.clear()
    st.cache_data.clear()
    yield tmp_path / "runs"
    from ui.state import _registry

    _registry(str(tmp_path / "runs")).stop_all()
    st.cache_resource.clear()
