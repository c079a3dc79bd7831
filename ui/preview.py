"""The Run page before Start: what the data is, what will be done to it, how it will be split.

A user sees, before training, every column the run will use and how
(filled, one-hot encoded, dropped), the balance of the classes, the
warnings (a continuous label, a missing header), and the clients x classes
split the run will use.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from fl.runs.config import RunConfig
from ui import charts, experiment_charts, widgets
from ui.clients import draw_split, split_preview
from ui.sidebar import csv_report

KIND_LABELS = {"target": "label", "numeric": "number", "category": "category", "dropped": "not used",
               "excluded": "excluded"}

INTRO = (
    "Pick a **dataset**, how it is **split** across clients, a **model** and an **aggregation** method in the "
    "sidebar, then press **Start**. A real server and one client per partition talk over local TCP sockets; each "
    "client trains only on its own data and sends back parameters, never data.\n\n"
    "You will see the global model's accuracy and loss per round beside three references: **centralized** (the "
    "same model trained on all the data pooled), **local only** (each client alone) and **majority class** "
    "(always answering the most frequent label), and how well the global "
    "model does on each client's own data. The **Clients** page shows each client in detail."
)


def new_run_view(config: RunConfig | None) -> None:
    """Intro, the CSV report (for an uploaded file) and the split preview of the sidebar's settings."""
    st.markdown(INTRO)
    if st.session_state.get(widgets.key("dataset")) == "csv":
        path = st.session_state.get(widgets.key("csv_path"))
        if path:
            target = st.session_state.get(widgets.key("target"))
            bins = st.session_state.get(widgets.key("target_bins")) or 0
            by_column = config is not None and config.partition == "column"
            keep = ",".join(st.session_state.get(widgets.key("keep_columns")) or [])
            csv_section(csv_report(path, target, int(bins), config.split_column if by_column else None, keep))
    if config is None:
        return
    summary = split_preview(config.to_dict())
    if isinstance(summary, str):
        st.error(f"These settings cannot start a run: {summary}")
        return
    sizes = [sum(row) for row in summary["counts"]]
    st.subheader("How the data will be split")
    st.caption(split_caption(summary, sizes))
    draw_split(summary, "preview-heatmap")
    if config.learning_rate_at(1) is not None:
        rates = [(r, config.learning_rate_at(r)) for r in range(1, config.effective_rounds + 1)]
        st.plotly_chart(experiment_charts.learning_rate_figure(rates, config.effective_rounds, planned=True),
                        key="preview-lr")


def split_caption(summary: dict[str, Any], sizes: list[int]) -> str:
    """How many clients hold how many rows; for a column split, which column and which value each client is."""
    by = summary.get("split_column")
    if not by:
        return (f"{len(sizes)} clients holding {min(sizes)} to {max(sizes)} training rows each; the server keeps "
                "a held-out test split.")
    renamed = [f"{name} = {value}" for name, value in zip(summary["clients"], by["values"]) if name != value]
    return (f"{len(sizes)} clients, one per value of `{by['column']}`, holding {min(sizes)} to {max(sizes)} "
            "training rows each. The server first keeps a held-out test split (a stratified share of all rows); "
            f"the rest is split by `{by['column']}`, which is not a feature."
            + (f" Client names: {'; '.join(renamed)}." if renamed else ""))


def csv_section(report: Any) -> None:
    """The data report of an uploaded CSV, or why it cannot be used."""
    st.subheader("Your data")
    if isinstance(report, str):
        st.error(report)
        return
    st.caption(f"{report.n_rows:,} rows, {len(report.columns)} columns; {report.n_rows_used:,} rows have a label "
               "and are used.")
    for problem in report.problems:
        st.error(problem)
    for warning in report.warnings:
        st.warning(warning)
    for note in report.notes:
        st.info(note)
    left, right = st.columns([3, 2])
    left.dataframe(columns_frame(report.columns), hide_index=True)
    if report.class_counts:
        right.plotly_chart(charts.class_balance_figure(report.class_counts), key="preview-classes")


def _action(column: dict) -> str:
    leak = column.get("leak")
    return column["action"] + (f"; LIKELY LEAK: alone it predicts {leak:.1%} of the labels" if leak else "")


def columns_frame(columns: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([{"Column": c["column"], "Type": KIND_LABELS.get(c["kind"], c["kind"]),
                          "Missing": c["missing"], "Distinct": c["distinct"], "What the run does": _action(c)}
                         for c in columns], columns=["Column", "Type", "Missing", "Distinct", "What the run does"])
