"""Round overhead as users see it: ``python -m fl simulate ... --out DIR`` against its own local training.

Run from the repository root:

    python bench/bench_overhead.py                        # 10 and 100 clients (digits), 3 CLI runs each
    python bench/bench_overhead.py --clients 1000 --runs 1
    python bench/bench_overhead.py --clients 10 --vs /path/to/old/checkout   # old and new in turn

For each size (the job of Flower's scikit-learn example: logistic regression,
one local step, IID; digits for 10 and 100 clients, synthetic 100k / 1M rows
for 1,000 / 10,000 clients; ``--solver lbfgs`` by default, the issue's job):

* sequential local training: every client's ``LocalModel.fit`` on its own
  training rows, one client after the other in this process, every round
  from the global parameters the run would have (FedAvg of the previous
  round), training metrics included, as the clients do it; the median over
  rounds of the sum over clients (bench/bench_scale.py's replay), replayed
  before every turn of CLI runs and the median of those taken (the same
  replay ran 31 to 44 ms on one quiet machine within an hour);
* ours per round: the median time from one round's record to the next
  (the ``t`` of consecutive ``round`` events in events.jsonl) of a whole
  ``python -m fl simulate ... --out DIR`` process (baselines on, as the CLI
  runs by default), and the process's wall time. Not metrics.csv's
  ``duration_s``: before rounds overlapped (commit 1b5f3e9) it ended before
  the round's checkpoint and record were written and so left them out;
  the time between records counts everything, the same way for any commit;
* peak memory: the largest sum, sampled every 0.2 s, of the proportional
  set size (PSS) of the CLI process and all its descendants: a page that
  forked workers share with their parent counts once.

With ``--vs DIR`` the same command also runs from that checkout, the two in
turn (new, old, new, old ...), so both see the same machine load; the ratio
of the two median rounds of each turn, and the median of those, say the
change with the machine's drift (a third within minutes here) cancelled.
``--extra '--rounds 300'`` runs longer jobs (a later flag wins).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _path in (ROOT, HERE):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from _common import MachineLoad, source_version, table  # noqa: E402

CASES = {
    10: ["--dataset", "digits", "--clients", "10", "--rounds", "20"],
    100: ["--dataset", "digits", "--clients", "100", "--rounds", "10"],
    1000: ["--dataset", "synthetic", "--n-samples", "100000", "--clients", "1000", "--rounds", "3"],
    10000: ["--dataset", "synthetic", "--n-samples", "1000000", "--clients", "10000", "--rounds", "3"],
}
JOB = ["--model", "logreg", "--local-epochs", "1", "--partition", "iid", "--seed", "0", "--round-timeout", "600"]


def job_args(clients: int, solver: str, extra: list[str]) -> list[str]:
    """The CLI flags of one size's job."""
    return CASES[clients] + JOB + ["--model-params", json.dumps({"local_solver": solver})] + extra


def tree_memory_kib(root: int) -> int:
    """Memory of ``root`` and all its descendants (Linux /proc): the sum of their proportional set sizes (PSS),
    so that pages a forked worker shares with its parent count once, not once per process as resident sizes
    (RSS) would; RSS where the kernel gives no PSS."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        try:
            parents[int(entry.name)] = int(fields.get("PPid", "0").strip())
            rss[int(entry.name)] = int(fields.get("VmRSS", "0 kB").split()[0])
        except ValueError:
            continue
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        kids = [p for p, parent in parents.items() if parent == pid and p not in tree]
        tree.update(kids)
        frontier += kids
    return sum(pss_kib(p) or rss.get(p, 0) for p in tree)


def pss_kib(pid: int) -> int:
    """A process's proportional set size in KiB (0 when /proc does not say)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def run_cli(repo: str, args: list[str]) -> dict:
    """One ``python -m fl simulate ... --out DIR`` from ``repo``: median round, wall, peak memory, failures."""
    with tempfile.TemporaryDirectory(prefix="fl-overhead-") as out:
        peak = [0]
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "fl", "simulate", *args, "--out", out], cwd=repo,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_memory_kib(proc.pid))
            time.sleep(0.2)
        wall = time.perf_counter() - started
        with open(Path(out) / "metrics.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        summary = json.loads((Path(out) / "summary.json").read_text())
        rounds_t = [json.loads(line)["t"] for line in (Path(out) / "events.jsonl").read_text().splitlines()
                    if '"type": "round"' in line]
    durations = [b - a for a, b in zip(rounds_t, rounds_t[1:])] or [float(r["duration_s"]) for r in rows]
    return {"median_round": statistics.median(durations), "wall": wall, "peak_mib": peak[0] / 1024,
            "failures": sum(int(r["n_failures"] or 0) for r in rows), "status": summary.get("status"),
            "accuracy": summary.get("final_metrics", {}).get("accuracy"), "rc": proc.returncode}


def sequential_training(args: list[str]) -> float:
    """The job's local training replayed one client after the other in this process (bench_scale's replay)."""
    import bench_scale
    from fl.runs.build import build_run
    from fl.cli.main import build_parser
    from fl.cli.flags import config_from_args

    parsed = build_parser().parse_args(["simulate", *args])
    config = config_from_args(parsed)
    plan = build_run(config)
    handle = type("Handle", (), {"data": plan.data, "plan": plan})()
    return bench_scale.sequential_training(plan.config, handle)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, action="append", choices=sorted(CASES))
    parser.add_argument("--runs", type=int, default=3, help="CLI runs per size (and per checkout with --vs)")
    parser.add_argument("--solver", default="lbfgs", choices=("lbfgs", "gd"))
    parser.add_argument("--vs", metavar="DIR", help="another checkout: its CLI in turn with this one's")
    parser.add_argument("--extra", default="", help="more CLI flags, one string (e.g. '--no-client-eval')")
    args = parser.parse_args()
    load = MachineLoad()
    rows = []
    turns: list[str] = []
    for n in args.clients or [10, 100]:
        cli_args = job_args(n, args.solver, args.extra.split())
        repos = [("this", ROOT)] + ([("vs", os.path.abspath(args.vs))] if args.vs else [])
        runs: dict[str, list[dict]] = {name: [] for name, _ in repos}
        replays = []
        for _ in range(args.runs):  # the replay beside every turn: the machine's speed drifts over minutes
            replays.append(sequential_training(cli_args))
            print(f"  {n} clients, sequential local training: {replays[-1] * 1000:.1f} ms", file=sys.stderr)
            for name, repo in repos:
                runs[name].append(run_cli(repo, cli_args))
                print(f"  {n} clients, {name}: {runs[name][-1]}", file=sys.stderr)
        local = statistics.median(replays)
        if args.vs:  # turn by turn: both ran within seconds of each other, so the machine's drift cancels
            ratios = [a["median_round"] / b["median_round"] for a, b in zip(runs["this"], runs["vs"])]
            turns.append(f"{n:,} clients: this / vs by turn {statistics.median(ratios):.2f} (median; "
                         f"{min(ratios):.2f} to {max(ratios):.2f} over {len(ratios)} turns)")
        for name, _ in repos:
            got = runs[name]
            median_round = statistics.median(r["median_round"] for r in got)
            rows.append([f"{n:,}", name, f"{median_round * 1000:,.1f} ms", f"{local * 1000:,.1f} ms",
                         f"{median_round / local:.2f}x", f"{statistics.median(r['wall'] for r in got):.1f} s",
                         f"{max(r['peak_mib'] for r in got):,.0f}", sum(r["failures"] for r in got),
                         f"{got[-1]['accuracy']:.4f}" if got[-1]["accuracy"] is not None else "-"])
    print(source_version() + (f"; vs {args.vs}" if args.vs else ""))
    print(f"job: logreg, local solver {args.solver}, 1 local step, IID, client evaluation "
          f"{'off' if '--no-client-eval' in args.extra else 'on'}, baselines "
          f"{'off' if '--no-baselines' in args.extra else 'on'}; {args.runs} CLI runs each")
    print()
    print(table(["clients", "checkout", "ours per round (median)", "sequential local training", "ours / training",
                 "process wall (median)", "peak memory MiB", "failures", "final accuracy"], rows))
    print()
    for line in turns:
        print(line)
    print(load.summary())


if __name__ == "__main__":
    main()
