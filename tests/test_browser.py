"""End to end in a real browser: Debian's chromium driven by Playwright.

Starts ``streamlit run app.py`` on a free loopback port, picks digits split
non-IID across 8 clients in the sidebar, presses Start, waits until the chart
shows at least 3 rounds, saves docs/screenshot.png and stops the server.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
SCREENSHOT = ROOT / "docs" / "screenshot.png"

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium is not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def streamlit_url(tmp_path):
    port = _free_port()
    env = {**os.environ, "FL_RUNS_DIR": str(tmp_path / "runs")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.3)
        else:
            pytest.fail("streamlit did not come up")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stdout:
            log = proc.stdout.read()
            assert "Traceback" not in log, log


def _rounds_done(page) -> int:
    text = page.inner_text("body")
    found = re.findall(r"(\d+)/\d+ rounds done", text) + re.findall(r"Finished (\d+) rounds?", text)
    return max((int(n) for n in found), default=0)


def test_start_a_run_in_the_browser_and_watch_it(streamlit_url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--headless", "--no-sandbox", "--disable-gpu",
                                           "--disable-background-networking"])
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1300})
            page.goto(streamlit_url)
            page.get_by_text("Federated learning workbench").first.wait_for(timeout=60_000)
            sidebar = page.locator('[data-testid="stSidebar"]')
            # Choose digits, a Dirichlet split, 8 clients
            sidebar.get_by_role("combobox", name="Dataset").click()
            page.get_by_role("option", name=re.compile("Digits")).click()
            page.wait_for_timeout(1500)
            sidebar.get_by_role("combobox", name="How the data is split").click()
            page.get_by_role("option", name=re.compile("Dirichlet")).click()
            page.wait_for_timeout(1500)
            clients = sidebar.get_by_role("slider").first
            clients.focus()
            for _ in range(3):
                clients.press("ArrowRight")
            page.wait_for_timeout(1500)
            sidebar.get_by_role("button", name="Start").click()
            deadline = time.monotonic() + 90
            while _rounds_done(page) < 3 and time.monotonic() < deadline:
                page.wait_for_timeout(500)
            assert _rounds_done(page) >= 3, page.inner_text("body")[:2000]
            page.get_by_text("Finished").first.wait_for(timeout=90_000)
            page.wait_for_timeout(2500)  # let plotly finish drawing
            body = page.inner_text("body")
            assert "Global accuracy" in body and "Centralized" in body
            assert "Traceback" not in body
            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=False)
            # A reload on another page's URL keeps the app's own navigation and finds the run
            page.goto(f"{streamlit_url}/runs")
            page.get_by_text("newest first").first.wait_for(timeout=30_000)
            nav = page.locator('[data-testid="stSidebarNav"]').inner_text()
            assert "Deploy" in nav and "app" not in nav.split()
        finally:
            browser.close()
