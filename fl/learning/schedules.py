"""Learning-rate schedules set by the server: the clients' rate in round r, from the initial rate and r.

The rate of round ``r`` (1-based) out of ``R`` rounds, from the initial rate
``lr0``, is always computed from ``lr0`` and ``r``; it never multiplies the
previous round's rate (that compounding turns "halve every 5 rounds" into a
rate that collapses after a few rounds):

- ``constant``:            lr0
- ``step:FACTOR:EVERY``:   lr0 * FACTOR ** floor((r - 1) / EVERY)   (``step:0.5:5`` halves every 5 rounds)
- ``exponential:GAMMA``:   lr0 * GAMMA ** (r - 1)
- ``cosine``:              lr0 * (1 + cos(pi * (r - 1) / R)) / 2      (cosine annealing over the run)

The server sends the value in every ``fit`` as ``learning_rate`` (a fit
config key clients already read), so clients need nothing new.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SCHEDULES = {
    "constant": "constant: the same rate every round",
    "step": "step:FACTOR:EVERY: multiply by FACTOR every EVERY rounds (step:0.5:5 halves every 5)",
    "exponential": "exponential:GAMMA: multiply by GAMMA each round, from the first",
    "cosine": "cosine: from the initial rate down along half a cosine over the run",
}


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule: ``rate(lr0, r, R)``."""

    kind: str = "constant"
    factor: float = 1.0  # step's FACTOR or exponential's GAMMA
    every: int = 1  # step's EVERY

    def multiplier(self, round_no: int, total_rounds: int) -> float:
        """lr(r) / lr0 for round ``round_no`` (1-based) of ``total_rounds``."""
        if round_no < 1:
            raise ValueError(f"rounds count from 1, got {round_no}")
        if self.kind == "step":
            return self.factor ** ((round_no - 1) // self.every)
        if self.kind == "exponential":
            return self.factor ** (round_no - 1)
        if self.kind == "cosine":
            return (1.0 + math.cos(math.pi * (round_no - 1) / max(1, total_rounds))) / 2.0
        return 1.0

    def rate(self, lr0: float, round_no: int, total_rounds: int) -> float:
        return lr0 * self.multiplier(round_no, total_rounds)

    @property
    def is_constant(self) -> bool:
        return self.kind == "constant"


def parse_schedule(text: str) -> Schedule:
    """``constant``, ``step:FACTOR:EVERY``, ``exponential:GAMMA`` or ``cosine``; ValueError says what is wrong."""
    parts = [p.strip() for p in str(text).strip().lower().split(":")]
    kind, args = parts[0], parts[1:]
    usage = "; ".join(SCHEDULES.values())
    if kind not in SCHEDULES:
        raise ValueError(f"unknown learning-rate schedule {text!r}; use {usage}")
    if kind in ("constant", "cosine"):
        if args:
            raise ValueError(f"{kind} takes no arguments, got {text!r}")
        return Schedule(kind)
    try:
        numbers = [float(a) for a in args]
    except ValueError:
        raise ValueError(f"{text!r}: the arguments must be numbers ({SCHEDULES[kind]})") from None
    if kind == "step":
        if len(numbers) != 2 or not numbers[1].is_integer() or numbers[1] < 1:
            raise ValueError(f"{text!r}: write step:FACTOR:EVERY with EVERY a whole number of rounds >= 1")
        factor, every = numbers[0], int(numbers[1])
    else:
        if len(numbers) != 1:
            raise ValueError(f"{text!r}: write exponential:GAMMA, e.g. exponential:0.95")
        factor, every = numbers[0], 1
    if not (0.0 < factor <= 10.0) or not math.isfinite(factor):
        raise ValueError(f"{text!r}: the factor must be above 0 and at most 10 (below 1 decays the rate)")
    return Schedule(kind, factor, every)


def schedule_problem(text: str) -> str | None:
    """Why ``text`` is not a schedule, or None (for the config's validation)."""
    try:
        parse_schedule(text)
    except ValueError as exc:
        return str(exc)
    return None
