"""Shared fixtures: every run, thread and port a test starts is cleaned up."""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import tempfile
import threading
from pathlib import Path

import pytest
import streamlit as st

ROOT = Path(__file__).resolve().parents[1]
# A run without --out is kept in the run store: the tests' (and their subprocesses') is a temporary one, never
# the repository's runs/ (set at import, before test modules copy os.environ for their subprocesses)
if "FL_RUNS_DIR" not in os.environ:
    os.environ["FL_RUNS_DIR"] = _TEST_RUNS = tempfile.mkdtemp(prefix="fl-test-runs-")
    atexit.register(shutil.rmtree, _TEST_RUNS, ignore_errors=True)


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
    from ui.app_state import _registry

    _registry(str(tmp_path / "runs")).stop_all()
    st.cache_resource.clear()


# ---------------------------------------------------------------- loopback socket pairs (protocol tests)
def _close_all(*socks: socket.socket) -> None:
    for s in socks:
        s.close()


@pytest.fixture
def unix_pair():
    a, b = socket.socketpair()
    a.settimeout(5)
    b.settimeout(5)
    yield a, b
    _close_all(a, b)


@pytest.fixture
def tcp_pair():
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(5)
    client = socket.create_connection(listener.getsockname(), timeout=5)
    server, _ = listener.accept()
    server.settimeout(5)
    listener.close()
    yield client, server
    _close_all(client, server)


@pytest.fixture(params=["socketpair", "tcp"])
def pair(request):
    """A connected (writer, reader) pair, over both transports."""
    return request.getfixturevalue("unix_pair" if request.param == "socketpair" else "tcp_pair")


@pytest.fixture
def runs():
    """Server runs of the liveness tests (``runs(**kw)`` makes a tests.liveness_helpers.Run); closed at teardown."""
    from tests.liveness_helpers import Run

    made: list = []

    def make(**kw) -> Run:
        made.append(Run(**kw))
        return made[-1]

    yield make
    for run in made:
        run.close()
