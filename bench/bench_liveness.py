"""Heartbeats: what they cost a round, and whether a fit can keep a client from answering them.

Run from the repository root:

    python bench/bench_liveness.py                   # both parts (~3 min on 2 cores)
    python bench/bench_liveness.py --part rounds     # only the round times
    python bench/bench_liveness.py --part lag --rows 20000   # larger fits (gradient boosting: ~3 min)

rounds: ``python -m fl simulate --dataset digits --clients 100 --rounds 10
--model logreg --workers 0`` with the server's heartbeat interval off (0),
at its default (5 s) and at 0.2 s (every client pings 5 times a second), each
in a fresh process, the variants interleaved; the number is the sum of the
run's per-round ``duration_s``.

lag: a client answers pings from its event loop while its compute thread
fits. For each model, one thread runs an event loop that wakes every 10 ms
while this thread fits the model (``LocalModel.fit``, 3 local epochs, on
synthetic data); the table gives how late the loop woke at worst: the
longest a fit kept the loop, and so a pong, from running.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._common import ROOT, MachineLoad, source_version, table  # noqa: E402

SIMULATE = ["simulate", "--dataset", "digits", "--clients", "100", "--rounds", "10", "--model", "logreg",
            "--workers", "0"]
MODELS = ["logreg", "sgd", "mlp", "gaussian_nb", "random_forest", "gradient_boosting", "knn", "decision_tree"]


def one_run(interval: float) -> float:
    """The simulate command with the server's heartbeat interval set; the sum of its rounds' seconds."""
    import fl.runs.simulation as simulation
    from fl.federation.server import ServerSettings
    from fl.cli.main import main

    class WithInterval(ServerSettings):
        def __post_init__(self) -> None:
            self.heartbeat_interval_s = interval

    simulation.ServerSettings = WithInterval
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        main(SIMULATE)
    return sum(float(line.split()[-5]) for line in out.getvalue().splitlines() if line.startswith("round "))


def rounds_part(repeats: int) -> str:
    intervals = [0.0, 5.0, 0.2]
    sums: dict[float, list[float]] = {i: [] for i in intervals}
    for _ in range(repeats):
        for interval in intervals:
            done = subprocess.run([sys.executable, __file__, "--one", str(interval)], cwd=ROOT, capture_output=True,
                                  text=True, timeout=600, check=True)
            sums[interval].append(float(done.stdout.strip().splitlines()[-1]))
    rows = [[("off" if i == 0 else f"{i:g} s"), f"{statistics.median(v):.2f}", f"{statistics.mean(v):.2f}",
             f"{statistics.stdev(v):.2f}" if len(v) > 1 else "-", len(v)] for i, v in sums.items()]
    return ("`python -m fl " + " ".join(SIMULATE) + "`, sum of the per-round seconds\n\n"
            + table(["heartbeat interval", "median s", "mean s", "std s", "runs"], rows, first_left=True))


def lag_part(rows: int) -> str:
    import numpy as np
    from sklearn.datasets import make_classification

    from fl.learning.training import LocalModel

    X, y = make_classification(n_samples=rows, n_features=64, n_informative=20, n_classes=5, random_state=0)
    lags: list[float] = []
    stop = threading.Event()

    def loop() -> None:
        async def tick() -> None:
            while not stop.is_set():
                t = time.perf_counter()
                await asyncio.sleep(0.01)
                lags.append(time.perf_counter() - t - 0.01)
        asyncio.run(tick())

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    out = []
    for name in MODELS:
        time.sleep(0.05)
        lags.clear()
        started = time.perf_counter()
        LocalModel(name, {}, np.unique(y), X.shape[1], seed=0).fit(X, y, epochs=3)
        took = time.perf_counter() - started
        out.append([name, f"{took:.2f}", f"{1000 * max(lags):.1f}", f"{1000 * float(np.percentile(lags, 99)):.1f}"])
    stop.set()
    thread.join()
    return (f"synthetic, {rows:,} rows x 64 features, 5 classes, 3 local epochs\n\n"
            + table(["model", "fit s", "worst loop delay ms", "p99 loop delay ms"], out, first_left=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", action="append", choices=["rounds", "lag"])
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--one", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(f"{one_run(args.one):.4f}")
        return
    parts = args.part or ["rounds", "lag"]
    load = MachineLoad()
    if "rounds" in parts:
        print(rounds_part(args.repeats), end="\n\n")
    if "lag" in parts:
        print(lag_part(args.rows), end="\n\n")
    print(f"{source_version()}; {load.summary()}")


if __name__ == "__main__":
    main()
