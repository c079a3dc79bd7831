"""Advanced run settings: robust-rule parameters, server optimiser, FedProx,
simulated faults and attacks, differential privacy.

They live apart from ui/sidebar.py so that the everyday settings stay short;
each widget keeps its value for the session (``persist_state``).
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from fl.learning.server_opt import SERVER_OPTIMIZERS
from ui import widgets

ATTACK_LABELS = {
    "label_flip": "Label flip: train on permuted labels",
    "gaussian_noise": "Gaussian noise on the update",
    "sign_flip": "Sign flip: send the reversed, boosted update",
    "scale": "Scale: send a boosted update",
}
OPTIMIZER_LABELS = {"none": "None (take the aggregate)", "fedavgm": "FedAvgM (server momentum)",
                    "fedadagrad": "FedAdagrad", "fedadam": "FedAdam", "fedyogi": "FedYogi"}
DEFAULTS: dict[str, Any] = {
    "trim_beta": 0.2, "num_malicious": 0, "num_to_keep": 0, "server_opt": "none", "server_lr": 0.1,
    "server_momentum": 0.9, "proximal_mu": 0.0, "dropout_prob": 0.0, "slow_clients": 0, "slow_delay": 5.0,
    "malicious_clients": 0, "attack": "sign_flip", "attack_scale": 4.0, "dp": "none", "clip_norm": 1.0,
    "noise_multiplier": 1.0, "dp_delta": 1e-5,
}


SLIDER_OPTIONS: dict[str, list[float]] = {
    "server_lr": [0.001, 0.01, 0.03, 0.1, 0.3, 1.0],
    "proximal_mu": [0.0, 0.001, 0.01, 0.1, 1.0],
    "dp_delta": [1e-7, 1e-6, 1e-5, 1e-4, 1e-3],
}


def _k(name: str) -> dict[str, Any]:
    return widgets.kw(name, DEFAULTS[name])


def robust_widgets(aggregation: str) -> dict[str, Any]:
    """The parameters of the chosen robust rule."""
    if aggregation == "trimmed_mean":
        return {"trim_beta": st.slider("Share trimmed at each end (β)", 0.0, 0.45, step=0.05, **_k("trim_beta"))}
    if aggregation == "krum":
        return {"num_malicious": st.number_input("Assumed malicious clients f", 0, 100, **_k("num_malicious")),
                "num_to_keep": st.number_input("Keep the k best (0 = Krum, k > 0 = multi-Krum)", 0, 100,
                                               **_k("num_to_keep"))}
    return {}


def advanced_widgets(aggregation: str, model: str) -> dict[str, Any]:
    """Everything under the "Advanced" expander; returns RunConfig fields."""
    out: dict[str, Any] = {}
    parameter_based = aggregation not in ("stacking", "voting") and model != "gaussian_nb"
    with st.expander("Advanced: optimiser, FedProx, faults, attacks, privacy"):
        if parameter_based:
            st.markdown("**Server optimiser**")
            out["server_opt"] = st.selectbox("Server optimiser", list(SERVER_OPTIMIZERS),
                                             format_func=OPTIMIZER_LABELS.get, **_k("server_opt"))
            if out["server_opt"] != "none":
                out["server_lr"] = st.select_slider("Server learning rate η", SLIDER_OPTIONS["server_lr"],
                                                    **_k("server_lr"))
            if out["server_opt"] == "fedavgm":
                out["server_momentum"] = st.slider("Server momentum", 0.0, 0.99, step=0.01, **_k("server_momentum"))
            if model in ("logreg", "sgd", "linear_svm", "mlp"):
                out["proximal_mu"] = st.select_slider("FedProx μ (0 = off)", SLIDER_OPTIONS["proximal_mu"],
                                                      **_k("proximal_mu"),
                                                      help="Adds (μ/2)·||w − w_global||² to each client's objective.")
        st.markdown("**Faults**")
        out["dropout_prob"] = st.slider("Chance a client skips a round", 0.0, 0.9, step=0.05, **_k("dropout_prob"))
        out["slow_clients"] = st.number_input("Slow clients", 0, 1000, **_k("slow_clients"))
        if out["slow_clients"]:
            out["slow_delay"] = st.number_input("Their delay (s); past the round timeout they are dropped", 0.0,
                                                600.0, **_k("slow_delay"))
        st.markdown("**Attacks**")
        out["malicious_clients"] = st.number_input("Malicious clients", 0, 1000, **_k("malicious_clients"),
                                                   help="Real clients that send bad updates; the server is not told.")
        if out["malicious_clients"]:
            out["attack"] = st.selectbox("Attack", list(ATTACK_LABELS), format_func=ATTACK_LABELS.get,
                                         **_k("attack"))
            out["attack_scale"] = st.number_input("Attack strength (factor or noise std)", 0.0, 1e4,
                                                  **_k("attack_scale"))
        if parameter_based:
            st.markdown("**Differential privacy**")
            out["dp"] = st.selectbox("Clip and add noise", ["none", "server", "client"], **_k("dp"),
                                     format_func={"none": "Off", "server": "Server-side clipping",
                                                  "client": "Client-side clipping"}.get)
            if out["dp"] != "none":
                out["clip_norm"] = st.number_input("Clip norm C", 0.001, 1e4, **_k("clip_norm"))
                out["noise_multiplier"] = st.number_input("Noise multiplier σ", 0.0, 100.0, step=0.1,
                                                          **_k("noise_multiplier"))
                out["dp_delta"] = st.select_slider("δ", SLIDER_OPTIONS["dp_delta"], **_k("dp_delta"),
                                                   format_func=lambda v: f"{v:g}")
    return out
