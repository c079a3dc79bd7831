"""Server optimisers: treat the aggregate as a pseudo-gradient step.

Reddi et al., "Adaptive Federated Optimization" (ICLR 2021), Algorithm 2:
with the current global weights x and the aggregated client weights a,
the pseudo-gradient is Δ = a − x, and

- FedAvgM (Hsu et al., 2019):  v ← μ v + Δ;             x ← x + η v
- FedAdagrad:                   v ← v + Δ²;              x ← x + η Δ / (√v + τ)
- FedAdam:                      m ← β₁ m + (1−β₁) Δ;  v ← β₂ v + (1−β₂) Δ²
- FedYogi:                      m as Adam;  v ← v − (1−β₂) Δ² sign(v − Δ²)
  (Adam and Yogi) x ← x + η m / (√v + τ)

As in the paper there is no bias correction; moments start at zero.
Each class keeps its moments between rounds; ``step`` never mutates inputs.
"""

from __future__ import annotations

import numpy as np

Arrays = list[np.ndarray]
SERVER_OPTIMIZERS = {"none": "None (take the aggregate)", "fedavgm": "FedAvgM (server momentum)",
                     "fedadagrad": "FedAdagrad", "fedadam": "FedAdam", "fedyogi": "FedYogi"}


class ServerOptimizer:
    """x_{t+1} = step(x_t, aggregated). The base class just takes the aggregate (plain FedAvg)."""

    moments: tuple[str, ...] = ()  # the attributes carried between rounds (a checkpoint keeps them)

    def state(self) -> dict[str, Arrays | None]:
        return {name: getattr(self, name) for name in self.moments}

    def load_state(self, state: dict[str, Arrays | None]) -> None:
        for name in self.moments:
            value = state.get(name)
            setattr(self, name, None if value is None else [np.asarray(a, dtype=np.float64) for a in value])

    def step(self, current: Arrays, aggregated: Arrays) -> Arrays:
        return [np.array(a, dtype=np.float64, copy=True) for a in aggregated]


def _delta(current: Arrays, aggregated: Arrays) -> Arrays:
    if [c.shape for c in current] != [a.shape for a in aggregated]:
        raise ValueError("server optimiser: current and aggregated shapes differ")
    return [np.asarray(a, dtype=np.float64) - np.asarray(c, dtype=np.float64) for c, a in zip(current, aggregated)]


class FedAvgM(ServerOptimizer):
    moments = ("velocity",)

    def __init__(self, server_lr: float = 1.0, momentum: float = 0.0):
        self.server_lr = server_lr
        self.momentum = momentum
        self.velocity: Arrays | None = None

    def step(self, current: Arrays, aggregated: Arrays) -> Arrays:
        delta = _delta(current, aggregated)
        if self.velocity is None:
            self.velocity = [np.zeros_like(d) for d in delta]
        self.velocity = [self.momentum * v + d for v, d in zip(self.velocity, delta)]
        return [c + self.server_lr * v for c, v in zip(current, self.velocity)]


class FedAdagrad(ServerOptimizer):
    moments = ("v",)

    def __init__(self, eta: float = 0.1, tau: float = 1e-9):
        self.eta = eta
        self.tau = tau
        self.v: Arrays | None = None

    def step(self, current: Arrays, aggregated: Arrays) -> Arrays:
        delta = _delta(current, aggregated)
        if self.v is None:
            self.v = [np.zeros_like(d) for d in delta]
        self.v = [v + d * d for v, d in zip(self.v, delta)]
        return [c + self.eta * d / (np.sqrt(v) + self.tau) for c, d, v in zip(current, delta, self.v)]


class FedAdam(ServerOptimizer):
    moments = ("m", "v")

    def __init__(self, eta: float = 0.1, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-9):
        self.eta, self.beta1, self.beta2, self.tau = eta, beta1, beta2, tau
        self.m: Arrays | None = None
        self.v: Arrays | None = None

    def _second_moment(self, v: np.ndarray, d: np.ndarray) -> np.ndarray:
        return self.beta2 * v + (1 - self.beta2) * d * d

    def step(self, current: Arrays, aggregated: Arrays) -> Arrays:
        delta = _delta(current, aggregated)
        if self.m is None or self.v is None:
            self.m = [np.zeros_like(d) for d in delta]
            self.v = [np.zeros_like(d) for d in delta]
        self.m = [self.beta1 * m + (1 - self.beta1) * d for m, d in zip(self.m, delta)]
        self.v = [self._second_moment(v, d) for v, d in zip(self.v, delta)]
        return [c + self.eta * m / (np.sqrt(v) + self.tau) for c, m, v in zip(current, self.m, self.v)]


class FedYogi(FedAdam):
    def __init__(self, eta: float = 0.01, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3):
        super().__init__(eta, beta1, beta2, tau)

    def _second_moment(self, v: np.ndarray, d: np.ndarray) -> np.ndarray:
        d2 = d * d
        return v - (1 - self.beta2) * d2 * np.sign(v - d2)


def make_server_optimizer(name: str, *, server_lr: float | None = None, momentum: float = 0.0,
                          beta1: float = 0.9, beta2: float = 0.99, tau: float | None = None) -> ServerOptimizer:
    """Build by name; ``server_lr`` is η (each optimiser's paper default when None)."""
    if name in ("none", "", None):
        return ServerOptimizer()
    if name == "fedavgm":
        return FedAvgM(server_lr=1.0 if server_lr is None else server_lr, momentum=momentum)
    if name == "fedadagrad":
        return FedAdagrad(eta=0.1 if server_lr is None else server_lr, tau=1e-9 if tau is None else tau)
    if name == "fedadam":
        return FedAdam(eta=0.1 if server_lr is None else server_lr, beta1=beta1, beta2=beta2,
                       tau=1e-9 if tau is None else tau)
    if name == "fedyogi":
        return FedYogi(eta=0.01 if server_lr is None else server_lr, beta1=beta1, beta2=beta2,
                       tau=1e-3 if tau is None else tau)
    raise ValueError(f"unknown server optimiser {name!r}; choose one of: {', '.join(SERVER_OPTIMIZERS)}")
