"""Widgets drawn from the engine's own descriptions: a RunConfig knob, a model's hyperparameter.

No widget here knows a setting by name: its label, range or options, step,
default and when it is shown all come from fl/runs/config.py (knobs) or the
model adapters (hyperparameters), so a new knob or model needs no edit here.
"""

from __future__ import annotations

from typing import Any, Sequence

import streamlit as st

from fl.runs.config import RunConfig
from fl.runs.for_pages import Hyper
from fl.runs.knobs import Knob, default_of, knobs_of
from ui import widgets

KNOBS = knobs_of(RunConfig)


def default(name: str) -> Any:
    return default_of(RunConfig, name)


def shown(name: str, values: dict) -> bool:
    k = KNOBS[name]
    return k.widget is not None and (k.shown is None or k.shown(values))


def knob_widget(name: str, values: dict, options: Sequence | None = None) -> Any:
    """Draw ``name``'s widget and return its value (``options`` narrows a select or radio)."""
    k = KNOBS[name]
    kw = widgets.kw(name, default(name))
    label = k.widget_label()
    low, high = k.ui_range or (k.low, k.high)
    if k.widget in ("select", "radio"):
        choices = list(options) if options is not None else list(k.choices() if k.choices else [])
        if st.session_state.get(kw["key"]) not in choices:
            st.session_state[kw["key"]] = choices[0]
        draw = st.radio if k.widget == "radio" else st.selectbox
        return draw(label, choices, format_func=lambda c: (k.names or {}).get(c, str(c)), **kw)
    if k.widget == "select_slider":
        return st.select_slider(label, list(k.options), format_func=lambda v: _option(k, v), **kw)
    if k.widget == "checkbox":
        return st.checkbox(label, help=k.help if k.label else None, **kw)
    if k.widget == "text":
        return st.text_input(label, help=k.help if k.label else None, **kw).strip()
    if k.widget == "checkbox_text":
        return _checkbox_text(name, k, kw)
    cast = int if k.kind is int else float
    step = k.step if k.step is not None else (1 if k.kind is int else None)
    args = {"min_value": cast(low) if low is not None else None, "max_value": cast(high) if high is not None else None}
    if step is not None:
        args["step"] = cast(step)
    if k.widget == "slider":
        return st.slider(label, **args, **kw)
    return st.number_input(label, **args, **kw)


def _checkbox_text(name: str, k: Knob, kw: dict[str, Any]) -> str:
    """A switch, then its text: "" when off, the text when on, ``k.const`` when on and left empty (the CLI's
    flag alone)."""
    on = st.checkbox(k.widget_label(), help=k.help, **widgets.kw(name + "_on", False))
    if not on:
        return ""
    text = st.text_input(f"{name.split('_')[-1].upper()} (empty: {k.const})", placeholder=str(k.const), **kw)
    return text.strip() or str(k.const)


def _option(k: Knob, value: Any) -> str:
    names = k.names or {}
    if value in names:
        return names[value]
    return f"{value:g}" if isinstance(value, float) else str(value)


def hyper_widget(model: str, hyper: Hyper) -> Any:
    """A model hyperparameter's widget; returns the value the estimator takes (None for 0 = unlimited)."""
    name = f"hp_{model}_{hyper.name}"
    if hyper.layers:
        text = st.text_input(hyper.label, **widgets.kw(name, ",".join(str(u) for u in hyper.default)))
        try:
            layers = [int(u) for u in str(text).split(",") if u.strip()]
            if not layers or min(layers) < 1:
                raise ValueError
            return layers
        except ValueError:
            st.error("Hidden layers must be whole numbers above 0, e.g. 64 or 128,64.")
            return None
    if hyper.options is not None and all(isinstance(o, str) for o in hyper.options):  # named choices
        return st.radio(hyper.label, list(hyper.options), horizontal=True, help=hyper.help or None,
                        **widgets.kw(name, hyper.default))
    if hyper.options is not None:
        return st.select_slider(hyper.label, list(hyper.options), format_func=lambda v: f"{v:g}",
                                help=hyper.help or None, **widgets.kw(name, hyper.default))
    start = 0 if hyper.default is None and hyper.zero_is_none else hyper.default
    value = st.slider(hyper.label, hyper.low, hyper.high, **widgets.kw(name, start))
    return None if hyper.zero_is_none and value == 0 else value


def hyper_value_for_widget(hyper: Hyper, value: Any) -> Any:
    """A saved hyperparameter value as its widget holds it (for "load into Run page")."""
    if hyper.layers:
        return ",".join(str(u) for u in (value if isinstance(value, (list, tuple)) else [value]))
    if hyper.zero_is_none and value is None:
        return 0
    if hyper.options is not None and value not in hyper.options and isinstance(value, (int, float)):
        return min(hyper.options, key=lambda o: abs(o - value))
    return value
