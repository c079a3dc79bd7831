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

from ui.format import words

from fl.runs.config import ConfigError, RunConfig
from ui import charts, experiment_charts
from ui.clients_view import draw_split, split_preview
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


def start_problem(config: RunConfig) -> str | None:
    """Why these settings cannot start a run (one sentence), or None: the settings themselves, then the CSV
    (an unreadable file, a label that cannot be a class), then the split. Shown once, beside Start."""
    try:
        config.validate()
    except ConfigError as exc:
        return str(exc)
    if config.dataset == "csv" and config.csv_path:
        report = _report(config)
        if isinstance(report, str):
            return report
        if report.problems:
            return report.problems[0]
    summary = split_preview(config.to_dict())
    return summary if isinstance(summary, str) else None


def _report(config: RunConfig) -> Any:
    split = config.split_column if config.partition == "column" else None
    return csv_report(config.csv_path, config.target, int(config.target_bins or 0), split, config.keep_columns or "")


def new_run_view(config: RunConfig | None, problem: str | None = None) -> None:
    """Intro, the CSV report (for an uploaded file) and the split preview of the sidebar's settings;
    ``problem`` (beside Start already) is not said again."""
    st.markdown(INTRO)
    if config is not None and config.dataset == "csv" and config.csv_path:
        csv_section(_report(config), problem)
    if config is None or problem is not None:
        return
    summary = split_preview(config.to_dict())
    if isinstance(summary, str):
        st.error(f"These settings cannot start a run: {words(summary)}")
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


def csv_section(report: Any, problem: str | None = None) -> None:
    """The data report of an uploaded CSV, or why it cannot be used (``problem``: said beside Start)."""
    st.subheader("Your data")
    if isinstance(report, str):
        if report != problem:
            st.error(words(report))
        return
    st.caption(f"{report.n_rows:,} rows, {len(report.columns)} columns; {report.n_rows_used:,} rows have a label "
               "and are used.")
    for one in report.problems:
        if one != problem:
            st.error(words(one))
    for warning in report.warnings:
        st.warning(words(warning))
    for note in report.notes:
        st.info(words(note))
    st.dataframe(columns_frame(report.columns), hide_index=True,  # the full width: the last column says why
                 column_config={"What the run does": st.column_config.TextColumn(width="large")})
    if report.class_counts:
        st.plotly_chart(charts.class_balance_figure(report.class_counts), key="preview-classes")


def _action(column: dict) -> str:
    leak = column.get("leak")
    return column["action"] + (f"; LIKELY LEAK: alone it predicts {leak:.1%} of the labels" if leak else "")


def columns_frame(columns: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([{"Column": c["column"], "Type": KIND_LABELS.get(c["kind"], c["kind"]),
                          "Missing": c["missing"], "Distinct": c["distinct"], "What the run does": words(_action(c))}
                         for c in columns], columns=["Column", "Type", "Missing", "Distinct", "What the run does"])
