"""Helpers for AppTest page tests: bounded waiting and text lookups (the app_env fixture is in conftest)."""

from __future__ import annotations

import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]


def new_app() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    return at


def new_app_with_url(**query: str) -> AppTest:
    """A new session opened on a URL with these query parameters (what a reload does)."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.query_params.update(query)
    at.run()
    return at


def run_until(at: AppTest, done, timeout: float = 90.0, pause: float = 0.3) -> AppTest:
    """Rerun the page until done(at) holds (what the live fragment does in a browser)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        at.run()
        if done(at):
            return at
        time.sleep(pause)
    raise AssertionError("the page did not reach the expected state in time")


def texts(elements) -> str:
    return " ".join(str(e.value) for e in elements)
