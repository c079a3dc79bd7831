"""Side-by-side runs of one setting under several aggregation rules.

With malicious clients configured, one click starts the same run under
FedAvg, median, trimmed mean and Krum; one chart shows FedAvg's damage and
the robust rules' recovery, live. The tab then shows the comparison (and its
URL names its runs) until New run.
"""

from __future__ import annotations

import dataclasses

import pandas as pd
import streamlit as st

from fl.runs.config import RunConfig
from fl.runs.for_pages import MODELS, FLError
from fl.runs.live_run import RunHandle
from ui import charts
from ui.format import pct, words
from ui.app_state import follow_comparison, registry

RULES = ("fedavg", "median", "trimmed_mean", "krum")


def can_compare(config: RunConfig | None) -> bool:
    """Only an attacked parameter-averaging run has robust rules to compare."""
    return config is not None and config.malicious_clients > 0 and not config.is_ensemble \
        and config.model != "gaussian_nb"


def start_comparison(config: RunConfig) -> bool:
    """Start one run per rule and show them; errors become st.error, not tracebacks."""
    started: list[RunHandle] = []
    share = config.malicious_clients / config.clients
    try:
        for rule in RULES:
            extra: dict = {}
            if rule == "krum":
                extra = {"num_malicious": max(config.num_malicious, config.malicious_clients)}
            elif rule == "trimmed_mean":  # trim at least the attackers' share from each end
                extra = {"trim_beta": round(max(config.trim_beta, min(0.45, share + 0.01)), 2)}
            started.append(registry().start(dataclasses.replace(config, aggregation=rule, **extra)))
    except FLError as exc:
        for handle in started:
            handle.stop()
        st.error(f"Cannot start the comparison: {words(exc)}")
        return False
    follow_comparison([h.run_id for h in started])
    return True


VARIED = ("aggregation", "trim_beta", "num_malicious", "num_to_keep")


def same_settings(config: RunConfig | None, handles: list[RunHandle]) -> bool:
    """Whether the sidebar's settings are those the shown run (or comparison) was made with.

    A hyperparameter left at its default counts as set to it: a run started
    elsewhere (the command line, a resumed run) says ``{}`` where the
    sidebar's widgets say every value.
    """
    if config is None or not handles:
        return False
    if len(handles) == 1:
        return _settled(config.to_dict()) == _settled(handles[0].config.to_dict())
    base = {k: v for k, v in _settled(config.to_dict()).items() if k not in VARIED}
    return base == {k: v for k, v in _settled(handles[0].config.to_dict()).items() if k not in VARIED}


def _settled(values: dict) -> dict:
    """The config with the model's hyperparameters filled with their defaults (tuples as lists, as JSON)."""
    model = MODELS.get(values.get("model", ""))
    params = {**(model.defaults if model is not None else {}), **(values.get("model_params") or {})}
    return {**values, "model_params": {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}}


def _curves(handles: list[RunHandle], metric: str) -> dict[str, pd.DataFrame]:
    out = {}
    for h in handles:
        rounds = h.snapshot()["rounds"]
        out[h.config.aggregation] = pd.DataFrame(rounds) if rounds else pd.DataFrame(columns=["round", metric])
    return out


def show_comparison(handles: list[RunHandle], done: bool) -> None:
    """The comparison's chart and final numbers, live until every run has ended. ``done``: as the page read it
    when it drew its buttons (``live.show_run`` says why)."""
    cfg = handles[0].config
    st.subheader("FedAvg against robust rules")
    trimmed = next((h.config.trim_beta for h in handles if h.config.aggregation == "trimmed_mean"), None)
    st.caption(f"{cfg.malicious_clients} of {cfg.clients} clients send {cfg.attack} updates "
               f"(strength {cfg.attack_scale:g}); the server does not know which. Krum assumes "
               f"f = {cfg.malicious_clients}; the trimmed mean cuts β = {trimmed} at each end. Each run is also "
               "on the Runs page; New run (in the sidebar) closes the comparison.")

    def draw() -> None:
        st.plotly_chart(charts.compare_figure(_curves(handles, "accuracy"), "accuracy"), key="compare-acc")
        finals = {h.config.aggregation: (h.snapshot()["rounds"] or [{}])[-1].get("accuracy") for h in handles}
        cols = st.columns(len(finals))
        for col, (rule, acc) in zip(cols, finals.items()):
            col.metric(rule, pct(acc))

    if done:
        draw()
        return

    @st.fragment(run_every=1.0)
    def live() -> None:
        if all(h.done for h in handles):
            st.rerun(scope="app")  # unlock the sidebar
        draw()

    live()
