"""Knobs: what a RunConfig field says about itself, so that nothing else has to say it again.

A field's ``Knob`` holds its range or choices, its help text, its widget and
when that widget is shown, the commands that take it as a flag, and whether
clients receive it in every ``fit``. The argparse flags (fl/cli/flags.py),
the validation (RunConfig.validate), the dashboard's widgets (ui/sidebar.py)
and Deploy's client commands (ui/deploy_view.py) are all generated from these;
each default is the dataclass field's own default, written once.
"""

from __future__ import annotations

import json
import math
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Callable, Sequence

# Which command line takes a knob as a flag.
SIMULATE, SERVER, CLIENT = "simulate", "server", "client"
RUN_COMMANDS = (SIMULATE, SERVER)


@dataclass(frozen=True)
class Knob:
    help: str
    label: str = ""  # the widget's label; the help's first words when empty
    group: str = "run"  # data | split | model | rounds | optimizer | faults | privacy | runtime | tracking
    kind: type = float  # int | float | str | bool | dict (JSON)
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    optional: bool = False  # None is a valid value (e.g. "the optimiser's own default")
    choices: Callable[[], Sequence[str]] | None = None  # from a registry, read when asked
    commands: tuple[str, ...] = RUN_COMMANDS
    flag: str | None = None  # the flag's name when it is not --field-name
    widget: str | None = None  # slider | number | select | select_slider | radio | checkbox | text |
    #                            checkbox_text (on/off, then a text; ticked and empty = const) | None
    options: tuple | None = None  # a select slider's values
    ui_range: tuple | None = None  # a slider's (min, max), when narrower than what validation allows
    step: float | None = None
    shown: Callable[[dict], bool] | None = None  # the widget only when this holds for the values so far
    more: bool = False  # the widget sits under "More settings"
    fit_key: str | None = None  # sent to clients in every fit config under this key (when set)
    names: dict[Any, str] | None = None  # how a widget shows each choice
    parse: Callable[[str], Any] | None = None  # how the command line reads it, when not just kind(text)
    check: Callable[[Any], str | None] | None = None  # why a value of the right kind is still wrong (a sentence)
    const: Any = None  # when set, the flag's value is optional: the flag alone means this (--mlflow)

    def flag_name(self, name: str) -> str:
        return self.flag or "--" + name.replace("_", "-")

    def widget_label(self) -> str:
        return self.label or self.help


def knob(default: Any = MISSING, *, default_factory: Any = MISSING, **meta: Any) -> Any:
    """A dataclass field with its Knob."""
    return field(default=default, default_factory=default_factory, metadata={"knob": Knob(**meta)})


def knobs_of(cls: type) -> dict[str, Knob]:
    """Every knob of a dataclass, in field order."""
    return {f.name: f.metadata["knob"] for f in fields(cls) if "knob" in f.metadata}


def default_of(cls: type, name: str) -> Any:
    f = next(f for f in fields(cls) if f.name == name)
    return f.default_factory() if f.default_factory is not MISSING else f.default


def check_value(name: str, k: Knob, value: Any) -> str | None:
    """Why ``value`` is not a valid ``name`` (a sentence that says what to do), or None."""
    if value is None:
        return None if k.optional else f"{name} needs a value"
    if k.kind is bool:
        return None if isinstance(value, bool) else f"{name} must be true or false, got {value!r}"
    if k.kind is dict:
        return None if isinstance(value, dict) else f"{name} must be a JSON object, got {value!r}"
    if k.choices is not None:
        allowed = list(k.choices())
        return None if value in allowed else f"unknown {name} {value!r}; choose one of: {', '.join(allowed)}"
    if k.kind is str:
        if not isinstance(value, str):
            return f"{name} must be text, got {value!r}"
        return k.check(value) if k.check is not None else None
    if k.kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        return f"{name} must be a whole number, got {value!r}"
    if k.kind is float and (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)):
        return f"{name} must be a number, got {value!r}"
    return _check_range(name, k, value)


def _check_range(name: str, k: Knob, value: float) -> str | None:
    too_low = k.low is not None and (value <= k.low if k.low_open else value < k.low)
    too_high = k.high is not None and (value >= k.high if k.high_open else value > k.high)
    if not (too_low or too_high):
        return None
    if k.kind is int:
        return f"{name} must be between {k.low:g} and {k.high:g}, got {value}"
    low = f"{'above' if k.low_open else 'at least'} {k.low:g}" if k.low is not None else ""
    high = f"{'below' if k.high_open else 'at most'} {k.high:g}" if k.high is not None else ""
    return f"{name} must be {' and '.join(p for p in (low, high) if p)}, got {value:g}"


def to_flags(config: Any, command: str, skip: Sequence[str] = ()) -> list[str]:
    """The flags of ``command`` that rebuild ``config``: every knob it takes whose value is not the default.

    The inverse of the parser fl/cli/flags.py generates; the Deploy page writes
    its client commands with it.
    """
    out: list[str] = []
    for name, k in knobs_of(type(config)).items():
        value = getattr(config, name)
        if command not in k.commands or name in skip or value == default_of(type(config), name) or value is None:
            continue
        flag = k.flag_name(name)
        if k.kind is bool:
            out.append(flag if value else "--no-" + flag[2:])
        elif k.kind is dict:
            out += [flag, json.dumps(value, separators=(",", ":"))]
        else:
            out += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return out
