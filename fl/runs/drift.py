"""Drift said in words: when a run's accuracy has fallen well below its best round, say so and what helps.

On non-IID clients, local training pulls each client towards its own data,
and the global model can climb and then fall: the chart shows it, but a
falling curve is easy to read as noise. The Run page and the CLI's last
lines say it in one sentence (``drift_sentence``), with the remedies this
product has that the run does not use yet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from fl.learning.models import MODELS
from fl.learning.strategies import STRATEGIES, Scaffold

FALL_POINTS = 0.02  # a fall of more than 2 points below the best round is drift, not noise


@dataclass(frozen=True)
class Drift:
    best_round: int
    best: float
    last_round: int
    last: float
    worst_client_best: float | None  # the worst client's accuracy in the best round ...
    worst_client_last: float | None  # ... and in the last one

    @property
    def fall(self) -> float:
        return self.best - self.last


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def find_drift(rounds: list[dict], threshold: float = FALL_POINTS) -> Drift | None:
    """The best round and the last, when the last round's accuracy is more than ``threshold`` below the best."""
    scored = [(r["round"], _number(r.get("accuracy")), r) for r in rounds if _number(r.get("accuracy")) is not None]
    if len(scored) < 2:
        return None
    best_round, best, best_record = max(scored, key=lambda x: (x[1], -x[0]))
    last_round, last, last_record = scored[-1]
    if best - last <= threshold:
        return None
    return Drift(best_round, best, last_round, last, _number(best_record.get("worst_client_accuracy")),
                 _number(last_record.get("worst_client_accuracy")))


def remedies(config: dict[str, Any]) -> list[str]:
    """What this run could try against drift, of the things it does not do already."""
    model = MODELS.get(config.get("model", ""))
    out = []
    if (config.get("local_epochs") or 1) > 1:
        out.append("fewer local epochs")
    if model is not None and model.iterative and config.get("aggregation") == "fedavg":
        if not config.get("proximal_mu"):
            out.append("FedProx")
        if Scaffold.refuses(model) is None and "scaffold" in STRATEGIES:
            out.append("SCAFFOLD")
    if model is not None and model.learning_rate(config.get("model_params")) is not None:
        out.append("a smaller learning rate")
    elif model is not None and model.name == "logreg":
        out.append("the gd local solver (gradient steps sized by the learning rate)")
    return out


def drift_sentence(rounds: list[dict], config: dict[str, Any]) -> str | None:
    """One sentence for a person, or None when the run has not fallen below its best."""
    drift = find_drift(rounds)
    if drift is None:
        return None
    text = (f"Accuracy fell from {100 * drift.best:.1f} % in round {drift.best_round} to {100 * drift.last:.1f} % "
            f"in round {drift.last_round}, {100 * drift.fall:.1f} points below its best")
    if drift.worst_client_best is not None and drift.worst_client_last is not None:
        text += (f"; the worst client went from {100 * drift.worst_client_best:.1f} % to "
                 f"{100 * drift.worst_client_last:.1f} %")
    model = MODELS.get(config.get("model", ""))
    if model is not None and model.statistics:  # grown on the server from summed sums: no local training drifts
        text += (". The trees fit the training rows more closely than the held-out rows bear out (overfitting): "
                 "try fewer rounds, a smaller learning rate, shallower trees or a larger L2 regularisation")
        return text + ". The best round's model is kept as the best model."
    text += ". Local training is pulling the clients apart (client drift)"
    helps = remedies(config)
    if helps:
        text += ": try " + ", ".join(helps[:-1]) + (" or " if len(helps) > 1 else "") + helps[-1]
    return text + ". The best round's model is kept as the best model."
