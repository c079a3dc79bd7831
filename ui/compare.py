"""Side-by-side runs of one setting under several aggregation rules.

With malicious clients configured, one click starts the same run under
FedAvg, median, trimmed mean and Krum; one chart shows FedAvg's damage and
the robust rules' recovery, live.
"""

from __future__ import annotations

import dataclasses

import pandas as pd
import streamlit as st

from fl.config import ConfigError, RunConfig
from fl.data import DataError
from fl.runstate import RunHandle
from ui import charts
from ui.state import registry

COMPARISON = "comparison_run_ids"
RULES = ("fedavg", "median", "trimmed_mean", "krum")


def start_comparison(config: RunConfig) -> None:
    """Start one run per rule; errors become st.error, not tracebacks."""
    ids = []
    share = config.malicious_clients / config.clients
    try:
        for rule in RULES:
            extra: dict = {}
            if rule == "krum":
                extra = {"num_malicious": max(config.num_malicious, config.malicious_clients)}
            elif rule == "trimmed_mean":  # trim at least the attackers' share from each end
                extra = {"trim_beta": round(max(config.trim_beta, min(0.45, share + 0.01)), 2)}
            ids.append(registry().start(dataclasses.replace(config, aggregation=rule, **extra)).run_id)
    except (ConfigError, DataError) as exc:
        st.error(f"Cannot start the comparison: {exc}")
        return
    st.session_state[COMPARISON] = ids


def _curves(handles: list[RunHandle], metric: str) -> dict[str, pd.DataFrame]:
    out = {}
    for h in handles:
        rounds = h.snapshot()["rounds"]
        out[h.config.aggregation] = pd.DataFrame(rounds) if rounds else pd.DataFrame(columns=["round", metric])
    return out


def show_comparison() -> bool:
    """Draw the comparison if this tab started one; True when drawn."""
    ids = st.session_state.get(COMPARISON) or []
    handles = [h for h in (registry().get(i) for i in ids) if h is not None]
    if not handles:
        return False
    cfg = handles[0].config
    st.subheader("FedAvg against robust rules")
    trimmed = next((h.config.trim_beta for h in handles if h.config.aggregation == "trimmed_mean"), None)
    st.caption(f"{cfg.malicious_clients} of {cfg.clients} clients send {cfg.attack} updates "
               f"(strength {cfg.attack_scale:g}); the server does not know which. Krum assumes "
               f"f = {cfg.malicious_clients}; the trimmed mean cuts β = {trimmed} at each end.")

    def draw() -> None:
        st.plotly_chart(charts.compare_figure(_curves(handles, "accuracy"), "accuracy"), key="compare-acc")
        finals = {h.config.aggregation: (h.snapshot()["rounds"] or [{}])[-1].get("accuracy") for h in handles}
        cols = st.columns(len(finals))
        for col, (rule, acc) in zip(cols, finals.items()):
            col.metric(rule, charts.pct_or_dash(acc))

    if all(h.done for h in handles):
        draw()
    else:
        @st.fragment(run_every=1.0)
        def live() -> None:
            if all(h.done for h in handles):
                st.rerun(scope="app")
            draw()

        live()
    if st.button("Close the comparison", key="close_comparison"):
        st.session_state.pop(COMPARISON, None)
        st.rerun()
    return True
