"""Flower's simulation of the issue's job, for the "ours vs Flower" column of docs/performance.md.

Flower is not a dependency of this project: run this in a virtual environment of its own, then compare
with ``bench/bench_overhead.py`` taken in turn on the same machine:

    python3 -m venv /tmp/flwr-venv
    /tmp/flwr-venv/bin/pip install "flwr[simulation]==1.42.0" scikit-learn==1.9.1 numpy==2.4.6
    /tmp/flwr-venv/bin/python bench/bench_flower.py --clients 10 --rounds 20
    /tmp/flwr-venv/bin/python bench/bench_flower.py --clients 100 --rounds 10

The job is Flower's scikit-learn example (``LogisticRegression(max_iter=1, warm_start=True)``: one L-BFGS
iteration a round from the global parameters), FedAvg over every client, every client evaluating the
global model on its own held-out rows each round (``fraction_evaluate=1``), digits standardized and split
IID as ours (80/20 train/test, then each client's rows 80/20 train/held-out), Ray's simulation engine with
one CPU per client actor (Flower's default). The round's time is from one round's ``configure_fit`` to
the next's: fit, aggregation, evaluation and Flower's own scheduling. Prints the median over rounds
2..R-1 (round 1 includes Ray's actor start; the last has no next) and the whole run's wall time.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np


def partitions(n_clients: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Digits, standardized on the training rows, split IID into ``n_clients`` (train, held-out) pairs."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    X, y = load_digits(return_X_y=True)
    X_train, _, y_train, _ = train_test_split(X, y, test_size=0.2, random_state=seed, stratify=y)
    X_train = StandardScaler().fit(X_train).transform(X_train)
    order = np.random.default_rng(seed).permutation(len(y_train))
    parts = []
    for idx in np.array_split(order, n_clients):
        cut = int(round(len(idx) * 0.8))
        parts.append((X_train[idx[:cut]], y_train[idx[:cut]], X_train[idx[cut:]], y_train[idx[cut:]]))
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()

    import flwr
    from flwr.client import ClientApp, NumPyClient
    from flwr.common import Context, ndarrays_to_parameters
    from flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.simulation import run_simulation
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    warnings.filterwarnings("ignore")
    parts = partitions(args.clients)
    classes = np.arange(10)
    n_features = parts[0][0].shape[1]

    def model() -> LogisticRegression:
        m = LogisticRegression(max_iter=1, warm_start=True)
        m.classes_ = classes
        m.coef_ = np.zeros((10, n_features))
        m.intercept_ = np.zeros(10)
        return m

    class DigitsClient(NumPyClient):
        def __init__(self, i: int) -> None:
            self.X, self.y, self.X_test, self.y_test = parts[i]
            self.model = model()

        def get_parameters(self, config):  # noqa: ANN001
            return [self.model.coef_, self.model.intercept_]

        def set(self, parameters) -> None:  # noqa: ANN001
            self.model.coef_, self.model.intercept_ = parameters[0], parameters[1]

        def fit(self, parameters, config):  # noqa: ANN001
            self.set(parameters)
            with warnings.catch_warnings():  # one iteration never converges: no warning per fit through Ray's logs
                warnings.simplefilter("ignore")
                self.model.fit(self.X, self.y)
            return self.get_parameters(config), len(self.y), {}

        def evaluate(self, parameters, config):  # noqa: ANN001
            self.set(parameters)
            proba = self.model.predict_proba(self.X_test)
            loss = log_loss(self.y_test, proba, labels=classes)
            return float(loss), len(self.y_test), {"accuracy": float(self.model.score(self.X_test, self.y_test))}

    def client_fn(context: Context):  # noqa: ANN202
        return DigitsClient(int(context.node_config["partition-id"])).to_client()

    started_rounds: list[float] = []

    class TimedFedAvg(FedAvg):
        def configure_fit(self, server_round, parameters, client_manager):  # noqa: ANN001, ANN201
            started_rounds.append(time.perf_counter())
            return super().configure_fit(server_round, parameters, client_manager)

    def server_fn(context: Context) -> ServerAppComponents:
        init = model()
        strategy = TimedFedAvg(fraction_fit=1.0, fraction_evaluate=1.0, min_fit_clients=args.clients,
                               min_evaluate_clients=args.clients, min_available_clients=args.clients,
                               initial_parameters=ndarrays_to_parameters([init.coef_, init.intercept_]))
        return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=args.rounds))

    started = time.perf_counter()
    run_simulation(server_app=ServerApp(server_fn=server_fn), client_app=ClientApp(client_fn=client_fn),
                   num_supernodes=args.clients, backend_config={"client_resources": {"num_cpus": 1}})
    wall = time.perf_counter() - started
    durations = np.diff(started_rounds)[1:]  # rounds 2..R-1: each ends where the next one's fit starts
    print(f"flwr {flwr.__version__}: {args.clients} clients, {args.rounds} rounds: median round "
          f"{statistics.median(durations) * 1000:.1f} ms (rounds 2..{args.rounds - 1}), wall {wall:.1f} s")


if __name__ == "__main__":
    main()
