"""Simulated faults and attacks: how a simulated client misbehaves.

Malicious and unreliable clients are real clients: they train, then send
their (bad) update over the socket like everyone else. The server is never
told who they are; only the dashboard marks them, because the user chose them.

- dropout: with probability p per round the client answers ``fit`` without
  an update (it "skipped the round"); the server counts a failure;
- slow: the client waits ``delay`` seconds before answering, so past the
  round timeout it is dropped as a straggler;
- label_flip: trains on permuted labels (class i -> class K-1-i);
- gaussian_noise: adds N(0, scale²) to every parameter it sends;
- sign_flip: sends w_g − scale·(w − w_g), the reversed and boosted update;
- scale: sends w_g + scale·(w − w_g), a boosted update (model replacement).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

Arrays = list[np.ndarray]

ATTACKS = {"none": "None: an honest client", "label_flip": "Label flip: train on permuted labels",
           "gaussian_noise": "Gaussian noise on the update", "sign_flip": "Sign flip: send the reversed, boosted update",
           "scale": "Scale: send a boosted update"}


@dataclass
class Behaviour:
    dropout_prob: float = 0.0
    delay_s: float = 0.0
    attack: str = "none"
    attack_scale: float = 4.0
    seed: int = 0
    rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    @property
    def malicious(self) -> bool:
        return self.attack != "none"

    def drops_out(self) -> bool:
        return self.dropout_prob > 0 and bool(self.rng.random() < self.dropout_prob)

    def labels(self, y: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """The labels this client trains on."""
        if self.attack != "label_flip":
            return y
        index = np.searchsorted(classes, y)
        return classes[len(classes) - 1 - index]

    def update(self, global_arrays: Arrays | None, params: Arrays) -> Arrays:
        """The parameters this client sends, given what honest training produced."""
        if self.attack in ("none", "label_flip"):
            return params
        if self.attack == "gaussian_noise":
            return [p + self.rng.normal(0.0, self.attack_scale, size=p.shape) for p in params]
        if global_arrays is None:
            return params
        factor = -self.attack_scale if self.attack == "sign_flip" else self.attack_scale
        return [g + factor * (p - g) for g, p in zip(global_arrays, params)]


def assign_behaviours(client_ids: list[str], *, seed: int, dropout_prob: float = 0.0, slow_clients: int = 0,
                      slow_delay: float = 0.0, malicious_clients: int = 0, attack: str = "none",
                      attack_scale: float = 4.0) -> dict[str, Behaviour]:
    """Pick (seeded) which clients are slow and which are malicious."""
    rng = np.random.default_rng(seed + 7919)
    ids = sorted(client_ids)
    malicious = set(rng.choice(ids, size=min(malicious_clients, len(ids)), replace=False).tolist()) \
        if malicious_clients else set()
    slow = set(rng.choice(ids, size=min(slow_clients, len(ids)), replace=False).tolist()) if slow_clients else set()
    return {
        cid: Behaviour(dropout_prob=dropout_prob, delay_s=slow_delay if cid in slow else 0.0,
                       attack=attack if cid in malicious else "none", attack_scale=attack_scale,
                       seed=seed + zlib.crc32(cid.encode()))
        for cid in ids
    }
