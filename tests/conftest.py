"""Shared fixtures: every run, thread and port a test starts is cleaned up."""

from __future__ import annotations

import threading

import pytest


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
