"""Plotly figures for the pages: pure functions of run data, no Streamlit.

Colours come from the active Streamlit theme (light or dark); only reference
lines get a fixed mid-grey that reads on both backgrounds.
"""

from __future__ import annotations

from typing import Any, Iterable

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from fl.runs.for_pages import describe_event
from ui.format import is_number

REFERENCE_COLOUR = "#8c8c8c"
METRIC_LABELS = {"accuracy": "Accuracy", "loss": "Loss", "f1_macro": "Macro F1",
                 "train_accuracy": "Training accuracy", "train_loss": "Training loss",
                 "eval_accuracy": "Global model's accuracy on the client's data",
                 "eval_loss": "Global model's loss on the client's data"}


def accuracy_range(values: Iterable[float]) -> list[float]:
    """A y range for accuracies that always reaches 100 % and never exaggerates a small change.

    From a little below the lowest value (a multiple of 10 %) to 100 %, at
    least 20 points tall: 99 % to 100 % is not drawn as a cliff, and an
    accuracy of 0 is not drawn on a -100 %..100 % axis.
    """
    finite = [v for v in values if is_number(v)]
    low = min(finite) if finite else 0.0
    bottom = max(0.0, math.floor((low - 0.05) * 10) / 10)
    return [min(bottom, 0.8), 1.02]


def round_axis_spec(total_rounds: int | None, fixed_range: bool = True) -> dict:
    """Whole-number round ticks (never 1.5), over the run's full length when it is known: an x axis."""
    last = max(1, total_rounds or 1)
    axis = {"title": {"text": "Round"}, "tick0": 1, "dtick": max(1, math.ceil(last / 10)), "tickformat": "d"}
    if fixed_range:
        axis["range"] = [0.5, last + 0.5]
    return axis


def round_axis(fig: go.Figure, total_rounds: int | None, fixed_range: bool = True) -> None:
    fig.update_layout(xaxis=round_axis_spec(total_rounds, fixed_range))


def last_round(traces: Iterable[dict]) -> int | None:
    rounds = [x for trace in traces for x in (trace.get("x") if trace.get("x") is not None else ()) if is_number(x)]
    return int(max(rounds)) if rounds else None


def layout_spec(title: str, y_title: str, *, percent: bool = False, height: int = 340, values: Iterable[float] = (),
                total_rounds: int | None = None, last: int | None = None) -> dict:
    """The layout of a per-round chart as one nested dict (``last``: the last round drawn, when the run's
    length is not known). The live view redraws its charts every second: a figure built in one step from
    dicts (``figure``) costs a fifth of one assembled by ``add_trace`` and ``update_*`` calls."""
    yaxis: dict = {"title": {"text": y_title}}
    if percent:
        yaxis.update(tickformat=".0%", range=accuracy_range(values))
    return {"title": {"text": title, "x": 0, "xanchor": "left"}, "height": height,
            "margin": {"l": 10, "r": 10, "t": 50, "b": 10}, "hovermode": "x unified",
            "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "right", "x": 1},
            "xaxis": round_axis_spec(total_rounds or last, fixed_range=total_rounds is not None), "yaxis": yaxis}


def figure(traces: list[dict], layout: dict) -> go.Figure:
    """A figure from plain trace and layout dicts, validated once."""
    return go.Figure({"data": traces, "layout": layout})


def _layout(fig: go.Figure, title: str, y_title: str, *, percent: bool = False, height: int = 340,
            values: Iterable[float] = (), total_rounds: int | None = None) -> go.Figure:
    """``layout_spec`` applied to a figure built trace by trace."""
    traces = [{"x": trace.x} for trace in fig.data]
    fig.update_layout(layout_spec(title, y_title, percent=percent, height=height, values=values,
                                  total_rounds=total_rounds, last=last_round(traces)))
    return fig


# The baselines drawn as reference lines: key in the baselines, label, dash.
BASELINE_LINES = (("centralized", "Centralized", "dash"), ("local_only", "Local only (mean)", "dot"),
                  ("majority", "Majority class", "dashdot"))


def global_metric_figure(rounds: list[dict], metric: str, baselines: dict | None = None,
                         total_rounds: int | None = None) -> go.Figure:
    """The global model's metric per round, with the baselines as reference lines."""
    xs = [r["round"] for r in rounds]
    ys = [r.get(metric) if is_number(r.get(metric)) else None for r in rounds]
    traces = [{"type": "scatter", "x": xs, "y": ys, "mode": "lines+markers", "name": "Federated (global model)",
               "hovertemplate": "%{y:.3f}" if metric == "loss" else "%{y:.1%}"}]
    shapes: list[dict] = []
    notes: list[dict] = []
    curve = [y for y in ys if y is not None]
    # A loss baseline far above the curve (local models that never saw some
    # classes) would flatten it: keep the axis on the curve and say so.
    ceiling = 1.6 * max(curve) if metric == "loss" and curve else None
    for key, label, dash in BASELINE_LINES:
        value = ((baselines or {}).get(key) or {}).get(metric)
        if not is_number(value):
            continue
        text = f"{label} {value:.1%}" if metric != "loss" else f"{label} {value:.3f}"
        if ceiling is not None and value > ceiling:
            notes.append({"text": f"{text} (above the chart)", "xref": "paper", "yref": "paper", "x": 1, "y": 1,
                          "xanchor": "right", "yanchor": "top", "showarrow": False,
                          "font": {"color": REFERENCE_COLOUR}})
            continue
        # A shape and a label: half the cost of add_hline (which walks the subplots), and this is redrawn each second.
        shapes.append({"type": "line", "xref": "paper", "x0": 0, "x1": 1, "yref": "y", "y0": value, "y1": value,
                       "line": {"color": REFERENCE_COLOUR, "dash": dash, "width": 1.5}})
        notes.append({"text": text, "xref": "paper", "x": 1, "yref": "y", "y": value, "xanchor": "right",
                      "showarrow": False, "yanchor": "top" if metric != "loss" else "bottom",
                      "font": {"color": REFERENCE_COLOUR}})
    references = [((baselines or {}).get(k) or {}).get(metric) for k, _, _ in BASELINE_LINES]
    layout = layout_spec(f"Global {METRIC_LABELS.get(metric, metric).lower()}", METRIC_LABELS.get(metric, metric),
                         percent=metric != "loss", values=curve + [v for v in references if is_number(v)],
                         total_rounds=max(total_rounds or 0, len(xs)) or None, last=last_round(traces))
    if shapes:
        layout["shapes"] = shapes
    if notes:
        layout["annotations"] = notes
    if ceiling is not None:
        layout["yaxis"]["range"] = [0, ceiling]
    elif metric == "loss" and not curve:  # nothing yet: an empty axis from 0, not plotly's -1..4
        layout["yaxis"]["range"] = [0, 1]
    return figure(traces, layout)


def one_shot_figure(final: dict, baselines: dict | None, metric: str, method: str) -> go.Figure:
    """A one-round run (stacking, voting, naive Bayes): bars beat a one-point line."""
    labels = [f"Federated ({method})"] + [label for _, label, _ in BASELINE_LINES]
    values = [final.get(metric)] + [((baselines or {}).get(key) or {}).get(metric) for key, _, _ in BASELINE_LINES]
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
    """Per client: the global model on its data, and the test accuracy of its model alone."""
    rows = sorted((r for r in client_rows if r.get("eval_accuracy") is not None or r.get("status") == "ok"),
                  key=lambda r: r["client_id"])
    ids = [r["client_id"] for r in rows]
    fig = go.Figure()
    if any(r.get("eval_accuracy") is not None for r in rows):
        fig.add_trace(go.Bar(name="Global model on the client's data", x=ids,
                             y=[r.get("eval_accuracy") for r in rows]))
    else:
        fig.add_trace(go.Bar(name="Training accuracy", x=ids, y=[r.get("train_accuracy") for r in rows]))
    if local_only:
        fig.add_trace(go.Bar(name="Client's own model on the test split", x=ids, y=[local_only.get(c) for c in ids]))
    fig.update_layout(barmode="group", title=dict(text="Per-client accuracy", x=0), height=340,
                      margin=dict(l=10, r=10, t=50, b=10), legend=dict(orientation="h", y=1.0, yanchor="bottom"))
    fig.update_yaxes(tickformat=".0%", range=[0, 1.05])
    fig.update_xaxes(type="category")
    return fig


MAX_CLIENT_LINES = 20  # above this, per-client curves become a percentile band
MAX_HEATMAP_CLIENTS = 50  # above this, the split is drawn as distributions (and the first clients' heatmap)


def client_band_figure(rounds: list[dict], total_rounds: int | None = None) -> go.Figure:
    """The global model on the clients' held-out rows, per round: 10th to 90th percentile, median, worst.

    Drawn from the round records alone (fl.federation.round_stats.client_spread),
    so a thousand clients cost what ten do.
    """
    def series(key: str) -> list:
        return [r.get(key) if is_number(r.get(key)) else None for r in rounds]

    xs = [r["round"] for r in rounds]
    traces = _band_traces(xs, series("client_accuracy_p10"), series("client_accuracy_median"),
                          series("client_accuracy_p90"), series("worst_client_accuracy"), ".1%")
    values = [v for key in ("worst_client_accuracy", "client_accuracy_p90") for v in series(key) if v is not None]
    label = METRIC_LABELS["eval_accuracy"]
    layout = layout_spec(f"{label} across clients", label, percent=True, values=values, total_rounds=total_rounds,
                         last=last_round(traces))
    layout["legend"] = dict(RIGHT_LEGEND)
    return figure(traces, layout)


# A vertical legend on the right never covers the title, whatever the number of clients.
RIGHT_LEGEND = {"orientation": "v", "x": 1.02, "xanchor": "left", "y": 1.0, "yanchor": "top"}


def _band_traces(xs: Any, p10: Any, p50: Any, p90: Any, worst: Any, fmt: str) -> list[dict]:
    """A 10th-90th percentile band, the median and the worst client, per round."""
    return [
        {"type": "scatter", "x": xs, "y": p90, "mode": "lines", "line": {"width": 0}, "name": "90th percentile",
         "showlegend": False, "hovertemplate": f"90th: %{{y:{fmt}}}<extra></extra>"},
        {"type": "scatter", "x": xs, "y": p10, "mode": "lines", "line": {"width": 0}, "fill": "tonexty",
         "name": "10th to 90th percentile of clients", "hovertemplate": f"10th: %{{y:{fmt}}}<extra></extra>"},
        {"type": "scatter", "x": xs, "y": p50, "mode": "lines+markers", "name": "median client",
         "hovertemplate": f"median: %{{y:{fmt}}}<extra></extra>"},
        {"type": "scatter", "x": xs, "y": worst, "mode": "lines", "name": "worst client",
         "line": {"dash": "dot", "color": REFERENCE_COLOUR}, "hovertemplate": f"worst: %{{y:{fmt}}}<extra></extra>"},
    ]


def split_overview_figures(counts: list[list[int]], clients: list[str], classes: list) -> list[go.Figure]:
    """For many clients: how many rows each holds, how many classes each holds, and the first clients' heatmap."""
    matrix = np.asarray(counts)
    rows = matrix.sum(axis=1)
    width = max(1, int(np.ceil((int(rows.max(initial=0)) + 1) / 40)))  # whole rows per bin, axis from zero
    sizes = go.Figure(go.Histogram(x=rows, xbins=dict(start=-0.5, end=int(rows.max(initial=0)) + 0.5, size=width),
                                   hovertemplate="%{x} rows: %{y} clients<extra></extra>"))
    sizes.update_layout(title=dict(text=f"Rows per client ({len(clients):,} clients)", x=0), height=300,
                        margin=dict(l=10, r=10, t=50, b=10))
    sizes.update_xaxes(title_text="Training rows", rangemode="tozero")
    sizes.update_yaxes(title_text="Clients", rangemode="tozero")
    held = (matrix > 0).sum(axis=1)
    spread = go.Figure(go.Histogram(x=held, xbins=dict(start=0.5, end=len(classes) + 0.5, size=1),
                                    hovertemplate="%{x} classes: %{y} clients<extra></extra>"))
    spread.update_layout(title=dict(text=f"Classes each client holds (of {len(classes)})", x=0), height=300,
                         margin=dict(l=10, r=10, t=50, b=10))
    spread.update_xaxes(title_text="Classes held", dtick=1)
    spread.update_yaxes(title_text="Clients", rangemode="tozero")
    first = label_heatmap(counts[:MAX_HEATMAP_CLIENTS], clients[:MAX_HEATMAP_CLIENTS], classes)
    first.update_layout(title=dict(text=f"Label distribution of the first {MAX_HEATMAP_CLIENTS} clients"))
    return [sizes, spread, first]


def client_metric_figure(client_rows: list[dict], metric: str = "eval_accuracy", highlight: Iterable[str] = (),
                         total_rounds: int | None = None) -> go.Figure:
    """Each client's metric per round: one line per client, or a 10th-90th percentile band for many.

    ``eval_accuracy`` is the global model of the round on the client's own
    data: where non-IID data hurts, a client's line falls below the others.
    """
    df = _client_frame(client_rows, metric)
    clients = sorted(df["client_id"].unique()) if len(df) else []
    traces: list[dict] = []
    if len(clients) > MAX_CLIENT_LINES:
        traces = _band(df, metric)
    else:
        marked = set(highlight)
        for cid, part in df.sort_values("round", kind="stable").groupby("client_id", sort=True):
            line = {"width": 2, "dash": "dot"} if cid in marked else {"width": 2}
            traces.append({"type": "scatter", "x": part["round"].to_numpy(), "y": part[metric].to_numpy(),
                           "mode": "lines+markers", "name": cid, "line": line,
                           "hovertemplate": f"{cid}: %{{y:.3f}}<extra></extra>"})
    values = df[metric].tolist() if len(df) else []
    label = METRIC_LABELS.get(metric, metric)
    layout = layout_spec(f"{label} per client", label, percent="accuracy" in metric, values=values,
                         total_rounds=total_rounds, last=last_round(traces))
    layout.update(showlegend=bool(traces), legend=dict(RIGHT_LEGEND))
    return figure(traces, layout)


def _client_frame(client_rows: list[dict], metric: str) -> pd.DataFrame:
    if not client_rows:
        return pd.DataFrame(columns=["round", "client_id", metric])
    df = pd.DataFrame(client_rows)
    if metric not in df:
        return pd.DataFrame(columns=["round", "client_id", metric])
    df = df[pd.to_numeric(df[metric], errors="coerce").notna()]
    return df.assign(**{metric: df[metric].astype(float)})


def _band(df: pd.DataFrame, metric: str) -> list[dict]:
    """10th/50th/90th percentile across clients per round, and the worst client."""
    stats = df.groupby("round")[metric].agg(
        p10=lambda v: float(np.percentile(v, 10)), p50="median", p90=lambda v: float(np.percentile(v, 90)),
        worst="min", n="count").reset_index()
    return _band_traces(stats["round"].to_numpy(), stats["p10"].to_numpy(), stats["p50"].to_numpy(),
                        stats["p90"].to_numpy(), stats["worst"].to_numpy(), ".3f")


def class_balance_figure(class_counts: dict) -> go.Figure:
    """Rows per class of the label column."""
    labels = [str(k) for k in class_counts]
    fig = go.Figure(go.Bar(x=labels, y=list(class_counts.values()), hovertemplate="%{x}: %{y} rows<extra></extra>"))
    fig.update_layout(title=dict(text="Rows per class", x=0), height=300, margin=dict(l=10, r=10, t=50, b=10))
    fig.update_xaxes(type="category", title_text="Class")
    fig.update_yaxes(title_text="Rows", rangemode="tozero")
    return fig


def epsilon_figure(rounds: list[dict], delta: float | None) -> go.Figure:
    """Privacy spent so far: ε at the chosen δ after each round."""
    xs = [r["round"] for r in rounds]
    ys = [r.get("epsilon") if is_number(r.get("epsilon")) else None for r in rounds]
    traces = [{"type": "scatter", "x": xs, "y": ys, "mode": "lines+markers", "name": "ε", "hovertemplate": "ε = %{y:.2f}"}]
    return figure(traces, layout_spec(f"Privacy spent: ε at δ = {delta:g}" if delta else "Privacy spent (ε)", "ε",
                                      last=last_round(traces)))


def label_heatmap(counts: list[list[int]], clients: list[str], classes: list) -> go.Figure:
    """Clients x classes sample counts: how non-IID the split is, at a glance."""
    top = max((max(row) for row in counts if row), default=1) or 1
    fig = go.Figure(go.Heatmap(z=counts, x=[str(c) for c in classes], y=clients, colorscale="Blues", zmin=0, zmax=top,
                               hovertemplate="%{y}, class %{x}: %{z} samples<extra></extra>",
                               colorbar=dict(title="samples")))
    fig.update_yaxes(autorange="reversed", title_text="Client", type="category")  # sites named 1, 2, 10 stay names
    fig.update_xaxes(title_text="Class", type="category")
    fig.update_layout(title=dict(text="Label distribution per client", x=0), margin=dict(l=10, r=10, t=50, b=10),
                      height=max(260, min(900, 22 * len(clients) + 120)))
    return fig


def bytes_figure(clients: dict[str, dict]) -> go.Figure:
    ids = sorted(clients)
    if len(ids) > MAX_HEATMAP_CLIENTS:  # a thousand pairs of bars say nothing: how the bytes are spread
        fig = go.Figure([go.Histogram(x=[clients[c].get("bytes_sent") or 0 for c in ids], name="Sent to client"),
                         go.Histogram(x=[clients[c].get("bytes_received") or 0 for c in ids],
                                      name="Received from client")])
        fig.update_layout(barmode="overlay", title=dict(text=f"Bytes exchanged by each of {len(ids):,} clients",
                                                        x=0), height=320, margin=dict(l=10, r=10, t=50, b=10))
        fig.update_traces(opacity=0.6)
        fig.update_xaxes(title_text="Bytes")
        fig.update_yaxes(title_text="Clients", rangemode="tozero")
        return fig
    fig = go.Figure([
        go.Bar(name="Sent to client", x=ids, y=[clients[c].get("bytes_sent") or 0 for c in ids]),
        go.Bar(name="Received from client", x=ids, y=[clients[c].get("bytes_received") or 0 for c in ids]),
    ])
    fig.update_layout(barmode="group", title=dict(text="Bytes exchanged", x=0), height=320,
                      margin=dict(l=10, r=10, t=50, b=10), legend=dict(orientation="h", y=1.0, yanchor="bottom"))
    fig.update_yaxes(title_text="Bytes", rangemode="tozero")
    fig.update_xaxes(type="category")
    if not any(clients[c].get("bytes_sent") or clients[c].get("bytes_received") for c in ids):
        fig.update_yaxes(range=[0, 1024])  # nothing sent yet: an empty axis from 0, not -1..1
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
        "Macro F1": pd.to_numeric(df["f1_macro"], errors="coerce").round(4),
        "Balanced accuracy": pd.to_numeric(df.get("balanced_accuracy", pd.Series(dtype=float)),
                                           errors="coerce").round(4),
        "Clients": df["n_fit_clients"],
        "Failures": df["n_failures"],
        "Seconds": df["duration_s"].astype(float).round(2),
        "KB sent": (df["bytes_sent"] / 1024).round(1),
        "KB received": (df["bytes_received"] / 1024).round(1),
    })
    if "worst_client_accuracy" in df and df["worst_client_accuracy"].notna().any():
        out.insert(4, "Worst client", pd.to_numeric(df["worst_client_accuracy"], errors="coerce").round(4))
    if "epsilon" in df and df["epsilon"].notna().any():
        eps = pd.to_numeric(df["epsilon"], errors="coerce").round(2)
        out["ε"] = eps.map(lambda v: "∞" if v == float("inf") else v) if (eps == float("inf")).any() else eps
    return out


def events_table(events: list[dict], limit: int = 300) -> pd.DataFrame:
    """The event log, newest first, one sentence per event (the same sentences as the command line)."""
    import time as _time

    rows = []
    for e in reversed(events[-limit:]):
        text = describe_event(e)
        if text is None:
            continue
        rows.append({"Time": _time.strftime("%H:%M:%S", _time.localtime(e.get("t", 0))), "Event": e.get("type"),
                     "Client": e.get("client_id", ""), "Detail": text})
    return pd.DataFrame(rows, columns=["Time", "Event", "Client", "Detail"])


def importance_figure(names: list[str], importances: list[float], top: int = 15) -> go.Figure:
    """The features the model leans on most: each one's share of the total split gain (the top ``top``)."""
    order = sorted(range(len(importances)), key=lambda i: importances[i], reverse=True)[:top]
    order = [i for i in order if importances[i] > 0][::-1]  # the largest at the top of a horizontal bar chart
    fig = go.Figure(go.Bar(x=[importances[i] for i in order], y=[str(names[i]) for i in order], orientation="h",
                           hovertemplate="%{y}: %{x:.1%} of the gain<extra></extra>"))
    fig.update_layout(title=dict(text="Feature importances (share of the trees' split gain)", x=0),
                      height=max(260, 24 * len(order) + 100), margin=dict(l=10, r=10, t=50, b=10))
    fig.update_xaxes(tickformat=".0%", title_text="share of the gain")
    fig.update_yaxes(type="category")
    return fig
