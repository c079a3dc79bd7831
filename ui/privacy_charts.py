"""Plotly figures of a privacy audit: pure functions of an audit report (fl/runs/audit.py) or a sweep's summary.

(a) each attack's ROC curve on log scales (the low false-positive rates are
what matters: an attacker sure of a few members has found them), (b) each
client's AUC (which site is most exposed), (c) audit AUC against the ε a
sweep's runs spent (what differential privacy buys).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

from ui.charts import REFERENCE_COLOUR
from ui.format import is_number

ATTACK_NAMES = {"loss": "Loss threshold", "calibrated": "Calibrated (LiRA offline)"}
ATTACK_COLOURS = {"loss": qualitative.Plotly[0], "calibrated": qualitative.Plotly[1]}
MAX_CLIENT_BARS = 30
MARGIN = dict(l=10, r=10, t=60, b=10)


def roc_figure(report: Mapping[str, Any]) -> go.Figure:
    """TPR against FPR of each attack, log-log, with the diagonal of an attack that cannot tell."""
    fig = go.Figure()
    n_out = (report.get("nonmembers") or {}).get("n") or 1000
    floor = 1.0 / max(n_out, 1)
    fig.add_trace(go.Scatter(x=[floor, 1.0], y=[floor, 1.0], mode="lines", name="cannot tell (AUC 0.5)",
                             line=dict(color=REFERENCE_COLOUR, dash="dot"), hoverinfo="skip"))
    for name, curve in (report.get("roc") or {}).items():
        fpr, tpr = np.asarray(curve["fpr"], dtype=float), np.asarray(curve["tpr"], dtype=float)
        keep = (fpr > 0) & (tpr > 0)  # log axes: the points at zero are off the chart
        auc = ((report.get("attacks") or {}).get(name) or {}).get("auc")
        label = f"{ATTACK_NAMES.get(name, name)} (AUC {auc:.3f})" if is_number(auc) else ATTACK_NAMES.get(name, name)
        fig.add_trace(go.Scatter(x=fpr[keep], y=tpr[keep], mode="lines", name=label, line_shape="hv",
                                 line=dict(color=ATTACK_COLOURS.get(name), width=2),
                                 hovertemplate="FPR %{x:.2%}<br>TPR %{y:.2%}<extra></extra>"))
    for target in report.get("fpr_targets") or []:
        if target >= floor:  # below one false positive in n there is no point of the curve to mark
            fig.add_trace(go.Scatter(x=[target, target], y=[floor, 1.0], mode="lines", showlegend=False,
                                     line=dict(color=REFERENCE_COLOUR, width=1, dash="dash"),
                                     hovertemplate=f"{100 * target:g} % false positives<extra></extra>"))
    fig.update_layout(title=dict(text="Membership inference ROC, log scales<br><sup>the low false-positive rates "
                                      "matter: dashed, 1 % and 0.1 %</sup>", x=0, xanchor="left"),
                      height=400, margin=MARGIN,  # the legend where the curve never goes (above the diagonal, left)
                      legend=dict(yanchor="top", y=0.99, xanchor="left", x=0.01, bgcolor="rgba(255,255,255,0.8)"))
    fig.update_xaxes(type="log", title_text="False-positive rate (non-members called members)",
                     range=[math.log10(floor) - 0.1, 0.02])
    fig.update_yaxes(type="log", title_text="True-positive rate (members found)", range=[math.log10(floor) - 0.1, 0.02])
    return fig


def client_auc_figure(report: Mapping[str, Any]) -> go.Figure:
    """Each client's AUC under each attack, most exposed first, with 0.5 and its chance band."""
    per_client = report.get("per_client") or {}
    key = "calibrated" if any("calibrated" in row for row in per_client.values()) else "loss"
    ranked = sorted(per_client.items(), key=lambda kv: -kv[1].get(key, 0.0))[:MAX_CLIENT_BARS]
    fig = go.Figure()
    for name in ("loss", "calibrated"):
        if not any(name in row for _, row in ranked):
            continue
        fig.add_trace(go.Bar(x=[cid for cid, _ in ranked], y=[row.get(name) for _, row in ranked],
                             name=ATTACK_NAMES[name], marker_color=ATTACK_COLOURS[name],
                             customdata=[(row["n_members"], 2 * row.get("chance_sd", float("nan")))
                                         for _, row in ranked],
                             hovertemplate="%{x}<br>AUC %{y:.3f} (%{customdata[0]} members: an attack that "
                                           "cannot tell scores 0.5 ± %{customdata[1]:.3f})<extra></extra>"))
    spreads = [row["chance_sd"] for _, row in ranked if is_number(row.get("chance_sd"))]
    if spreads:  # what a client's AUC does by chance alone, with a typical client's few members
        half = 2 * float(np.median(spreads))
        fig.add_hrect(y0=0.5 - half, y1=0.5 + half, fillcolor=REFERENCE_COLOUR, opacity=0.15, line_width=0,
                      layer="above", annotation_text=f"chance: 0.5 ± {half:.2f}", annotation_position="top right")
    fig.add_hline(y=0.5, line=dict(color=REFERENCE_COLOUR, dash="dot"), layer="above")
    shown = "" if len(per_client) <= MAX_CLIENT_BARS else f" (the {MAX_CLIENT_BARS} most exposed of {len(per_client)})"
    fig.update_layout(title=dict(text=f"Audit AUC per client: its members against all non-members{shown}", x=0,
                                 xanchor="left"), height=400, margin=MARGIN, barmode="group",
                      legend=dict(orientation="h", yanchor="bottom", y=-0.35, x=0))
    values = [row.get(n) for _, row in ranked for n in ("loss", "calibrated") if is_number(row.get(n))]
    fig.update_yaxes(title_text="AUC", range=[min([0.4, *values]) - 0.02, max([0.8, *values]) + 0.02])
    fig.update_xaxes(type="category")
    return fig


def auc_vs_epsilon_figure(summary: pd.DataFrame) -> go.Figure:
    """Each completed run's audit AUC against its ε (log scale), and the mean per ε; runs without a finite ε
    (no DP, or noise multiplier 0) as dashed lines: the leakage with no privacy to compare against."""
    done = summary[summary["status"] == "completed"] if len(summary) else summary
    fig = go.Figure()
    for name, column in (("loss", "audit_auc"), ("calibrated", "audit_auc_calibrated")):
        if column not in done or not done[column].notna().any():
            continue
        eps = pd.to_numeric(done.get("epsilon"), errors="coerce") if "epsilon" in done else pd.Series(
            np.nan, index=done.index)
        auc = pd.to_numeric(done[column], errors="coerce")
        finite = eps.notna() & np.isfinite(eps) & auc.notna()
        colour = ATTACK_COLOURS[name]
        if finite.any():
            fig.add_trace(go.Scatter(x=eps[finite], y=auc[finite], mode="markers", name=f"{ATTACK_NAMES[name]}, "
                                     "each run", marker=dict(color=colour, size=8, opacity=0.6),
                                     legendgroup=name, hovertemplate="ε %{x:.3g}<br>AUC %{y:.3f}<extra></extra>"))
            means = auc[finite].groupby(eps[finite]).mean().sort_index()
            fig.add_trace(go.Scatter(x=means.index, y=means.values, mode="lines", name=f"{ATTACK_NAMES[name]}, "
                                     "mean", line=dict(color=colour, width=2), legendgroup=name, hoverinfo="skip"))
        open_runs = ~finite & auc.notna()
        if open_runs.any():
            label = "ε = ∞ or no DP"
            fig.add_hline(y=float(auc[open_runs].mean()), line=dict(color=colour, dash="dash"),
                          annotation_text=f"{ATTACK_NAMES[name]}, {label}: {auc[open_runs].mean():.3f}",
                          annotation_position="top left")
    fig.add_hline(y=0.5, line=dict(color=REFERENCE_COLOUR, dash="dot"), annotation_text="cannot tell (0.5)",
                  annotation_position="bottom right")
    fig.update_layout(title=dict(text="Audit AUC against the privacy spent (ε): smaller ε, closer to 0.5",
                                 x=0, xanchor="left"), height=420, margin=MARGIN,
                      legend=dict(orientation="h", yanchor="bottom", y=-0.35, x=0))
    fig.update_xaxes(type="log", title_text="ε (client level; smaller is more private)")
    fig.update_yaxes(title_text="Membership inference AUC")
    return fig


def has_audit(summary: pd.DataFrame) -> bool:
    """Whether a sweep's summary holds any audit AUC (a sweep run with the audit on)."""
    return len(summary) > 0 and any(c in summary and summary[c].notna().any()
                                    for c in ("audit_auc", "audit_auc_calibrated"))
