"""Plotly figures of a sweep: pure functions of its summary rows, cells and curves, no Streamlit.

(a) accuracy per round per cell with a band over the seeds, (b) a heatmap of
mean final accuracy over two axes, (c) mean final accuracy per cell with its
95% confidence interval as error bars.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

from ui.charts import accuracy_range, round_axis
from ui.format import is_number

PALETTE = qualitative.Plotly
MARGIN = dict(l=10, r=10, t=50, b=10)


def _rgba(hex_colour: str, alpha: float) -> str:
    r, g, b = (int(hex_colour.lstrip("#")[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def value_text(value: Any) -> str:
    """A grid value as an axis label: 0.1 not 0.1000, 10 not 10.0."""
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:g}"
    return str(value)


def cell_curves_figure(bands: Mapping[str, pd.DataFrame], band: str = "std") -> go.Figure:
    """Mean accuracy per round of each cell, and a band: mean ± std, or min to max, over its seeds.

    ``bands`` maps a cell's label to the frame of fl.runs.sweep_stats.accuracy_curves.
    """
    fig = go.Figure()
    values: list[float] = []
    last_round = 1
    for i, (label, df) in enumerate(bands.items()):
        if not len(df):
            continue
        colour = PALETTE[i % len(PALETTE)]
        rounds = df["round"].tolist()
        last_round = max(last_round, int(max(rounds)))
        fig.add_trace(go.Scatter(x=rounds + rounds[::-1], y=df["high"].tolist() + df["low"].tolist()[::-1],
                                 fill="toself", fillcolor=_rgba(colour, 0.18), line=dict(width=0),
                                 hoverinfo="skip", showlegend=False, legendgroup=label))
        fig.add_trace(go.Scatter(x=rounds, y=df["mean"], mode="lines+markers", name=label, legendgroup=label,
                                 line=dict(color=colour, width=2), marker=dict(size=5),
                                 customdata=df["n"], hovertemplate="%{y:.1%} (%{customdata} seeds)"))
        values += [v for v in df["low"].tolist() + df["mean"].tolist() if is_number(v)]
    spread = "mean ± std" if band == "std" else "min to max"
    fig.update_layout(title=dict(text=f"Accuracy per round, each cell over its seeds ({spread})", x=0, xanchor="left"),
                      height=420, margin=MARGIN, hovermode="x unified",
                      legend=dict(orientation="v", x=1.02, xanchor="left", y=1, yanchor="top"))
    round_axis(fig, last_round)
    fig.update_yaxes(title_text="Accuracy", tickformat=".0%", range=accuracy_range(values))
    return fig


# light to mid tones only, so the dark text on every cell stays readable
HEATMAP_COLOURS = [[0.0, "#fde8c8"], [1.0, "#3b8fc4"]]


def heatmap_figure(summary: pd.DataFrame, x: str, y: str) -> go.Figure:
    """Mean final accuracy of the completed runs over two axes (averaged over any other axis)."""
    done = summary[summary["status"] == "completed"] if len(summary) else summary
    fig = go.Figure()
    if len(done):
        table = done.groupby([y, x], sort=True, dropna=False)["final_accuracy"].mean().unstack(x)
        xs, ys = [value_text(v) for v in table.columns], [value_text(v) for v in table.index]
        z = table.to_numpy()
        text = [[f"{v:.1%}" if is_number(v) else "" for v in row] for row in z]
        seen = [float(v) for v in z.ravel() if is_number(v)]
        # colours span the values shown, so 75% and 91% do not look alike (the text gives the numbers)
        low, high = (min(seen), max(seen)) if seen else (0.0, 1.0)
        if high - low < 0.01:
            low, high = max(0.0, low - 0.005), min(1.0, high + 0.005)
        fig.add_trace(go.Heatmap(z=z, x=xs, y=ys, text=text, texttemplate="%{text}", colorscale=HEATMAP_COLOURS,
                                 zmin=low, zmax=high, colorbar=dict(title="Accuracy", tickformat=".1%"),
                                 hovertemplate=f"{x}=%{{x}}<br>{y}=%{{y}}<br>mean final accuracy %{{z:.1%}}"
                                               "<extra></extra>"))
    fig.update_layout(title=dict(text=f"Mean final accuracy: {y} by {x}", x=0, xanchor="left"), height=380,
                      margin=MARGIN)
    fig.update_xaxes(title_text=x, type="category")
    fig.update_yaxes(title_text=y, type="category")
    return fig


def cell_bars_figure(cells: pd.DataFrame, labels: Sequence[str]) -> go.Figure:
    """Mean final accuracy per cell with its 95% confidence interval (Student t over the seeds)."""
    fig = go.Figure()
    if len(cells):
        mean = cells["final_accuracy_mean"].astype(float)
        ci_low, ci_high = cells["final_accuracy_ci_low"].astype(float), cells["final_accuracy_ci_high"].astype(float)
        # drawn within 0..100 % (an interval of few seeds can pass them); the hover says the real one
        high = (ci_high.clip(upper=1.0) - mean).clip(lower=0).fillna(0)
        low = (mean - ci_low.clip(lower=0.0)).clip(lower=0).fillna(0)
        interval = [f"[{a:.1%}, {b:.1%}]" if is_number(a) else "needs 2 seeds" for a, b in zip(ci_low, ci_high)]
        fig.add_trace(go.Bar(
            x=list(labels), y=mean, marker_color=[PALETTE[i % len(PALETTE)] for i in range(len(cells))],
            error_y=dict(type="data", symmetric=False, array=high, arrayminus=low, thickness=1.5, width=6),
            customdata=list(zip(cells["n_seeds"], interval)), text=[f"{v:.1%}" if is_number(v) else "" for v in mean],
            textposition="inside", insidetextanchor="start",
            hovertemplate="%{x}<br>mean %{y:.1%} over %{customdata[0]} seeds<br>95% CI %{customdata[1]}"
                          "<extra></extra>"))
    title = "Mean final accuracy per cell, with its 95% confidence interval"
    if len(cells) and ((cells["final_accuracy_ci_high"].astype(float) > 1.0)
                       | (cells["final_accuracy_ci_low"].astype(float) < 0.0)).any():
        title += "<br><sup>an interval past 0 or 100 % is drawn up to it (few seeds make it wide): hover for it</sup>"
    fig.update_layout(title=dict(text=title, x=0, xanchor="left"), height=400, margin=MARGIN, showlegend=False)
    fig.update_yaxes(title_text="Final accuracy", tickformat=".0%", range=[0, 1.05])
    fig.update_xaxes(type="category")
    return fig
