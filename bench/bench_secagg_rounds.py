"""Secure aggregation in real runs over loopback sockets: round time and bytes, with and without ``--secagg``.

Run from the repo root: ``python bench/bench_secagg_rounds.py`` (a few minutes; ``--clients 10`` for one
size). Each case is a simulation (a server and its clients, over TCP; worker processes from 100 clients on,
as ``--workers auto`` chooses) of logistic regression on the synthetic dataset (20 features, 2 classes,
100 rows per client), 3 rounds; the table gives the mean of rounds 2 and 3 (round 1 warms up) of the
server's round time (every exchange and the evaluation) and the bytes the server sent and received per
client and round. The pure computation of the protocol alone: ``bench/bench_secagg.py``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import MachineLoad, source_version, table  # noqa: E402
from fl.runs import simulation  # noqa: E402
from fl.runs.config import RunConfig  # noqa: E402


def one(clients: int, secagg: bool) -> dict:
    cfg = RunConfig(dataset="synthetic", n_samples=125 * clients, n_features=20, n_classes=2, clients=clients,
                    partition="iid", model="logreg", rounds=3, seed=0, secagg=secagg, min_clients=3,
                    client_eval=False, round_timeout=600).validate()
    started = time.perf_counter()
    result = simulation.run(cfg)
    wall = time.perf_counter() - started
    assert result.status == "completed", result.error
    later = result.rounds[1:]
    return {"round_ms": 1000 * statistics.mean(r["duration_s"] for r in later),
            "bytes": statistics.mean((r["bytes_sent"] + r["bytes_received"]) / clients for r in later),
            "accuracy": result.rounds[-1]["accuracy"], "wall": wall,
            "survivors": later[-1].get("secagg_survivors")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, action="append", help="10, 100 and 1000 unless given")
    args = parser.parse_args()
    load = MachineLoad()
    rows = []
    for n in args.clients or [10, 100, 1000]:
        plain, secure = one(n, False), one(n, True)
        rows.append([f"{n:,}", f"{plain['round_ms']:.0f}", f"{secure['round_ms']:.0f}",
                     f"{secure['round_ms'] / plain['round_ms']:.1f}x", f"{plain['bytes']:,.0f}",
                     f"{secure['bytes']:,.0f}", f"{plain['accuracy']:.4f} / {secure['accuracy']:.4f}",
                     f"{secure['survivors']}"])
        print(f"  {n} clients done ({plain['wall']:.0f} s, {secure['wall']:.0f} s)", file=sys.stderr, flush=True)
    print(table(["clients", "plain round ms", "secagg round ms", "ratio", "plain bytes / client / round",
                 "secagg bytes / client / round", "final accuracy plain / secagg", "sites in the sum"], rows,
                first_left=True))
    print(f"\n{source_version()}; {load.summary()}")


if __name__ == "__main__":
    main()
