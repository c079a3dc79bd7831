"""Scale benchmark: does a round cost what its training costs, at 10 to 10,000 clients?

Run from the repository root:

    python bench/bench_scale.py                       # 10, 100 and 1,000 clients (~2 min on 2 cores)
    python bench/bench_scale.py --clients 10000       # one size (10,000: synthetic 1M rows, ~10 min)
    python bench/bench_scale.py --workers 0 --workers 2 --clients 100   # compare where clients run
    python bench/bench_scale.py --clients 1000 --workers 2 --cluster local --cluster dask://127.0.0.1:8786

The job is Flower's scikit-learn example: logistic regression, one L-BFGS
iteration per round (``local_epochs=1``), an IID split; digits for 10 and 100
clients, synthetic data (100k rows for 1,000 clients, 1M rows for 10,000)
beyond. Per run:

* median round: the median of the rounds' ``duration_s`` (fit, aggregation,
  server evaluation, each client scoring the global model on its held-out
  rows, when ``client_eval`` is on);
* sequential local training: the run's local training replayed with no
  network, one client after the other in this process: every round, every
  client's local fit (the call a client makes for a ``fit``, training
  metrics included) from the same global parameters as in the run; the
  median over rounds of the sum over clients: what a round of training
  costs with nothing around it;
* ratio = median round / sequential local training;
* threads: the most threads this (server) process had during the rounds;
  processes: worker processes that hosted clients;
* peak memory: the largest sum, sampled every 0.2 s, of the resident memory
  of this process and its worker processes;
* failures: ``n_failures`` summed over the rounds.

``--cluster`` (repeatable) places the hosts on a Dask or Ray cluster
(docs/engine.md, "Running on a cluster"); the cluster's workers are not
this process's children, so peak memory and processes then count this
process only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _path in (ROOT, HERE):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import numpy as np  # noqa: E402

from _common import MachineLoad, source_version, table  # noqa: E402
from fl.data import apply_standardization, local_holdout  # noqa: E402
from fl.federation.task import client_seed  # noqa: E402
from fl.learning.models import get_model  # noqa: E402
from fl.learning.training import LocalModel  # noqa: E402
from fl.runs import simulation  # noqa: E402
from fl.runs.build import client_id_for  # noqa: E402
from fl.runs.config import RunConfig  # noqa: E402
from fl.runs.workers import worker_count  # noqa: E402

CASES = {
    10: dict(dataset="digits", clients=10, rounds=10),
    100: dict(dataset="digits", clients=100, rounds=10),
    1000: dict(dataset="synthetic", n_samples=100_000, clients=1000, rounds=3),
    10000: dict(dataset="synthetic", n_samples=1_000_000, clients=10_000, rounds=3),
}
JOB = dict(model="logreg", local_epochs=1, partition="iid", seed=0, round_timeout=600.0)


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def children() -> list[int]:
    me, out = str(os.getpid()), []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
                cmd = (entry / "cmdline").read_text()
            except OSError:
                continue
            fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
            if fields.get("PPid", "").strip() == me and "resource_tracker" not in cmd:
                out.append(int(entry.name))
    return out


class Sampler:
    """Peak threads of this process and peak resident memory of it and its children, while running."""

    def __init__(self) -> None:
        self.peak_threads = 0
        self.peak_kib = 0
        self.processes: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            kids = children()
            self.processes.update(kids)
            self.peak_kib = max(self.peak_kib, rss_kib(os.getpid()) + sum(rss_kib(p) for p in kids))
            self.peak_threads = max(self.peak_threads, threading.active_count() - 1)  # not the sampler


def sequential_training(config: RunConfig, handle) -> float:
    """The run's local training replayed one client after the other, with no network: the median round.

    Every round starts every client from the same global parameters the run
    had (FedAvg of the previous round's results, as the run computes it),
    so the L-BFGS line searches do the same work as in the run.
    """
    data, task = handle.data, handle.plan.task
    classes = np.asarray(task.classes)
    adapter = get_model(config.model)
    strategy = handle.plan.strategy()
    current = adapter.initial_parameters(task.model_params, classes, task.n_features, config.seed)
    names = [n for n, _ in current]
    clients = []
    for i in range(config.clients):
        X_raw, y = data.client_data(i)
        cid = client_id_for(i)
        train, _ = local_holdout(len(y), config.local_test_size, client_seed(config.seed, cid))
        model = LocalModel(task.model, task.model_params, classes, task.n_features, seed=client_seed(config.seed, cid))
        clients.append((apply_standardization(X_raw[train], task.standardize), y[train], model))
    per_round = []
    for round_no in range(1, config.rounds + 1):
        fit_config = {**config.fit_config(), "seed": config.seed + round_no, "return": "parameters"}
        spent, results = 0.0, []
        for X, y, model in clients:
            t = time.perf_counter()
            model.fit(X, y, global_arrays=current, epochs=config.local_epochs, config=fit_config)
            spent += time.perf_counter() - t
            results.append(([a for _, a in model.get_parameters()], len(y)))
        per_round.append(spent)
        current = list(zip(names, strategy.aggregate(results, [a for _, a in current])))
    return statistics.median(per_round)


def one(clients: int, workers: int, client_eval: bool, cluster: str = "local", sequential: bool = True) -> dict:
    config = RunConfig(**{**CASES[clients], **JOB, "workers": workers, "client_eval": client_eval,
                          "cluster": cluster})
    with Sampler() as sampler:
        started = time.perf_counter()
        handle = simulation.start(config)
        result = handle.wait()
        total = time.perf_counter() - started
    rounds = [r["duration_s"] for r in result.rounds]
    if not rounds:
        raise SystemExit(f"{clients} clients on {cluster}: {result.status}: {result.error}")
    median_round = statistics.median(rounds)
    local = sequential_training(config, handle) if sequential else float("nan")
    where = worker_count(config) or "0 (in-process host)"
    return {
        "clients": f"{clients:,}",
        "data": f"{config.dataset} ({len(handle.data.split.y_train) + len(handle.data.split.y_test):,} rows)",
        "worker processes": where if cluster == "local" else f"{config.workers} hosts on {cluster}",
        "client eval": "on" if client_eval else "off",
        "rounds": len(rounds),
        "median round s": f"{median_round:.3f}",
        "sequential local training s": f"{local:.3f}",
        "ratio": f"{median_round / local:.2f}x",
        "threads (server process)": sampler.peak_threads,
        "processes": len(sampler.processes),
        "peak memory MiB": f"{sampler.peak_kib / 1024:,.0f}",
        "failures": sum(r["n_failures"] for r in result.rounds),
        "final accuracy": f"{result.final_metrics.get('accuracy', float('nan')):.3f}",
        "run s": f"{total:.1f}",
        "status": result.status,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, action="append", choices=sorted(CASES))
    parser.add_argument("--workers", type=int, action="append", help="0 = in-process host (default: -1, auto)")
    parser.add_argument("--client-eval", choices=("on", "off", "both"), default="on")
    parser.add_argument("--cluster", action="append", help="local (default), dask://HOST:PORT, ray://HOST:PORT, ray")
    parser.add_argument("--no-sequential", action="store_true", help="skip replaying the local training")
    args = parser.parse_args()
    evals = {"on": [True], "off": [False], "both": [True, False]}[args.client_eval]
    rows = []
    load = MachineLoad()
    for n in args.clients or [10, 100, 1000]:
        for workers in args.workers or [None]:
            for client_eval, cluster in [(e, c) for e in evals for c in args.cluster or ["local"]]:
                rows.append(one(n, -1 if workers is None else workers, client_eval, cluster, not args.no_sequential))
                print(f"  done: {n} clients, workers {rows[-1]['worker processes']}, eval "
                      f"{'on' if client_eval else 'off'} ({rows[-1]['run s']} s)", file=sys.stderr)
    print(source_version())
    print()
    print(table(list(rows[0]), [list(r.values()) for r in rows], first_left=False))
    print()
    print(load.summary())


if __name__ == "__main__":
    main()
