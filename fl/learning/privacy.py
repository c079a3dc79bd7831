"""Differential privacy for parameter aggregation: clipping, noise, accounting.

Fixed clipping in the style of Flower's
``DifferentialPrivacyServerSideFixedClipping`` / ``...ClientSideFixedClipping``:

1. each client update Δ_k = w_k − w_global is clipped to L2 norm C
   (all arrays together): Δ_k ← Δ_k · min(1, C / ||Δ_k||), by the server
   (``dp="server"``) or by the client itself before sending (``dp="client"``,
   the server then checks the norm);
2. the clipped updates are aggregated *unweighted* (a sample-weighted mean
   would let one client's share exceed C/m and break the sensitivity bound);
3. Gaussian noise N(0, (σ C / m)²) is added to every coordinate of the
   aggregate, m being the number of updates aggregated.

The privacy spent (ε at a chosen δ, client-level) is computed by
dp-accounting's RDP accountant, composing one sampled Gaussian mechanism per
round with noise multiplier σ. Sampling m of the n connected clients is
accounted as Poisson sampling with rate q = m / n, as DP-FedAvg (McMahan et
al., 2018) does; with every client in every round, no amplification.
"""

from __future__ import annotations

import logging
import contextlib
import math
import threading

import numpy as np

Arrays = list[np.ndarray]

DP_MODES = {"none": "Off", "server": "Server-side clipping", "client": "Client-side clipping"}
# ε is infinite without noise (noise multiplier 0: updates clipped, nothing hidden); said beside it everywhere
NO_PRIVACY = "no noise: no privacy"

logging.getLogger("absl").setLevel(logging.ERROR)  # the accountant logs every skipped RDP order
_ABSL_GUARD = threading.Lock()


@contextlib.contextmanager
def _no_absl_basic_config():
    """Keep absl from configuring the process's root logger.

    absl.logging calls ``logging.basicConfig()`` whenever the root logger has
    no handler, which pins a handler to whatever sys.stderr is at that moment
    (a closed capture file in a test run, later). A NullHandler on the root
    for the duration of the call keeps it from doing so.
    """
    with _ABSL_GUARD:
        guard = logging.NullHandler()
        logging.root.addHandler(guard)
        try:
            yield
        finally:
            logging.root.removeHandler(guard)


def update_norm(current: Arrays, params: Arrays) -> float:
    """L2 norm of the whole update w − w_global."""
    return float(math.sqrt(sum(float(np.sum((np.asarray(p) - np.asarray(c)) ** 2)) for c, p in zip(current, params))))


def clip_update(current: Arrays, params: Arrays, clip_norm: float) -> Arrays:
    """w_global + Δ · min(1, C / ||Δ||)."""
    norm = update_norm(current, params)
    factor = 1.0 if norm <= clip_norm or norm == 0 else clip_norm / norm
    return [np.asarray(c, dtype=np.float64) + factor * (np.asarray(p, dtype=np.float64) - c)
            for c, p in zip(current, params)]


def add_gaussian_noise(arrays: Arrays, std: float, rng: np.random.Generator) -> Arrays:
    if std <= 0:
        return [np.array(a, dtype=np.float64, copy=True) for a in arrays]
    return [np.asarray(a, dtype=np.float64) + rng.normal(0.0, std, size=np.shape(a)) for a in arrays]


class PrivacyAccountant:
    """ε after each round, for a fixed noise multiplier and δ."""

    def __init__(self, noise_multiplier: float, delta: float):
        import dp_accounting
        from dp_accounting.rdp import rdp_privacy_accountant

        self._dp = dp_accounting
        self.noise_multiplier = noise_multiplier
        self.delta = delta
        self._accountant = rdp_privacy_accountant.RdpAccountant()
        self.steps: list[tuple[int, int]] = []  # (n_available, n_sampled) of every round composed

    def replay(self, steps: list[tuple[int, int]]) -> float | None:
        """Compose the rounds of a checkpoint again (a resumed run); returns ε after them."""
        epsilon = None
        for n_available, n_sampled in steps:
            epsilon = self.step(int(n_available), int(n_sampled))
        return epsilon

    def step(self, n_available: int, n_sampled: int) -> float:
        """Compose one round and return the total ε so far (inf without noise)."""
        self.steps.append((n_available, n_sampled))
        if self.noise_multiplier <= 0:
            return math.inf
        event = self._dp.GaussianDpEvent(self.noise_multiplier)
        if 0 < n_sampled < n_available:
            event = self._dp.PoissonSampledDpEvent(n_sampled / n_available, event)
        with _no_absl_basic_config():
            self._accountant.compose(event)
            return float(self._accountant.get_epsilon(self.delta))
