"""A sweep clicked through in a real browser: Debian's chromium driven by Playwright.

Sets a small run on the Run page's sidebar (logistic regression, 3 rounds),
opens the Sweep page, builds a 2 x 2 grid (aggregation x Dirichlet α) over
2 seeds, starts it, waits for the table and the three charts, and saves
docs/sweep.png.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.test_browser import CHROMIUM, _button, _wait_for, launch_chromium, streamlit_url  # noqa: F401 - the fixture

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT = ROOT / "docs" / "sweep.png"

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium is not installed")


def _choose(page, label: str, option: str) -> None:
    """Open the selectbox or multiselect labelled ``label``, type to filter (its list is virtualised: an
    option far down is not in the page until filtered), and click ``option``."""
    page.get_by_label(label, exact=True).first.click()
    page.keyboard.type(option.split(":")[0])
    page.get_by_role("option", name=option, exact=True).first.click()


def _set_slider(page, name: str, steps_from_start: int) -> None:
    slider = page.locator('[data-testid="stSidebar"]').get_by_role("slider", name=name)
    slider.focus()
    slider.press("Home")
    for _ in range(steps_from_start):
        slider.press("ArrowRight")


def test_a_sweep_in_the_browser_shows_its_table_and_charts(streamlit_url):  # noqa: F811
    url, runs_dir = streamlit_url
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = launch_chromium(pw)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.goto(url)
            _button(page, "Start").wait_for(timeout=60_000)
            # 1. The base: the Run page's sidebar, a small logistic regression of 3 rounds
            _choose(page, "Model", "Logistic regression")
            _set_slider(page, "Rounds", 2)
            page.wait_for_timeout(800)
            # 2. The Sweep page (through the app's navigation: the same session keeps the settings)
            page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name="Sweep").click()
            page.get_by_text("Base settings").first.wait_for(timeout=30_000)
            # the base run's settings, from the Run page's sidebar: waited for, as the page draws in pieces (read
            # at once after "Base settings" showed, the clean-clone CI once found only the heading)
            page.get_by_text("logreg · fedavg · 10 clients · dirichlet · 3 rounds").first.wait_for(timeout=30_000)
            _choose(page, "Axis 1", "aggregation: Aggregation")
            _choose(page, "Values of aggregation", "Coordinate-wise median (robust)")
            page.keyboard.press("Escape")
            _choose(page, "Axis 2", "alpha: Dirichlet α (smaller = more skew)")
            alpha = page.get_by_role("textbox", name="Values of alpha (comma-separated)")
            alpha.fill("0.1, 10")
            alpha.press("Enter")
            seeds = page.get_by_role("spinbutton", name="Seeds per cell")
            seeds.fill("2")
            seeds.press("Enter")
            page.get_by_text("4 cells × 2 seeds = 8 runs").first.wait_for(timeout=20_000)
            # 3. Start; the live table fills, then the sweep completes with its charts
            page.get_by_role("button", name="Start sweep").click()
            page.get_by_text("runs finished").first.wait_for(timeout=30_000)
            # mid-run: the table says what it knows (rounds done of a running run), never "None"
            table = page.locator('[data-testid="stDataFrame"]').first
            assert "None" not in table.inner_text()
            page.get_by_text("Sweep completed: 8 of 8 runs completed").first.wait_for(timeout=120_000)
            _wait_for(page, lambda: page.locator(".js-plotly-plot").count() >= 3, 30, "the charts did not draw")
            page.wait_for_timeout(2000)  # let plotly finish drawing
            body = page.inner_text("body")
            assert "Traceback" not in body and "Mean final accuracy" in body
            assert page.get_by_role("button", name="Whole sweep (zip)").is_visible()
            SCREENSHOT.parent.mkdir(exist_ok=True)
            # Streamlit scrolls inside its main block, so a full-page shot is one screen: make the screen tall
            page.set_viewport_size({"width": 1440, "height": 1900})
            page.wait_for_timeout(2000)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
            # 4. A second sweep, stopped at once: it says so, and that no run completed has nothing to chart
            page.set_viewport_size({"width": 1440, "height": 1000})
            page.get_by_role("button", name="New sweep").click()
            page.get_by_role("button", name="Start sweep").click()
            page.get_by_role("button", name="Stop", exact=True).click()
            page.get_by_text("Sweep stopped").first.wait_for(timeout=60_000)
            _wait_for(page, lambda: any(words in page.inner_text("body") for words in
                                        ("nothing to chart", "Mean final accuracy")), 30, "the stopped sweep's view")
            assert "The charts appear as the first runs complete" not in page.inner_text("body")
        finally:
            browser.close()
    assert len(list(runs_dir.glob("*/summary.json"))) >= 8
