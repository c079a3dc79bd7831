"""Secure aggregation (SecAgg+, fl/federation/secagg.py) against a plain weighted sum: time and bytes per round.

Run from the repository root:

    python bench/bench_secagg.py                         # 10, 100, 1,000 clients x d = 650, 4,810 (~2-3 min)
    python bench/bench_secagg.py --clients 100 --dims 650   # one case

Every client and the server run in this one process, one after the other,
with no sockets (the module is socket-free), so the times are pure
computation. For each case (n clients, d parameters: 650 is logistic
regression on digits, 10 x 64 + 10; 4,810 an MLP 64-64-10):

* plain: a client flattens its arrays (what it would send: d float64 and its
  sample count); the server takes the sample-weighted mean of the n updates
  (fl.learning.aggregation.fedavg);
* secagg: the four client stages (keys, shares, masked_input, unmask) and the
  five server stages, with k and t at their defaults, no client dropping,
  and again with 10 % of the clients (seeded) dropping after sharing their
  keys (before the masked input: the server rebuilds their mask keys and
  recomputes the masks their surviving neighbours added);
* client ms: the four stages' CPU time summed over the clients, divided by
  n; server ms: the five stages' (CPU time of this process, all threads, so
  that other processes on a shared machine do not inflate it; everything
  here is one thread of Python and OpenSSL apart from numpy's sums);
* bytes up / down per client: what the stages' values weigh (keys, ciphertexts,
  the int64 masked vector, shares, plus the client ids they name in UTF-8);
  frame headers are left out (integration: see docs/protocol.md). Plain
  sends d float64 and one integer (the model sent down is the same both ways,
  so it is not counted).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import MachineLoad, source_version, table  # noqa: E402
from fl.federation.secagg import SecAggClient, SecAggServer, SecAggSettings, flatten  # noqa: E402
from fl.learning.aggregation import fedavg  # noqa: E402

_clock = time.process_time  # CPU seconds of this process: other processes' turns on a shared machine don't count

SHAPES = {650: [(10, 64), (10,)], 4810: [(64, 64), (64,), (64, 10), (10,)]}


def _ids_bytes(ids) -> int:
    return sum(len(i.encode()) for i in ids)


def plain(n: int, d: int, rng: np.random.Generator) -> dict:
    results = [([rng.normal(0, 0.3, s) for s in SHAPES[d]], int(rng.integers(50, 500))) for _ in range(n)]
    t0 = _clock()
    for arrays, _ in results:
        flatten(arrays)
    client = (_clock() - t0) / n
    t0 = _clock()
    fedavg(results)
    server = _clock() - t0
    return {"client_ms": 1e3 * client, "server_ms": 1e3 * server, "up": 8 * d + 8, "down": 0}


def secagg(n: int, d: int, rng: np.random.Generator, drop_fraction: float) -> dict:
    ids = [f"client_{i:04d}" for i in range(n)]
    updates = {u: flatten([rng.normal(0, 0.3, s) for s in SHAPES[d]]) for u in ids}
    weights = {u: int(rng.integers(50, 500)) for u in ids}
    dropped = set(rng.choice(ids, size=int(round(drop_fraction * n)), replace=False).tolist())
    client_s = server_s = 0.0
    up = down = 0
    stage_s: dict[str, float] = {}

    def on_server(name, call, *args):
        nonlocal server_s
        t0 = _clock()
        out = call(*args)
        took = _clock() - t0
        server_s += took
        stage_s[name] = took
        return out

    server = SecAggServer()
    plan = on_server("setup", server.setup, ids, SecAggSettings(dimension=d, round=1), 1)
    t0 = _clock()
    clients = {u: SecAggClient(u, plan[u]) for u in ids}
    keys = {u: c.keys() for u, c in clients.items()}
    client_s += _clock() - t0
    up += sum(64 + len(u.encode()) for u in keys)
    forwarded = on_server("forward_keys", server.forward_keys, keys)
    down += sum(64 * len(f) + _ids_bytes(f) for f in forwarded.values())
    t0 = _clock()
    sealed = {u: clients[u].shares(forwarded[u]) for u in forwarded}
    client_s += _clock() - t0
    up += sum(len(c) + len(v.encode()) for per in sealed.values() for v, c in per.items())
    inbox = on_server("route_shares", server.route_shares, sealed)
    down += sum(len(c) + len(v.encode()) for per in inbox.values() for v, c in per.items())
    t0 = _clock()
    masked = {u: clients[u].masked_input(updates[u], weights[u], inbox[u]) for u in inbox if u not in dropped}
    client_s += _clock() - t0
    up += sum(y.nbytes for y in masked.values())
    asks = on_server("unmask_request", server.unmask_request, masked)
    down += sum(_ids_bytes(a.dropped) + _ids_bytes(a.survived) for a in asks.values())
    t0 = _clock()
    answers = {u: clients[u].unmask(asks[u].dropped, asks[u].survived) for u in asks}
    client_s += _clock() - t0
    up += sum(len(s) + len(v.encode()) for per in answers.values() for v, s in per.items())
    weighted_sum, total_weight = on_server("aggregate", server.aggregate, answers)
    exact = sum(weights[u] * updates[u] for u in masked)
    assert total_weight == sum(weights[u] for u in masked)
    assert np.max(np.abs(weighted_sum - exact)) <= total_weight * server.settings.error_bound
    s = server.settings
    return {"client_ms": 1e3 * client_s / n, "server_ms": 1e3 * server_s, "up": up / n, "down": down / n,
            "k": s.num_neighbours, "t": s.threshold, "stages": {k: 1e3 * v for k, v in stage_s.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, action="append", help="10, 100 and 1000 unless given")
    parser.add_argument("--dims", type=int, action="append", choices=sorted(SHAPES), help="650 and 4810")
    parser.add_argument("--drop", type=float, default=0.1, help="the dropout case's fraction (0.1)")
    args = parser.parse_args()
    load = MachineLoad()
    rows, stage_rows = [], []
    for n in args.clients or [10, 100, 1000]:
        for d in args.dims or [650, 4810]:
            rng = np.random.default_rng(n * 10_000 + d)
            p = plain(n, d, rng)
            full = secagg(n, d, rng, 0.0)
            drop = secagg(n, d, rng, args.drop)
            print(f"  done: {n} clients, d = {d}", file=sys.stderr, flush=True)
            rows.append([f"{n:,}", f"{d:,}", f"{full['k']} / {full['t']}",
                         f"{p['client_ms']:.3f}", f"{full['client_ms']:.1f}", f"{drop['client_ms']:.1f}",
                         f"{p['server_ms']:.1f}", f"{full['server_ms']:.0f}", f"{drop['server_ms']:.0f}",
                         f"{p['up']:,}", f"{full['up']:,.0f}", f"{full['down']:,.0f}"])
            stage_rows.append([f"{n:,}", f"{d:,}"] + [f"{full['stages'][k]:.0f} / {drop['stages'][k]:.0f}"
                                                       for k in full["stages"]])
    print(f"Python {sys.version.split()[0]}, numpy {np.__version__}; {source_version()}")
    print()
    print(table(["clients", "d", "k / t", "plain client ms", "secagg client ms", f"… {args.drop:.0%} drop",
                 "plain server ms", "secagg server ms", f"… {args.drop:.0%} drop", "plain bytes up",
                 "secagg bytes up", "secagg bytes down"], rows, first_left=True))
    print()
    print("Server ms per stage (no drop / with drop):")
    print()
    print(table(["clients", "d", "setup", "forward_keys", "route_shares", "unmask_request", "aggregate"],
                stage_rows, first_left=True))
    print()
    print(load.summary())


if __name__ == "__main__":
    main()
