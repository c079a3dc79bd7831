"""Wrappers around a parameter strategy: server optimisers and differential privacy.

Each is a ParameterStrategy holding an inner one (Flower's pattern for
``DifferentialPrivacyServerSideFixedClipping`` and its kin), so they stack:
DP clips and noises the inner rule's aggregate, a server optimiser then
takes it as a pseudo-gradient step.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fl.learning.aggregation import Arrays, Results
from fl.learning.models import NamedArrays
from fl.learning.privacy import PrivacyAccountant, add_gaussian_noise, clip_update, update_norm
from fl.learning.server_opt import ServerOptimizer
from fl.learning.strategies import ParameterStrategy


class Wrapper(ParameterStrategy):
    """Delegates everything to the inner strategy; subclasses change one step."""

    def __init__(self, inner: ParameterStrategy):
        self.inner = inner

    @property
    def label(self) -> str:  # type: ignore[override]
        return self.inner.label

    @property
    def is_mean(self) -> bool:  # type: ignore[override]
        return self.inner.is_mean

    def problem(self, n_clients: int) -> str | None:
        return self.inner.problem(n_clients)

    def fit_config(self) -> dict[str, Any]:
        return self.inner.fit_config()

    def check_update(self, arrays: Arrays, current: Arrays | None) -> str | None:
        return self.inner.check_update(arrays, current)

    def aggregate(self, results: Results, current: Arrays | None) -> Arrays:
        return self.inner.aggregate(results, current)

    def bind(self, model_shapes: list[tuple[str, tuple]]) -> None:
        self.inner.bind(model_shapes)

    def outgoing_arrays(self) -> NamedArrays:
        return self.inner.outgoing_arrays()

    def incoming_shapes(self) -> list[tuple[str, tuple]]:
        return self.inner.incoming_shapes()

    def accepted(self, client_ids: list[str]) -> None:
        self.inner.accepted(client_ids)

    @property
    def secagg_refusal(self) -> str | None:  # type: ignore[override]
        return self.inner.secagg_refusal

    @property
    def secagg_weight(self) -> str:  # type: ignore[override]
        return self.inner.secagg_weight

    def aggregate_sum(self, total: Arrays, weight: float, count: int, current: Arrays | None) -> Arrays:
        return self.inner.aggregate_sum(total, weight, count, current)

    def begin_round(self, round_no: int, pool_rows: int) -> None:
        self.inner.begin_round(round_no, pool_rows)

    def end_round(self, n_available: int, n_sampled: int) -> None:
        self.inner.end_round(n_available, n_sampled)

    def round_metrics(self) -> dict[str, Any]:
        return self.inner.round_metrics()

    def state(self) -> dict[str, Any]:
        return {"inner": self.inner.state()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.inner.load_state(state.get("inner") or {})


class WithServerOptimizer(Wrapper):
    """x_{t+1} = optimizer.step(x_t, aggregate): FedAvgM, FedAdagrad, FedAdam, FedYogi (fl/learning/server_opt)."""

    def __init__(self, inner: ParameterStrategy, optimizer: ServerOptimizer):
        super().__init__(inner)
        self.optimizer = optimizer

    def aggregate(self, results: Results, current: Arrays | None) -> Arrays:
        merged = self.inner.aggregate(results, current)
        return merged if current is None else self.optimizer.step(current, merged)

    def aggregate_sum(self, total: Arrays, weight: float, count: int, current: Arrays | None) -> Arrays:
        merged = self.inner.aggregate_sum(total, weight, count, current)
        return merged if current is None else self.optimizer.step(current, merged)

    def state(self) -> dict[str, Any]:
        return {**super().state(), "optimizer": self.optimizer.state()}

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self.optimizer.load_state(state.get("optimizer") or {})


class WithDifferentialPrivacy(Wrapper):
    """Fixed clipping, unweighted aggregation and Gaussian noise σC/m, with an RDP accountant.

    ``mode="server"``: the server clips each update to L2 norm C;
    ``mode="client"``: clients clip (``dp_clip_norm`` in the fit config) and
    the server refuses an update above C. The noise calibration assumes the
    inner rule is a mean of the clipped updates (sensitivity C/m), so only a
    mean can be wrapped: see fl/learning/privacy.py and docs/strategies.md.
    """

    def __init__(self, inner: ParameterStrategy, mode: str, clip_norm: float, noise_multiplier: float,
                 delta: float, seed: int = 0):
        if not inner.is_mean:
            raise ValueError(f"differential privacy assumes a mean of clipped updates; {inner.label} is not one")
        super().__init__(inner)
        self.mode = mode
        self.clip_norm = clip_norm
        self.noise_multiplier = noise_multiplier
        self.delta = delta
        self.rng = np.random.default_rng(seed + 104729)
        self.accountant = PrivacyAccountant(noise_multiplier, delta)
        self.epsilon: float | None = None

    def fit_config(self) -> dict[str, Any]:
        config = self.inner.fit_config()
        if self.mode == "client":
            config["dp_clip_norm"] = self.clip_norm
        return config

    def check_update(self, arrays: Arrays, current: Arrays | None) -> str | None:
        if self.mode == "client" and current is not None:
            norm = update_norm(current, arrays)
            if norm > self.clip_norm * (1 + 1e-6):
                return f"update norm {norm:.4g} exceeds the clip norm {self.clip_norm:g}"
        return self.inner.check_update(arrays, current)

    def aggregate(self, results: Results, current: Arrays | None) -> Arrays:
        if current is None:
            return self.inner.aggregate(results, current)
        # clipped (by us or by the clients) and unweighted: one client's share never exceeds C/m
        clipped = [(clip_update(current, arrays, self.clip_norm) if self.mode == "server" else arrays, 1)
                   for arrays, _ in results]
        merged = self.inner.aggregate(clipped, current)
        return add_gaussian_noise(merged, self.noise_multiplier * self.clip_norm / len(clipped), self.rng)

    @property
    def secagg_refusal(self) -> str | None:  # type: ignore[override]
        if self.mode == "server":
            return ("server-side differential privacy clips each update on the server, which secure aggregation "
                    "never shows it: use client-side clipping (dp 'client'), whose clipped updates then add up")
        return self.inner.secagg_refusal

    @property
    def secagg_weight(self) -> str:  # type: ignore[override]
        return "one"  # unweighted, as without secure aggregation: one client's share never exceeds C/m

    def aggregate_sum(self, total: Arrays, weight: float, count: int, current: Arrays | None) -> Arrays:
        merged = self.inner.aggregate_sum(total, count, count, current)
        if current is None:
            return merged
        return add_gaussian_noise(merged, self.noise_multiplier * self.clip_norm / count, self.rng)

    def end_round(self, n_available: int, n_sampled: int) -> None:
        self.inner.end_round(n_available, n_sampled)
        if n_sampled:
            self.epsilon = self.accountant.step(max(n_available, n_sampled), n_sampled)

    def round_metrics(self) -> dict[str, Any]:
        return {**self.inner.round_metrics(), "epsilon": self.epsilon}

    def state(self) -> dict[str, Any]:
        """The noise RNG and the accountant's rounds: a resumed run draws the same noise and spends the
        same privacy budget as one that never stopped."""
        return {**super().state(), "rng": self.rng.bit_generator.state, "epsilon": self.epsilon,
                "accounted": [list(step) for step in self.accountant.steps]}

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        if state.get("rng") is not None:
            self.rng.bit_generator.state = state["rng"]
        self.accountant.replay([tuple(step) for step in state.get("accounted") or []])
        self.epsilon = state.get("epsilon")

