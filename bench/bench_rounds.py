"""Round benchmarks: whole in-process simulations (server + N client threads on 127.0.0.1).

Run from the repository root:

    python bench/bench_rounds.py              # every case, 3 runs each, ~1 min on 2 cores
    python bench/bench_rounds.py --repeat 1   # quicker
    python bench/bench_rounds.py --only mlp   # cases whose name contains "mlp"

Prints markdown tables (paste them into docs/performance.md).

Per case: the median of ``result.rounds[*]["duration_s"]`` over every round of
every run, the median total run time (``start()`` to ``wait()`` returning:
data loading and splitting, binding, N connects and handshakes, the rounds,
bye), bytes per round (server side, both directions), and where a round's
time goes:

* local training: after the run, every client's local fit (LocalModel.fit,
  the call a client makes for a Fit, scoring included) is redone one client
  at a time from the final global parameters, and the times summed: the CPU
  work one round of training takes with nothing else running. The
  ``train_time_s`` the clients report during the run is shown too; it is a
  wall-clock time taken while every other client thread competes for the
  GIL and the cores, so its sum overstates the work. "of which train
  metrics" is the score_classifier call at the end of LocalModel.fit
  (accuracy, log loss, macro F1 on the local data), timed on its own;
* server evaluation: the final global model scored on the server's test split
  (timed again after the run, the same work the round loop does each round);
* the rest = median round - local training - server eval: sending and
  receiving frames, checking and aggregating results, thread hand-offs. For
  blob-based ensembles it includes the skops dump/load, timed separately in
  the second table, and fitting the meta-learner. It is negative when two
  cores ran client training in parallel.

Local training and server evaluation are the fastest of the repetitions
(other load on the machine only ever adds time); round and run times are
medians, as they come.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _path in (ROOT, HERE):  # the repo (for fl) and bench/ (for _common), whatever the working directory
    if _path not in sys.path:
        sys.path.insert(0, _path)

import numpy as np  # noqa: E402
import sklearn  # noqa: E402

from _common import MachineLoad, source_version, table  # noqa: E402
from fl.runs import simulation  # noqa: E402
from fl.wire import blobs  # noqa: E402
from fl.runs.config import RunConfig  # noqa: E402
from fl.data import apply_standardization  # noqa: E402
from fl.learning.metrics import score_classifier  # noqa: E402
from fl.learning.models import get_model  # noqa: E402
from fl.learning.training import LocalModel  # noqa: E402

RUN_TIMEOUT_S = 120.0


@dataclass
class Case:
    name: str
    config: RunConfig


# local_epochs is pinned (the RunConfig default has changed before) so the numbers stay comparable.
EPOCHS = 5
CASES = [
    Case("logreg digits 5 clients", RunConfig(dataset="digits", model="logreg", clients=5, rounds=10, partition="iid",
                                              local_epochs=EPOCHS)),
    Case("logreg digits 20 clients", RunConfig(dataset="digits", model="logreg", clients=20, rounds=10, partition="iid",
                                               local_epochs=EPOCHS)),
    Case("logreg digits 50 clients", RunConfig(dataset="digits", model="logreg", clients=50, rounds=10, partition="iid",
                                               local_epochs=EPOCHS)),
    Case("mlp digits 10 clients", RunConfig(dataset="digits", model="mlp", clients=10, rounds=10, partition="iid",
                                            local_epochs=EPOCHS)),
    Case("random_forest stacking breast_cancer 5 clients",
         RunConfig(dataset="breast_cancer", model="random_forest", aggregation="stacking", clients=5,
                   partition="iid", local_epochs=EPOCHS)),
    Case("logreg synthetic 100k×50 10 clients",
         RunConfig(dataset="synthetic", n_samples=100_000, n_features=50, model="logreg", clients=10, rounds=5,
                   partition="iid", local_epochs=EPOCHS)),
]


@dataclass
class Sample:
    """One run's numbers."""

    total_s: float
    rounds: list[dict]
    train_by_round: dict[int, list[float]] = field(default_factory=dict)
    eval_s: float = float("nan")
    solo_train_s: float = float("nan")
    solo_metrics_s: float = float("nan")
    accuracy: float | None = None
    blob_sizes: list[int] = field(default_factory=list)
    dump_s: list[float] = field(default_factory=list)
    load_s: list[float] = field(default_factory=list)


def run_once(config: RunConfig) -> Sample:
    lock = threading.Lock()
    train: dict[int, list[float]] = {}

    def on_event(event: dict) -> None:
        if event.get("type") == "client_result" and isinstance(event.get("train_time_s"), (int, float)):
            with lock:
                train.setdefault(event["round"], []).append(float(event["train_time_s"]))

    t0 = time.perf_counter()
    handle = simulation.start(config, on_event=on_event)
    result = handle.wait(timeout=RUN_TIMEOUT_S)
    total = time.perf_counter() - t0
    if result is None:
        handle.stop()
        handle.wait(timeout=10)
        raise RuntimeError(f"run did not finish within {RUN_TIMEOUT_S:g} s")
    if result.status != "completed":
        raise RuntimeError(f"run ended {result.status}: {result.error}")
    sample = Sample(total_s=total, rounds=result.rounds, train_by_round=train,
                    accuracy=result.final_metrics.get("accuracy"))
    # server evaluation of one round, redone on the final model (Pipeline: scaler + global model)
    split = handle.data.split
    classes = np.asarray(handle.data.dataset.classes)
    evals = []
    for _ in range(5):
        t = time.perf_counter()
        score_classifier(result.model, split.X_test, split.y_test, classes)
        evals.append(time.perf_counter() - t)
    sample.eval_s = min(evals)
    sample.solo_train_s, sample.solo_metrics_s = solo_training(config, handle, result)
    # ensembles: what one client model costs as a skops blob (dump on the client, load on the server)
    ensemble = result.model.steps[-1][1] if hasattr(result.model, "steps") else result.model
    for member in getattr(ensemble, "estimators", None) or []:
        t = time.perf_counter()
        blob = blobs.dump_model(member)
        t1 = time.perf_counter()
        blobs.load_model(blob)
        sample.load_s.append(time.perf_counter() - t1)
        sample.dump_s.append(t1 - t)
        sample.blob_sizes.append(len(blob))
    return sample


def solo_training(config: RunConfig, handle, result) -> tuple[float, float]:
    """One round of local training, client after client, with nothing else running.

    The same call the client makes (LocalModel.fit, which ends by scoring the
    model on the local data), started from the final global parameters.
    Returns (total, of which the train metrics: score_classifier timed again
    on its own).
    """
    data, task = handle.data, handle.plan.task
    classes = np.asarray(task.classes)
    whole = config.is_ensemble
    global_arrays = None
    if not whole:
        est = result.model.steps[-1][1] if hasattr(result.model, "steps") else result.model
        global_arrays = get_model(config.model).get_parameters(est)
    fit_config = {"local_epochs": config.local_epochs, "seed": config.seed + 1,
                  "return": "model" if whole else "parameters"}
    total = metrics = 0.0
    for i in range(config.clients):
        X_raw, y = data.client_data(i)
        X = apply_standardization(X_raw, task.standardize)
        y = y.astype(classes.dtype, copy=False) if classes.dtype.kind in "iu" else y
        model = LocalModel(task.model, task.model_params, classes, task.n_features, seed=config.seed + i)
        kwargs = dict(global_arrays=global_arrays, epochs=config.local_epochs, config=fit_config, whole_model=whole)
        if not (whole or get_model(config.model).one_shot):
            model.fit(X, y, **kwargs)  # round 1 builds the estimator; later rounds reuse it
        fit_s, score_s = [], []
        for _ in range(3):  # fastest of three: the cost without interference
            t = time.perf_counter()
            model.fit(X, y, **kwargs)
            t1 = time.perf_counter()
            score_classifier(model.estimator_, X, y, classes)
            fit_s.append(t1 - t)
            score_s.append(time.perf_counter() - t1)
        total += min(fit_s)
        metrics += min(score_s)
    return total, metrics


def engine_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("fl-") and t.is_alive()]


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fmt_s(seconds: float) -> str:
    if math.isnan(seconds):
        return "–"
    return f"{seconds:.3f}" if seconds < 10 else f"{seconds:.1f}"


def fmt_bytes(n: float) -> str:
    if n >= 1 << 20:
        return f"{n / (1 << 20):.2f} MiB"
    if n >= 1 << 10:
        return f"{n / (1 << 10):.1f} KiB"
    return f"{n:.0f} B"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (default 3)")
    parser.add_argument("--only", help="run only cases whose name contains this text")
    args = parser.parse_args()
    cases = [c for c in CASES if not args.only or args.only in c.name]
    started, load = time.perf_counter(), MachineLoad()
    print(f"Python {sys.version.split()[0]}, numpy {np.__version__}, scikit-learn {sklearn.__version__}, "
          f"{os.cpu_count()} CPUs, {args.repeat} run(s) per case, {source_version()}\n", flush=True)
    rows, blob_rows = [], []
    for case in cases:
        runs = [run_once(case.config) for _ in range(args.repeat)]
        durations = [r["duration_s"] for s in runs for r in s.rounds]
        sent = [r["bytes_sent"] for s in runs for r in s.rounds]
        received = [r["bytes_received"] for s in runs for r in s.rounds]
        in_run_sum = [sum(v) for s in runs for v in s.train_by_round.values()]
        # the least disturbed repetition: other load on the machine only ever adds time
        best = min(runs, key=lambda s: s.solo_train_s)
        solo, solo_metrics = best.solo_train_s, best.solo_metrics_s
        eval_s = min(s.eval_s for s in runs)
        round_s = med(durations)
        rest = round_s - solo - eval_s
        c = case.config
        rows.append([
            case.name, str(c.effective_rounds), str(c.local_epochs), fmt_s(round_s), fmt_s(max(durations)),
            fmt_s(med([s.total_s for s in runs])),
            fmt_s(solo), fmt_s(solo_metrics), fmt_s(eval_s), fmt_s(rest), fmt_s(med(in_run_sum)),
            fmt_bytes(med(sent)), fmt_bytes(med(received)), f"{med([s.accuracy for s in runs]):.3f}",
        ])
        if runs[0].blob_sizes:
            blob_rows.append([
                case.name, str(len(runs[0].blob_sizes)), fmt_bytes(med([b for s in runs for b in s.blob_sizes])),
                fmt_s(med([x for s in runs for x in s.dump_s])), fmt_s(med([x for s in runs for x in s.load_s])),
                fmt_s(sum(runs[0].load_s)),
            ])
        print(f"  done: {case.name} ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    print(table(first_left=True, rows=rows,
                headers=["case", "rounds", "local epochs", "median round s", "slowest round s", "median total run s",
                         "local training s (all clients, one at a time)", "of which train metrics s",
                         "server eval s", "rest s", "train_time_s reported in the run (sum)",
                         "bytes sent / round", "bytes received / round", "final accuracy"]))
    if blob_rows:
        print("\nWhole-model (skops) payloads of the ensemble cases, per client model:\n")
        print(table(first_left=True, rows=blob_rows,
                    headers=["case", "client models", "blob size", "dump s", "load s (allow-list check + build)",
                             "load s, all models (server, serial)"]))
    deadline = time.monotonic() + 5.0
    while (left := engine_threads()) and time.monotonic() < deadline:
        time.sleep(0.05)
    if left:
        print(f"\nWARNING: engine threads still running: {[t.name for t in left]}")
    print(f"\n{load.summary()}")
    print(f"total wall time: {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
