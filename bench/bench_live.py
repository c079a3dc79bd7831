"""How soon a finished round shows in the browser, at 10, 100 and 1,000 clients.

Run from the repository root (needs Debian's chromium and Playwright):

    python bench/bench_live.py                  # 10, 100 and 1,000 clients (~3 min)
    python bench/bench_live.py --clients 1000
    python bench/bench_live.py --clients 10 --root /path/to/old/checkout   # that checkout's app

Starts ``streamlit run app.py`` on a free loopback port, sets the run up in
the sidebar as a user would (dataset, rows, clients, model, rounds), presses
Start, and the page notes when it first shows each round (SEEN_SCRIPT). For each round, the latency is the
time from the engine's own record of the round's end (the ``round`` event's
``t`` in events.jsonl) to the first time the page says
"N/M rounds done" (or "Finished M rounds" for the last). The page polls the
run once a second, so about 0.5 s on average and 1 s at worst are expected,
plus the time the browser takes to draw; a round shown more than two
polls after its end counts as "over a poll behind". Also: the time from the click on
Start to the first time the page shows the run's progress, and from the click
to the server's first event (the run is built and listens), to the engine's
record of round 1's end, and to the first time the page shows round 1 done
(the issue's "Start to the first plotted round"). The cases: the default run (digits, MLP, 10 clients, Dirichlet,
20 rounds); 100 clients of it with logistic regression and 10 rounds; 1,000 clients on 100,000 synthetic rows,
logistic regression, 8 rounds. The clients column is read from the run's config.json (what the sidebar set).

The browser runs on the same machine as the server and the run here, so on
2 cores it takes CPU from both; a user's browser usually runs elsewhere.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from _common import MachineLoad, source_version, table  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
# The page's poll (ui/live.py REFRESH_SECONDS). A round that ends just after a poll read the run is shown by the
# next one, up to a poll later; a round not shown two polls after its end fell more than one poll behind.
POLL_S = 1.0
CASES = {
    10: dict(dataset=None, rows=None, clients=None, model=None, rounds=None),  # the default run: MLP, 20 rounds
    100: dict(dataset=None, rows=None, clients=100, model="Logistic regression", rounds=10),  # digits, Dirichlet
    1000: dict(dataset="Synthetic: any size (make_classification)", rows="100000", clients="End",
               model="Logistic regression", rounds=8),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_streamlit(runs_dir: Path, root: str = ROOT) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
        cwd=root, env={**os.environ, "FL_RUNS_DIR": str(runs_dir)}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2):
                return proc, url
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("streamlit did not come up")


def set_slider(sidebar, name: str, key: str | int) -> None:
    slider = sidebar.locator(f'input[type=range][aria-label="{name}"]')
    slider.focus()
    if isinstance(key, int):
        slider.press("Home")
        for _ in range(key - 1):
            slider.press("ArrowRight")
    else:
        slider.press(key)


def choose(page, sidebar, name: str, option: str) -> None:
    sidebar.get_by_role("combobox", name=name).click()
    page.get_by_role("option", name=option, exact=True).click()
    page.wait_for_timeout(800)


# Timestamps each round as the page first shows it, in the page itself: a MutationObserver reads the text
# (textContent: no layout) when the page changes, and the results are read once at the end. Reading the page
# from here every 50 ms (as this benchmark did before 2026-12-08) forced a layout 20 times a second and kept
# Playwright's driver busy, on the same 2 cores as the run and the browser: it added to what it measured.
SEEN_SCRIPT = """
window.__seen = {};
const __tick = () => {
  const now = Date.now() / 1000;
  const text = document.body ? document.body.textContent : '';
  const done = text.match(/(\\d+)\\/\\d+ rounds done/);
  if (done) { for (let n = 0; n <= +done[1]; n++) if (!(n in window.__seen)) window.__seen[n] = now; }
  if (/Finished \\d+ rounds/.test(text) && !('fin' in window.__seen)) window.__seen['fin'] = now;
};
document.addEventListener('DOMContentLoaded', () =>
  new MutationObserver(__tick).observe(document.body, {subtree: true, childList: true, characterData: true}));
"""


def one(page, url: str, runs_dir: Path, clients: int) -> dict:
    case = CASES[clients]
    page.add_init_script(SEEN_SCRIPT)
    page.goto(url)
    sidebar = page.locator('[data-testid="stSidebar"]')
    start = sidebar.get_by_role("button", name="Start", exact=True)
    start.wait_for(timeout=60_000)
    if case["dataset"]:
        choose(page, sidebar, "Dataset", case["dataset"])
    if case["rows"]:
        rows = sidebar.get_by_role("spinbutton", name="Rows")
        rows.fill(case["rows"])
        rows.press("Enter")
        page.wait_for_timeout(1500)
    if case["clients"]:
        set_slider(sidebar, "Clients", case["clients"])
        page.wait_for_timeout(1500)
    if case["model"]:
        choose(page, sidebar, "Model", case["model"])
    if case["rounds"]:
        set_slider(sidebar, "Rounds", case["rounds"])
    page.wait_for_timeout(1500)
    page.evaluate("window.__seen = {}")
    clicked = time.time()  # before the click: the click returns only after the page took it, and the run may be up
    start.click()
    total = case["rounds"] or 20
    page.wait_for_function("'fin' in window.__seen", timeout=600_000, polling=1000)
    seen = {int(n) if n != "fin" else n: t for n, t in page.evaluate("window.__seen").items()}
    seen.setdefault(total, seen["fin"])
    run_id = re.search(r"(\d{8}-\d{6}-[0-9a-f]+)", page.evaluate("document.body.innerText")).group(1)
    events = [json.loads(line) for line in (runs_dir / run_id / "events.jsonl").read_text().splitlines()]
    ended = {e["round"]: e["t"] for e in events if e["type"] == "round"}
    # A round first shown together with the next one counts with its own end: the page skipped it.
    latencies = [seen[n] - ended[n] for n in sorted(ended) if n in seen and n > 0]
    durations = [e["duration_s"] for e in events if e["type"] == "round"]
    ran = json.loads((runs_dir / run_id / "config.json").read_text())  # what the sidebar really set
    return {
        "clients": f"{ran['clients']:,}",
        "rounds": len(latencies),
        "median round s": f"{statistics.median(durations):.2f}",
        "median latency s": f"{statistics.median(latencies):.2f}",
        "worst latency s": f"{max(latencies):.2f}",
        "rounds shown within 1 s": f"{sum(lat <= POLL_S for lat in latencies)}/{len(latencies)}",
        "rounds over a poll behind": f"{sum(lat > 2 * POLL_S for lat in latencies)}",
        "Start to the live view s": f"{seen[0] - clicked:.2f}",
        "Start to the server listening s": f"{events[0]['t'] - clicked:.2f}",
        "Start to round 1's end s": f"{ended[1] - clicked:.2f}",
        "Start to round 1 shown s": f"{seen[1] - clicked:.2f}" if 1 in seen else "-",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, action="append", choices=sorted(CASES))
    parser.add_argument("--repeat", type=int, default=1, help="runs of each case on the same app (the first one "
                                                                 "in a fresh app pays its first imports)")
    parser.add_argument("--root", default=ROOT, help="the checkout whose app to run (its app.py imports its fl/)")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    load = MachineLoad()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        runs_dir = Path(tmp) / "runs"
        proc, url = start_streamlit(runs_dir, os.path.abspath(args.root))
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--headless", "--no-sandbox", "--disable-gpu",
                                           "--disable-background-networking"])
        try:
            for clients in args.clients or sorted(CASES):
                for n in range(args.repeat):
                    page = browser.new_page(viewport={"width": 1440, "height": 1300})
                    rows.append({"app": "fresh" if n == 0 else "warm", **one(page, url, runs_dir, clients)})
                    page.close()
                    print(rows[-1], flush=True)
        finally:
            browser.close()
            proc.terminate()
            proc.wait(timeout=30)
    print(f"\n{source_version() if args.root == ROOT else args.root}; {load.summary()}\n")
    print(table(list(rows[0]), [list(r.values()) for r in rows]))


if __name__ == "__main__":
    main()
