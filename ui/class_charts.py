"""Per-class views: a round's confusion matrix and each class's recall per round.

The counts come from the run (each round's ``confusion``: the server's own
test split, or the sum of the sites' counts), so what is drawn is what the
metrics were computed from. A class with no rows (a site that does not hold
it) is drawn as absent, never as a recall of 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from fl.runs.for_pages import per_class
from ui.charts import figure, layout_spec, round_axis_spec

ABSENT = "absent (no rows)"


def rounds_with_counts(rounds: list[dict]) -> list[int]:
    return [r["round"] for r in rounds if r.get("confusion")]


def confusion_figure(counts: list[list[int]], classes: list[Any], title: str) -> go.Figure:
    """Rows: the true class; columns: the predicted one. Colour: the share of the row (the recall on the
    diagonal); each cell says its count. A row without rows is grey and says the class is absent."""
    m = np.asarray(counts, dtype=np.float64)
    labels = [str(c) for c in classes]
    support = m.sum(axis=1, keepdims=True)
    share = np.divide(m, support, out=np.full_like(m, np.nan), where=support > 0)
    text = [[f"{int(v):,}" if s[0] > 0 else "" for v in row] for row, s in zip(m, support)]
    heatmap = {"type": "heatmap", "z": share, "x": labels, "y": labels, "text": text, "texttemplate": "%{text}",
               "colorscale": "Blues", "zmin": 0, "zmax": 1,
               "colorbar": {"title": {"text": "share of<br>the true<br>class"}, "tickformat": ".0%"},
               "hovertemplate": "true %{y}, predicted %{x}: %{text} rows (%{z:.1%} of the class)<extra></extra>"}
    layout = layout_spec(title, "true class", height=max(300, 60 + 40 * len(labels)))
    absent = [{"x": labels[len(labels) // 2], "y": labels[i], "text": ABSENT, "showarrow": False,
               "font": {"color": "#666"}} for i, s in enumerate(support[:, 0]) if s == 0]
    if absent:
        layout["annotations"] = absent
    layout["xaxis"].update(title={"text": "predicted class"}, type="category", side="bottom")
    layout["yaxis"].update(type="category", autorange="reversed")
    return figure([heatmap], layout)


def recall_frame(rounds: list[dict]) -> pd.DataFrame:
    """round, class, recall (None where the class had no rows that round)."""
    rows = []
    for r in rounds:
        confusion = r.get("confusion")
        if not confusion:
            continue
        recall = per_class(np.asarray(confusion["counts"]))["recall"]
        rows += [{"round": r["round"], "class": str(c), "recall": v} for c, v in zip(confusion["classes"], recall)]
    return pd.DataFrame(rows, columns=["round", "class", "recall"])


def recall_figure(rounds: list[dict], total_rounds: int | None) -> go.Figure:
    """Each class's recall per round: which classes the global model gets right, and which it gives up."""
    df = recall_frame(rounds)
    traces = [{"type": "scatter", "x": part["round"].to_numpy(), "y": part["recall"].to_numpy(),
               "mode": "lines+markers", "name": cls, "connectgaps": False,
               "hovertemplate": f"class {cls}, round %{{x}}: %{{y:.1%}}<extra></extra>"}
              for cls, part in df.groupby("class", sort=False)]
    layout = layout_spec("Recall of each class per round", "recall", percent=True,
                         height=max(340, 300 + 8 * len(traces)), values=df["recall"].dropna())
    layout["legend"] = {"orientation": "h", "yanchor": "top", "y": -0.22, "xanchor": "left", "x": 0,
                        "title": {"text": "class"}}
    layout["margin"]["b"] = 40
    layout["xaxis"] = round_axis_spec(total_rounds)
    return figure(traces, layout)


def per_class_table(counts: list[list[int]], classes: list[Any]) -> pd.DataFrame:
    """Precision, recall and F1 of each class, absent classes marked as such."""
    scores = per_class(np.asarray(counts))
    return pd.DataFrame({
        "Class": [str(c) for c in classes],
        "Rows": scores["support"],
        "Recall": [ABSENT if v is None else f"{100 * v:.1f} %" for v in scores["recall"]],
        "Precision": ["never predicted" if v is None else f"{100 * v:.1f} %" for v in scores["precision"]],
        "F1": ["–" if v is None else f"{v:.3f}" for v in scores["f1"]],
    })
