"""Does federated training reach the pooled optimum, and stay there? FedAvg, FedProx, SCAFFOLD, L-BFGS.

Run from the repo root: ``python bench/bench_convergence.py`` (a few minutes; ``--only islands`` or
``--only digits``). Two tables for docs/strategies.md:

1. Three penguin islands (one holds only Adelie; the palmerpenguins package's table as published,
   split by its ``island`` column), logistic regression, 20 rounds, 5 seeds: final and best accuracy,
   the fall from the best round, and the pooled logistic regression (the run's centralized baseline,
   the same test rows) for the gd local solver under FedAvg, FedProx and SCAFFOLD, and the former
   L-BFGS local epoch, with 1 and 5 local epochs.
2. Digits, Dirichlet alpha 0.1, 10 clients, 5 local epochs, 20 rounds, 5 seeds: FedAvg against SCAFFOLD
   for SGD and the MLP (mean and sample std of the final accuracy).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import MachineLoad, source_version, table  # noqa: E402
from fl.runs import simulation  # noqa: E402
from fl.runs.config import RunConfig  # noqa: E402

SEEDS = range(5)


def islands_csv(directory: Path) -> str:
    import palmerpenguins

    path = directory / "penguins.csv"
    palmerpenguins.load_penguins().to_csv(path, index=False)
    return str(path)


def run(fields: dict, baselines: bool = False) -> tuple[list[float], float | None]:
    handle = simulation.start(RunConfig(workers=0, **fields).validate(), with_baselines=baselines)
    handle.wait(900)
    assert handle.result is not None and handle.result.status == "completed", handle.result
    central = ((handle.state.baselines or {}).get("centralized") or {}).get("accuracy")
    return [r["accuracy"] for r in handle.result.rounds], central


def mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return f"{100 * values[0]:.1f}"
    return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f}"


def islands(csv: str) -> str:
    methods = {
        "FedAvg, gd": dict(aggregation="fedavg"),
        "FedProx μ 0.1, gd": dict(aggregation="fedavg", proximal_mu=0.1),
        "SCAFFOLD, gd": dict(aggregation="scaffold"),
        "FedAvg, L-BFGS (the former local epoch)": dict(aggregation="fedavg",
                                                        model_params={"local_solver": "lbfgs"}),
    }
    rows = []
    for epochs in (1, 5):
        for name, over in methods.items():
            finals, bests, falls, pooled = [], [], [], []
            for seed in SEEDS:
                accuracies, central = run(dict(dataset="csv", csv_path=csv, target="species", partition="column",
                                               split_column="island", model="logreg", rounds=20,
                                               local_epochs=epochs, seed=seed, **over), baselines=True)
                finals.append(accuracies[-1])
                bests.append(max(accuracies))
                falls.append(max(accuracies) - accuracies[-1])
                pooled.append(central)
            rows.append([f"{name}, {epochs} local epoch{'s' if epochs > 1 else ''}", mean_std(finals),
                         mean_std(bests), f"{100 * max(falls):.1f}", mean_std(pooled)])
            print(f"  islands: {rows[-1][0]} done", file=sys.stderr, flush=True)
    return table(["run (5 seeds)", "final accuracy %", "best round %", "largest fall from best, pts",
                  "pooled logistic regression %"], rows, first_left=True)


def digits() -> str:
    rows = []
    for model in ("sgd", "mlp"):
        finals = {}
        for aggregation in ("fedavg", "scaffold"):
            finals[aggregation] = [run(dict(dataset="digits", clients=10, partition="dirichlet", alpha=0.1,
                                            model=model, rounds=20, local_epochs=5, seed=seed,
                                            aggregation=aggregation))[0][-1] for seed in SEEDS]
            print(f"  digits: {model} {aggregation} done", file=sys.stderr, flush=True)
        wins = sum(s > f for s, f in zip(finals["scaffold"], finals["fedavg"]))
        rows.append([model, mean_std(finals["fedavg"]), mean_std(finals["scaffold"]), f"{wins} of {len(SEEDS)}"])
    return table(["model", "FedAvg final accuracy %", "SCAFFOLD final accuracy %", "seeds where SCAFFOLD is higher"],
                 rows, first_left=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("islands", "digits"))
    args = parser.parse_args()
    load = MachineLoad()
    with tempfile.TemporaryDirectory() as directory:
        if args.only in (None, "islands"):
            print(islands(islands_csv(Path(directory))) + "\n")
        if args.only in (None, "digits"):
            print(digits() + "\n")
    print(f"{source_version()}; {load.summary()}")


if __name__ == "__main__":
    main()
