"""A sweep: one base RunConfig, a grid of knob values and a number of seeds; every combination is a run.

The grid's keys are RunConfig knobs and its values are read and checked by
each knob's own parser and validation (fl/runs/knobs.py), so a sweep accepts
exactly what ``simulate`` accepts. Everything that can be refused is refused
here, before any process starts, with one sentence naming the key and the
value. Running a sweep is fl/runs/sweep_run.py's job; its files are
fl/runs/sweep_store.py's.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from fl.errors import FLError
from fl.data import check_config_size
from fl.runs.cluster_spec import LOCAL
from fl.runs.config import RunConfig
from fl.runs.knobs import Knob, check_value, knobs_of

KNOBS = knobs_of(RunConfig)
DEFAULT_SEEDS = 3
MAX_SEEDS = 1000
MAX_RUNS = 10_000
# Knobs a sweep sets itself, so a grid must not.
SET_BY_THE_SWEEP = {
    "seed": "the seeds are the sweep's own (the base seed, +1, +2, ...): set their number instead",
    "workers": "each run of a sweep keeps its clients in its own worker process (with --cluster, set its hosts "
               "with --workers)",
    "cluster": "every run of a sweep places its hosts on the one cluster named by --cluster",
}
TRUE_WORDS, FALSE_WORDS = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


class GridError(FLError, ValueError):
    """A grid, a grid value or a seed count that cannot be swept; str(e) says which and why."""


def knob_name(key: str) -> str:
    """A grid key as a RunConfig field: ``alpha``, ``local-epochs``, ``--local-epochs`` or a knob's flag (``csv``)."""
    text = str(key).strip()
    by_flag = {k.flag_name(name): name for name, k in KNOBS.items()}
    name = by_flag.get(text) or by_flag.get("--" + text) or text.lstrip("-").replace("-", "_")
    if name in SET_BY_THE_SWEEP:
        raise GridError(f"grid key {text!r} cannot be swept: {SET_BY_THE_SWEEP[name]}")
    if name not in KNOBS:
        close = difflib.get_close_matches(name, list(KNOBS), n=1)
        hint = f"did you mean {close[0]}?" if close else "the run settings are: " + ", ".join(KNOBS)
        raise GridError(f"grid key {text!r} is not a run setting; {hint}")
    return name


def parse_value(name: str, raw: Any) -> Any:
    """One grid value, read by the knob's own parser when it is text, checked by the knob's validation."""
    k = KNOBS[name]
    try:
        value = _read_text(k, raw.strip()) if isinstance(raw, str) else _coerce(k, raw)
    except (ValueError, TypeError):
        value = raw  # check_value says what the knob wants
    problem = check_value(name, k, value)
    if problem:
        raise GridError(f"grid value {name}={_shown(raw)} is refused: {problem}")
    return value


def _read_text(k: Knob, text: str) -> Any:
    if k.optional and text.lower() in ("none", "null", ""):
        return None
    if k.kind is bool:
        if text.lower() in TRUE_WORDS + FALSE_WORDS:
            return text.lower() in TRUE_WORDS
        raise ValueError(text)
    if k.kind is dict:
        return json.loads(text)
    return (k.parse or k.kind)(text)


def _coerce(k: Knob, value: Any) -> Any:
    """A value from a JSON or TOML file: 1 is a fine float, 5.0 a fine whole number, nothing else changes."""
    if isinstance(value, bool):
        return value
    if k.kind is float and isinstance(value, int):
        return float(value)
    if k.kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def split_values(name: str, text: str) -> list[Any]:
    """``V1,V2,...`` as grid values; a JSON setting (model_params) takes a JSON list instead."""
    if KNOBS[name].kind is dict:
        try:
            values = json.loads(text)
        except json.JSONDecodeError:
            raise GridError(f"grid values of {name} must be a JSON list of objects, e.g. "
                            f"'[{{\"C\": 0.1}}, {{\"C\": 1}}]', got {text!r}") from None
        return values if isinstance(values, list) else [values]
    return [part.strip() for part in text.split(",")]


def parse_grid_arg(text: str) -> tuple[str, list[Any]]:
    """``KEY=V1,V2,...`` (a ``--grid`` flag) as a knob name and its parsed values."""
    key, sep, values = str(text).partition("=")
    if not sep or not key.strip() or not values.strip():
        raise GridError(f"a grid axis is KEY=V1,V2,... (e.g. aggregation=fedavg,median), got {text!r}")
    name = knob_name(key)
    return name, [parse_value(name, v) for v in split_values(name, values)]


def make_grid(raw: Mapping[str, Any]) -> dict[str, list[Any]]:
    """Knob name -> parsed values, from a mapping of keys to lists (a file) or to ``V1,V2`` text."""
    if not isinstance(raw, Mapping):
        raise GridError("a grid must map run settings to lists of values, e.g. {\"alpha\": [0.1, 0.5]}")
    grid: dict[str, list[Any]] = {}
    for key, values in raw.items():
        name = knob_name(key)
        if name in grid:
            raise GridError(f"grid key {key!r} is given twice")
        items = split_values(name, values) if isinstance(values, str) else values
        if not isinstance(items, list):
            items = [items]
        if not items:
            raise GridError(f"grid key {name} has no values")
        parsed = [parse_value(name, v) for v in items]
        twice = next((raw_v for raw_v, v in zip(items, parsed) if parsed.count(v) > 1), None)
        if twice is not None:
            raise GridError(f"grid value {name}={_shown(twice)} is given twice")
        grid[name] = parsed
    return grid


def read_grid_file(path: str | Path) -> tuple[dict[str, list[Any]], int | None]:
    """A JSON or TOML file ``{"grid": {...}, "seeds": N}``: the grid and the seeds (None when not given)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise GridError(f"cannot read the grid file {path} ({exc.strerror or exc})") from None
    try:
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        kind = "TOML" if path.suffix.lower() == ".toml" else "JSON"
        raise GridError(f"the grid file {path} is not valid {kind} ({exc})") from None
    if not isinstance(data, dict) or "grid" not in data:
        raise GridError(f"the grid file {path} must hold a \"grid\" table (and may hold \"seeds\")")
    unknown = sorted(set(data) - {"grid", "seeds"})
    if unknown:
        raise GridError(f"the grid file {path} has unknown keys {', '.join(unknown)}; it holds \"grid\" and "
                        "\"seeds\"")
    seeds = data.get("seeds")
    if seeds is not None and (isinstance(seeds, bool) or not isinstance(seeds, int)):
        raise GridError(f"seeds in {path} must be a whole number, got {seeds!r}")
    return make_grid(data["grid"]), seeds


def cell_label(cell: Mapping[str, Any]) -> str:
    """``aggregation=median, alpha=0.1`` (or ``base settings`` for the one cell of an empty grid)."""
    if not cell:
        return "base settings"
    return ", ".join(f"{k}={_format(v)}" for k, v in cell.items())


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return json.dumps(value, separators=(",", ":")) if isinstance(value, dict) else str(value)


@dataclass(frozen=True)
class SweepRun:
    """One run of a sweep: its place in the grid, its seed and its config."""

    index: int  # position in the sweep (cell-major, then seed): the run id's suffix
    cell_index: int
    cell: dict[str, Any]
    seed: int
    config: RunConfig


@dataclass(frozen=True)
class SweepSpec:
    """What a sweep runs: ``base`` with every ``grid`` combination, each over ``seeds`` seeds; ``audit``: each
    completed run is audited for membership inference too (fl/runs/audit.py), its AUCs in summary.csv."""

    base: RunConfig
    grid: dict[str, list[Any]]
    seeds: int = DEFAULT_SEEDS
    audit: bool = False

    def cells(self) -> list[dict[str, Any]]:
        """Every combination of the grid's values, in the grid's order (one empty cell for an empty grid)."""
        names = list(self.grid)
        return [dict(zip(names, values)) for values in itertools.product(*(self.grid[n] for n in names))]

    @property
    def run_workers(self) -> int:
        """Each run's ``workers``: its clients in its own process (0), or on a cluster the base's hosts."""
        return 0 if self.base.cluster.strip().lower() == LOCAL else self.base.workers

    def seed_values(self) -> list[int]:
        return [self.base.seed + i for i in range(self.seeds)]

    def runs(self) -> Iterator[SweepRun]:
        """Every run, cell by cell, each over the seeds; its clients in its own process (workers=0)."""
        index = 0
        for cell_index, cell in enumerate(self.cells()):
            for seed in self.seed_values():
                yield SweepRun(index, cell_index, cell, seed,
                               dataclasses.replace(self.base, **cell, seed=seed, workers=self.run_workers))
                index += 1

    @property
    def n_runs(self) -> int:
        return len(self.cells()) * self.seeds

    def validate(self) -> "SweepSpec":
        """Refuse, before anything runs, a seed count, a cell or data that no run could take."""
        if isinstance(self.seeds, bool) or not isinstance(self.seeds, int) or not 1 <= self.seeds <= MAX_SEEDS:
            raise GridError(f"seeds must be a whole number from 1 to {MAX_SEEDS}, got {self.seeds!r}")
        last_seed = self.base.seed + self.seeds - 1
        problem = check_value("seed", KNOBS["seed"], last_seed)
        if problem:
            raise GridError(f"the last seed {last_seed} is refused: {problem}")
        if self.n_runs > MAX_RUNS:
            raise GridError(f"{len(self.cells())} cells x {self.seeds} seeds = {self.n_runs} runs; a sweep takes "
                            f"at most {MAX_RUNS}: drop some values or seeds")
        for cell in self.cells():
            config = dataclasses.replace(self.base, **cell, workers=self.run_workers)
            try:
                config.validate()
                check_config_size(config)
            except FLError as exc:
                where = f"the grid cell {cell_label(cell)}" if cell else "the base settings"
                raise GridError(f"{where} cannot run: {exc}") from None
        return self

    def warnings(self) -> list[str]:
        """Grid keys that have no effect in some cells (their widget would be hidden there)."""
        out = []
        for name in self.grid:
            k = KNOBS[name]
            idle = [cell for cell in self.cells() if k.shown is not None
                    and not k.shown(dataclasses.replace(self.base, **cell).to_dict())]
            if idle:
                out.append(f"{name} has no effect in {len(idle)} of {len(self.cells())} cells "
                           f"(e.g. {cell_label(idle[0])}): those cells repeat one another")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"base": self.base.to_dict(), "grid": self.grid, "seeds": self.seeds, "audit": self.audit}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SweepSpec":
        return cls(RunConfig.from_dict(dict(data["base"])), make_grid(data.get("grid") or {}), int(data["seeds"]),
                   bool(data.get("audit", False)))


def make_sweep(base: RunConfig, grid: Mapping[str, Any] | None = None, seeds: int = DEFAULT_SEEDS,
               audit: bool = False) -> SweepSpec:
    """A validated sweep: the grid parsed by the knobs, every cell checked; raises GridError with one sentence."""
    return SweepSpec(base, make_grid(grid or {}), seeds, audit).validate()
