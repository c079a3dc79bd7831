"""Charts of a run's experiment features: the learning-rate schedule and the scrutiny of client updates."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from ui.charts import round_axis
from ui.format import is_number

Z_COLOURS = [[0.0, "#2c7bb6"], [0.5, "#f7f7f7"], [1.0, "#d7191c"]]


def learning_rate_figure(rates: list[tuple[int, float]], total_rounds: int | None, planned: bool = False) -> go.Figure:
    """The clients' learning rate per round (the server's schedule), as run or as planned."""
    xs = [r for r, _ in rates]
    fig = go.Figure(go.Scatter(x=xs, y=[v for _, v in rates], mode="lines+markers", line=dict(shape="hv"),
                               hovertemplate="round %{x}: %{y:.4g}<extra></extra>"))
    title = "Clients' learning rate per round" + (" (planned)" if planned else "")
    fig.update_layout(title=dict(text=title, x=0), height=260, margin=dict(l=10, r=10, t=50, b=10),
                      showlegend=False)
    fig.update_yaxes(title_text="Learning rate", rangemode="tozero", exponentformat="power")
    round_axis(fig, total_rounds or (max(xs) if xs else 1))
    return fig


def scrutiny_heatmap(client_rows: list[dict], max_clients: int = 60) -> go.Figure | None:
    """Clients x rounds of the robust z-score of each update's distance to the median update; None without any.

    Red: far from the others, blue: closer than most; a flagged update is
    marked ⚑ (above its round's threshold, which depends on the number of
    updates: fl/federation/scrutiny.py); a client that sent nothing that
    round is blank.
    """
    rows = [r for r in client_rows if is_number(r.get("update_z"))]
    if not rows:
        return None
    clients = sorted({str(r["client_id"]) for r in rows})[:max_clients]
    rounds = sorted({int(r["round"]) for r in rows})
    index = {(str(r["client_id"]), int(r["round"])): r for r in rows}
    z = [[_cell(index.get((cid, rnd)), "update_z") for rnd in rounds] for cid in clients]
    text = [[_hover(index.get((cid, rnd))) for rnd in rounds] for cid in clients]
    marks = [["⚑" if (index.get((cid, rnd)) or {}).get("flagged") else "" for rnd in rounds] for cid in clients]
    limits = [r["z_threshold"] for r in rows if is_number(r.get("z_threshold"))]
    limit = max([4.0, *limits, *(abs(v) for row in z for v in row if v is not None)])
    fig = go.Figure(go.Heatmap(z=z, x=rounds, y=clients, zmin=-limit, zmax=limit, colorscale=Z_COLOURS,
                               customdata=text, text=marks, texttemplate="%{text}",
                               hovertemplate="%{y}, round %{x}<br>%{customdata}<extra></extra>",
                               colorbar=dict(title="robust z")))
    fig.update_layout(title=dict(text=f"How far each update is from the others (robust z; ⚑ {threshold_text(limits)})",
                                 x=0), height=max(260, 24 * len(clients) + 120), margin=dict(l=10, r=10, t=50, b=10))
    fig.update_xaxes(title_text="Round", dtick=max(1, len(rounds) // 10), tickformat="d")
    fig.update_yaxes(autorange="reversed", type="category")  # site names such as 1, 2, 7 are names, not numbers
    return fig


def threshold_text(limits: list[float]) -> str:
    """The flag line of a run's rounds: one value, or the range of them (it depends on the number of updates)."""
    shown = sorted({round(float(v), 1) for v in limits})
    if not shown:
        return "flagged"
    if len(shown) == 1:
        return f"flagged above {shown[0]:g}"
    return f"flagged above {shown[0]:g} to {shown[-1]:g}, by the round's number of updates"


def _cell(row: dict | None, key: str) -> Any:
    return row.get(key) if row is not None and is_number(row.get(key)) else None


def _hover(row: dict | None) -> str:
    if row is None:
        return "no update"
    cosine = row.get("update_cosine")
    text = f"z {row['update_z']:.1f}"
    if is_number(row.get("z_threshold")):
        text += f" (flagged above {row['z_threshold']:.1f})"
    text += f", norm {row.get('update_norm', 0):.3g}"
    if is_number(cosine):
        text += f", cosine to the aggregate {cosine:.2f}"
    return text + (" · flagged" if row.get("flagged") else "")
