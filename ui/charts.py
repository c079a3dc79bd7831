"""Plotly figures for the pages: pure functions of run data, no Streamlit.

Colours come from the active Streamlit theme (light or dark); only reference
lines get a fixed mid-grey that reads on both backgrounds.
"""

from __future__ import annotations

from typing import Any, Iterable

import pandas as pd
import plotly.graph_objects as go

from ui.format import is_number

REFERENCE_COLOUR = "#8c8c8c"
METRIC_LABELS = {"accuracy": "Accuracy", "loss": "Loss", "f1_macro": "Macro F1",
                 "train_accuracy": "Training accuracy", "train_loss": "Training loss"}


def _layout(fig: go.Figure, title: str, y_title: str, *, percent: bool = False, height: int = 340,
            values: Iterable[float] = ()) -> go.Figure:
    fig.update_layout(title=dict(text=title, x=0, xanchor="left"), height=height,
                      margin=dict(l=10, r=10, t=50, b=10), hovermode="x unified",
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1))
    fig.update_xaxes(title_text="Round", rangemode="tozero", dtick=None)
    finite = [v for v in values if is_number(v)]
    narrow = bool(finite) and max(finite) - min(finite) < 0.05
    fig.update_yaxes(title_text=y_title, tickformat=(".1%" if narrow else ".0%") if percent else None)
    return fig


def global_metric_figure(rounds: list[dict], metric: str, baselines: dict | None = None,
                         total_rounds: int | None = None) -> go.Figure:
    """The global model's metric per round, with the baselines as reference lines."""
    xs = [r["round"] for r in rounds]
    ys = [r.get(metric) if is_number(r.get(metric)) else None for r in rounds]
    fig = go.Figure(go.Scatter(x=xs, y=ys, mode="lines+markers", name="Federated (global model)",
                               hovertemplate="%{y:.3f}" if metric == "loss" else "%{y:.1%}"))
    curve = [y for y in ys if y is not None]
    # A loss baseline far above the curve (local models that never saw some
    # classes) would flatten it: keep the axis on the curve and say so.
    ceiling = 1.6 * max(curve) if metric == "loss" and curve else None
    for key, label, dash in (("centralized", "Centralized", "dash"), ("local_only", "Local only (mean)", "dot")):
        value = ((baselines or {}).get(key) or {}).get(metric)
        if not is_number(value):
            continue
        text = f"{label} {value:.1%}" if metric != "loss" else f"{label} {value:.3f}"
        if ceiling is not None and value > ceiling:
            fig.add_annotation(text=f"{text} (above the chart)", xref="paper", yref="paper", x=1, y=1,
                               xanchor="right", yanchor="top", showarrow=False, font=dict(color=REFERENCE_COLOUR))
            continue
        fig.add_hline(y=value, line=dict(color=REFERENCE_COLOUR, dash=dash, width=1.5), annotation_text=text,
                      annotation_position="bottom right" if metric != "loss" else "top right")
    if ceiling is not None:
        fig.update_yaxes(range=[0, ceiling])
    elif not curve:  # nothing yet: a sensible empty axis instead of plotly's -100%..400%
        fig.update_yaxes(range=[0, 1])
    if total_rounds:
        fig.update_xaxes(range=[0.5, max(total_rounds, len(xs)) + 0.5])
    references = [((baselines or {}).get(k) or {}).get(metric) for k in ("centralized", "local_only")]
    return _layout(fig, f"Global {METRIC_LABELS.get(metric, metric).lower()}", METRIC_LABELS.get(metric, metric),
                   percent=metric != "loss", values=curve + [v for v in references if is_number(v)])


def one_shot_figure(final: dict, baselines: dict | None, metric: str, method: str) -> go.Figure:
    """A one-round run (stacking, voting, naive Bayes): bars beat a one-point line."""
    labels = [f"Federated ({method})", "Centralized", "Local only (mean)"]
    values = [final.get(metric), ((baselines or {}).get("centralized") or {}).get(metric),
              ((baselines or {}).get("local_only") or {}).get(metric)]
    shown = [(label, v) for label, v in zip(labels, values) if is_number(v)]
    percent = metric != "loss"
    fig = go.Figure(go.Bar(x=[label for label, _ in shown], y=[v for _, v in shown],
                           text=[f"{v:.1%}" if percent else f"{v:.3f}" for _, v in shown], textposition="auto"))
    fig.update_layout(title=dict(text=f"{METRIC_LABELS.get(metric, metric)}: federated vs baselines", x=0),
                      height=340, margin=dict(l=10, r=10, t=50, b=10))
    fig.update_yaxes(title_text=METRIC_LABELS.get(metric, metric), tickformat=".0%" if percent else None,
                     range=[0, 1.05] if percent else None)
    return fig


def client_bars_figure(client_rows: list[dict], local_only: dict[str, float] | None) -> go.Figure:
    """Per client: training accuracy, and test accuracy of its model alone."""
    rows = sorted((r for r in client_rows if r.get("status", "ok") == "ok"), key=lambda r: r["client_id"])
    ids = [r["client_id"] for r in rows]
    fig = go.Figure(go.Bar(name="Training accuracy", x=ids, y=[r.get("train_accuracy") for r in rows]))
    if local_only:
        fig.add_trace(go.Bar(name="Test accuracy, client alone", x=ids, y=[local_only.get(c) for c in ids]))
    fig.update_layout(barmode="group", title=dict(text="Per-client accuracy", x=0), height=340,
                      margin=dict(l=10, r=10, t=50, b=10), legend=dict(orientation="h", y=1.0, yanchor="bottom"))
    fig.update_yaxes(tickformat=".0%", range=[0, 1.05])
    return fig


def client_metric_figure(client_rows: list[dict], metric: str = "train_accuracy",
                         highlight: Iterable[str] = ()) -> go.Figure:
    """One line per client; many clients get thin lines and no legend."""
    fig = go.Figure()
    if client_rows:
        df = pd.DataFrame(client_rows)
        df = df[df.get("status", "ok") == "ok"] if "status" in df else df
        marked = set(highlight)
        clients = sorted(df["client_id"].unique()) if len(df) else []
        many = len(clients) > 15
        for cid in clients:
            part = df[df["client_id"] == cid].sort_values("round")
            fig.add_trace(go.Scatter(
                x=part["round"], y=part[metric], mode="lines" if many else "lines+markers", name=cid,
                line=dict(width=1 if many else 2, dash="dot" if cid in marked else None),
                hovertemplate=f"{cid}: %{{y:.3f}}<extra></extra>"))
    values = [v for trace in fig.data for v in trace.y] if fig.data else []
    fig = _layout(fig, f"Per-client {METRIC_LABELS.get(metric, metric).lower()}", METRIC_LABELS.get(metric, metric),
                  percent="accuracy" in metric, values=values)
    # A vertical legend on the right never covers the title, whatever the number of clients.
    fig.update_layout(showlegend=bool(fig.data) and len(fig.data) <= 15,
                      legend=dict(orientation="v", x=1.02, xanchor="left", y=1, yanchor="top"))
    return fig


def epsilon_figure(rounds: list[dict], delta: float | None) -> go.Figure:
    """Privacy spent so far: ε at the chosen δ after each round."""
    xs = [r["round"] for r in rounds]
    ys = [r.get("epsilon") if is_number(r.get("epsilon")) else None for r in rounds]
    fig = go.Figure(go.Scatter(x=xs, y=ys, mode="lines+markers", name="ε", hovertemplate="ε = %{y:.2f}"))
    return _layout(fig, f"Privacy spent: ε at δ = {delta:g}" if delta else "Privacy spent (ε)", "ε")


def label_heatmap(counts: list[list[int]], clients: list[str], classes: list) -> go.Figure:
    """Clients x classes sample counts: how non-IID the split is, at a glance."""
    fig = go.Figure(go.Heatmap(z=counts, x=[str(c) for c in classes], y=clients, colorscale="Blues",
                               hovertemplate="%{y}, class %{x}: %{z} samples<extra></extra>",
                               colorbar=dict(title="samples")))
    fig.update_yaxes(autorange="reversed", title_text="Client")
    fig.update_xaxes(title_text="Class", type="category")
    fig.update_layout(title=dict(text="Label distribution per client", x=0), margin=dict(l=10, r=10, t=50, b=10),
                      height=max(260, min(900, 22 * len(clients) + 120)))
    return fig


def bytes_figure(clients: dict[str, dict]) -> go.Figure:
    ids = sorted(clients)
    fig = go.Figure([
        go.Bar(name="Sent to client", x=ids, y=[clients[c].get("bytes_sent") or 0 for c in ids]),
        go.Bar(name="Received from client", x=ids, y=[clients[c].get("bytes_received") or 0 for c in ids]),
    ])
    fig.update_layout(barmode="group", title=dict(text="Bytes exchanged", x=0), height=320,
                      margin=dict(l=10, r=10, t=50, b=10), legend=dict(orientation="h", y=1.0, yanchor="bottom"))
    fig.update_yaxes(title_text="Bytes")
    return fig


def compare_figure(curves: dict[str, pd.DataFrame], metric: str) -> go.Figure:
    """Overlay one metric of several runs (label -> metrics.csv frame)."""
    fig = go.Figure()
    for label, df in curves.items():
        if metric in df and len(df):
            fig.add_trace(go.Scatter(x=df["round"], y=df[metric], mode="lines+markers", name=label))
    return _layout(fig, f"{METRIC_LABELS.get(metric, metric)} by run", METRIC_LABELS.get(metric, metric),
                   percent=metric != "loss", height=380)


def metrics_table(rounds: list[dict]) -> pd.DataFrame:
    """Per-round numbers as people read them."""
    if not rounds:
        return pd.DataFrame(columns=["Round", "Accuracy", "Loss", "Macro F1", "Clients", "Failures", "Seconds"])
    df = pd.DataFrame(rounds)
    out = pd.DataFrame({
        "Round": df["round"],
        "Accuracy": df["accuracy"].astype(float).round(4),
        "Loss": df["loss"].astype(float).round(4),
        "Macro F1": df["f1_macro"].astype(float).round(4),
        "Clients": df["n_fit_clients"],
        "Failures": df["n_failures"],
        "Seconds": df["duration_s"].astype(float).round(2),
        "KB sent": (df["bytes_sent"] / 1024).round(1),
        "KB received": (df["bytes_received"] / 1024).round(1),
    })
    if "epsilon" in df and df["epsilon"].notna().any():
        out["ε"] = pd.to_numeric(df["epsilon"], errors="coerce").round(2)
    return out


def events_table(events: list[dict], limit: int = 300) -> pd.DataFrame:
    """The event log, newest first, one readable line per event."""
    import time as _time

    rows = []
    for e in reversed(events[-limit:]):
        detail = {k: v for k, v in e.items() if k not in ("type", "t", "client_id")}
        if e.get("type") == "round":
            text = (f"round {e.get('round')}: accuracy {_fmt(e.get('accuracy'))}, {e.get('n_fit_clients')} clients, "
                    f"{e.get('n_failures')} failed")
        elif e.get("type") == "client_result":
            text = f"round {e.get('round')}: {e.get('status')}, train acc {_fmt(e.get('train_accuracy'))}"
        else:
            text = ", ".join(f"{k}={_short(v)}" for k, v in detail.items())
        rows.append({"Time": _time.strftime("%H:%M:%S", _time.localtime(e.get("t", 0))), "Event": e.get("type"),
                     "Client": e.get("client_id", ""), "Detail": text})
    return pd.DataFrame(rows, columns=["Time", "Event", "Client", "Detail"])


def pct_or_dash(value: Any) -> str:
    return f"{100 * value:.1f}%" if is_number(value) else "–"


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if is_number(value) else "–"


def _short(value: Any) -> str:
    text = f"{value:.4g}" if is_number(value) and isinstance(value, float) else str(value)
    return text if len(text) <= 80 else text[:77] + "..."
