"""End to end in a real browser: Debian's chromium driven by Playwright.

Starts ``streamlit run app.py`` on a free loopback port, runs the default
run to its end and saves docs/screenshot.png; then starts a long run, checks
that Start is disabled and Stop enabled mid-run, reloads the page mid-run
(same run, same settings), presses Stop and checks the run stopped within the
round in progress.
"""

from __future__ import annotations

import json
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
PER_CLASS_SHOT = ROOT / "docs" / "per_class.png"

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium is not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_streamlit(env: dict, timeout_s: float = 120.0) -> tuple[subprocess.Popen, str]:
    """``streamlit run app.py`` on a free loopback port, healthy; a start that fails says why (its output),
    and a port taken between choosing it and binding it (another test's server) is chosen again."""
    for _ in range(3):
        port = _free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port",
             str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        return proc, url
            except OSError:
                time.sleep(0.3)
        _stop(proc)
        log = proc.stdout.read() if proc.stdout else ""
        if "is not available" not in log and "already in use" not in log:  # Streamlit's words for a taken port
            pytest.fail(f"streamlit did not come up within {timeout_s:.0f} s (exit code {proc.returncode}):\n{log}")
    pytest.fail("streamlit found no free port in 3 tries")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture
def streamlit_url(tmp_path):
    proc, url = _start_streamlit({**os.environ, "FL_RUNS_DIR": str(tmp_path / "runs")})
    try:
        yield url, tmp_path / "runs"
    finally:
        _stop(proc)
        if proc.stdout:
            log = proc.stdout.read()
            assert "Traceback" not in log, log


def _rounds_done(page) -> int:
    text = page.inner_text("body")
    found = re.findall(r"(\d+)/\d+ rounds done", text) + re.findall(r"(?:Finished|Stopped after) (\d+) rounds?", text)
    return max((int(n) for n in found), default=0)


def _button(page, name: str):
    return page.locator('[data-testid="stSidebar"]').get_by_role("button", name=name, exact=True)


def _wait_for(page, condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what}; the page says: {page.inner_text('body')[:1500]}"
        page.wait_for_timeout(200)


def launch_chromium(pw):
    """Debian's chromium, headless, as this machine runs it (Playwright's own download does not work here)."""
    return pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                              args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])


def test_start_watch_stop_and_reload_in_the_browser(streamlit_url):
    streamlit_url, runs_dir = streamlit_url
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = launch_chromium(pw)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1300})
            page.goto(streamlit_url)
            _button(page, "Start").wait_for(timeout=60_000)
            page.get_by_text("Label distribution per client").first.wait_for(timeout=60_000)
            # 1. The default run (digits, 10 clients, Dirichlet 0.5, MLP, 20 rounds) climbs; screenshot it
            _button(page, "Start").click()
            page.get_by_text("Finished 20 rounds").first.wait_for(timeout=60_000)
            _wait_for(page, lambda: "…" not in page.locator('[data-testid="stMetric"]').all_inner_texts()[3],
                      30, "the baselines never arrived")
            page.wait_for_timeout(1500)  # let plotly finish drawing
            body = page.inner_text("body")
            assert "Traceback" not in body and "Centralized" in body
            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=False)
            # The per-class view: the last round's confusion matrix and each class's recall per round
            matrix = page.get_by_text("Confusion matrix, round 20").first
            matrix.scroll_into_view_if_needed()
            assert "Recall of each class per round" in page.inner_text("body")
            page.wait_for_timeout(800)
            page.locator('[data-testid="stExpander"]').filter(has_text="Per class").first.screenshot(
                path=str(PER_CLASS_SHOT))
            # 2. A long run: mid-run Start is disabled and Stop enabled
            rounds = page.locator('[data-testid="stSidebar"]').get_by_role("slider", name="Rounds")
            rounds.focus()
            rounds.press("End")  # 200 rounds: the view turns into a new run to configure
            page.get_by_text("How the data will be split").first.wait_for(timeout=30_000)
            epochs = page.locator('[data-testid="stSidebar"]').get_by_role("slider", name="Local epochs")
            epochs.focus()
            epochs.press("End")  # 50 epochs: rounds of a few seconds, longer than the page's 1 s poll
            page.wait_for_timeout(1000)
            _button(page, "Start").click()
            _wait_for(page, lambda: _rounds_done(page) >= 1, 40, "the long run did not get going")
            assert _button(page, "Start").is_disabled() and _button(page, "Stop").is_enabled()
            run_caption = page.get_by_text(re.compile(r"^Run `?\d{8}-")).first.inner_text()
            # 3. A reload mid-run shows the same run, with its settings, still running
            page.reload()
            page.get_by_text(run_caption).first.wait_for(timeout=30_000)
            assert "200 rounds" in run_caption
            assert rounds.get_attribute("aria-valuetext") == "200"
            _wait_for(page, lambda: _button(page, "Stop").is_enabled(), 10, "Stop is not enabled after a reload")
            assert _button(page, "Start").is_disabled()
            # 4. Stop ends the run within the round in progress
            pressed = time.time()
            _button(page, "Stop").click()
            page.get_by_text("Stopped after").first.wait_for(timeout=20_000)
            # The engine's own record (events.jsonl) says when Stop reached it, when rounds started and when
            # the run ended: no round starts once Stop has been handled, and the run ends within one round's
            # time of it (the page's own delay in handling the click depends on the machine's load).
            run_id = re.search(r"(\d{8}-\d{6}-[0-9a-f]+)", run_caption).group(1)
            events = [json.loads(line) for line in (runs_dir / run_id / "events.jsonl").read_text().splitlines()]
            done = next(e for e in events if e["type"] == "done")
            round_time = max(e["duration_s"] for e in events if e["type"] == "round")
            asked = done["stop_requested_t"]
            assert done["status"] == "stopped" and pressed - 1.0 < asked < pressed + 20.0
            assert done["t"] - asked < round_time + 2.0
            assert not [e for e in events if e["type"] == "round_start" and e["t"] > asked + 0.5]
            _wait_for(page, lambda: _button(page, "Start").is_enabled(), 10, "Start did not come back")
            assert "Traceback" not in page.inner_text("body")
            # 5. Another page's URL keeps the app's own navigation
            page.goto(f"{streamlit_url}/runs")
            page.get_by_text("newest first").first.wait_for(timeout=30_000)
            nav = page.locator('[data-testid="stSidebarNav"]').inner_text()
            assert "Deploy" in nav and "app" not in nav.split()
        finally:
            browser.close()
