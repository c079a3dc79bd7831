"""Pieces of the Clients page: status table, split preview, per-client charts."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from fl.runs.config import ConfigError, RunConfig
from fl.runs.for_pages import FLError
from fl.runs.build import client_ids_for, clients_of_split, data_inputs, load_data
from fl.runs.simulation import partition_summary
from ui import charts
from ui.format import pct, size, words

# What a flag means and what it does not (the rule: fl/federation/scrutiny.py), beside the scrutiny heatmap.
FLAG_MEANING = (
    "**What a flag means.** In that round the client's update was far from the others': its distance to the "
    "median update exceeded the typical distance by more robust standard deviations than clients with similar "
    "data exceed it in about one round in 50, and was at least 1.8 to 2.9 times the typical distance. The line "
    "(9.5 for 5 updates, 5.0 for 10, about 4 from 20 on) is higher for few clients, whose typical spread is "
    "itself uncertain; an update closer than most is never flagged.\n\n"
    "**What it does not mean.** A flag does not prove an attack: a site whose data really differs (another "
    "store's customers, a small clinic) can be that far, round after round. Nobody is excluded or down-weighted "
    "because of a flag, and the run goes on exactly as without it. Limiting what an outlying update can do is "
    "the robust aggregation rules' job (median, trimmed mean, Krum: the Run page's aggregation), flag or not.")
FLAGGED_ROUNDS_HELP = ("Rounds in which this client's update was far from the others' (the heatmap below). A flag "
                       "does not prove an attack, and nobody is excluded because of one.")

STATUS_ICONS = {"waiting": "⏳ waiting", "connected": "🟢 connected", "training": "🔵 training",
                "evaluating": "🔵 evaluating", "idle": "⚪ idle", "gone": "⚫ gone", "finished": "✅ finished"}


def _classes(n: Any) -> str:
    """How many labels a site holds (from its data summary): a site with one class trains too."""
    return "–" if n is None else "1 class" if n == 1 else f"{n} classes"


def data_report_tables(report: dict) -> dict[str, pd.DataFrame]:
    """The run's data report (data_report.json) as tables: sites, columns, left out, leak warnings."""
    sites = pd.DataFrame([{"Site": s.get("client_id"), "Rows": s.get("rows"), "Classes": _classes(s.get("n_classes")),
                           "Class balance": ", ".join(f"{k}: {v}" for k, v in (s.get("class_counts") or {}).items())}
                          for s in report.get("sites") or []])
    columns = pd.DataFrame([{"Column": c.get("column"), "Used": "yes" if c.get("used") else "no",
                             "Kind": c.get("kind"), "Missing values": c.get("missing"), "What / why": c.get("reason")}
                            for c in report.get("columns") or []])
    excluded = pd.DataFrame([{"Site": e.get("site"), "Column": e.get("column"), "Why": e.get("reason")}
                             for e in report.get("excluded") or []])
    leaks = pd.DataFrame({"Warning": list(report.get("leak_warnings") or [])})
    return {"sites": sites, "columns": columns, "excluded": excluded, "leaks": leaks}


def status_table(clients: dict[str, dict]) -> pd.DataFrame:
    rows = []
    for cid in sorted(clients):
        c = clients[cid]
        rows.append({"Client": cid, "Status": STATUS_ICONS.get(c.get("status"), c.get("status")),
                     "Role (set by you)": c.get("role") or "honest",
                     "Samples": c.get("n_samples"), "Classes": _classes(c.get("n_classes")),
                     "Rounds trained": c.get("rounds_trained", 0),
                     "Failures": c.get("failures", 0),
                     "Global model on its data": pct(c.get("eval_accuracy")),
                     "Last train accuracy": pct(c.get("last_accuracy")),
                     "Flagged rounds": c.get("flagged_rounds", 0),
                     "Converged": {True: "yes", False: "no"}.get(c.get("converged"), "–"),
                     "Sent": size(c.get("bytes_sent")), "Received": size(c.get("bytes_received"))})
    return pd.DataFrame(rows)


def split_preview(config_dict: dict[str, Any]) -> dict[str, Any] | str:
    """The clients x classes counts a config would produce, or an error sentence.

    Pure and seeded, so the preview is exactly the split a run will use.
    Cached on the data settings only: changing the model or the rounds
    does not split the data again.
    """
    try:
        config = RunConfig.from_dict(config_dict).validate()
    except ConfigError as exc:
        return str(exc)
    return _split_summary(data_inputs(config), config)


@st.cache_data(show_spinner="Splitting the data…", max_entries=32)
def _split_summary(inputs: dict[str, Any], _config: RunConfig) -> dict[str, Any] | str:
    """``inputs`` is the cache key (``data_inputs``); ``_config``, which Streamlit does not hash, is read."""
    try:
        data = load_data(_config)
        clients_of_split(_config, data)  # a column split's count against min_clients, Krum's f, ...
    except FLError as exc:
        return str(exc)
    return partition_summary(data, client_ids_for(data))


def draw_split(summary: Any, key: str) -> None:
    """The clients x classes picture of a split: a heatmap, or for many clients their distributions."""
    if isinstance(summary, str):
        st.error(f"This split cannot be made: {words(summary)}")
        return
    if not summary:
        return
    if len(summary["clients"]) <= charts.MAX_HEATMAP_CLIENTS:
        st.plotly_chart(charts.label_heatmap(summary["counts"], summary["clients"], summary["classes"]), key=key)
        return
    sizes, held, first = charts.split_overview_figures(summary["counts"], summary["clients"], summary["classes"])
    left, right = st.columns(2)
    left.plotly_chart(sizes, key=f"{key}-sizes")
    right.plotly_chart(held, key=f"{key}-held")
    st.plotly_chart(first, key=f"{key}-first")


def filter_clients(clients: dict[str, dict], text: str, statuses: list[str]) -> dict[str, dict]:
    """The clients whose id contains ``text`` and whose status is among ``statuses`` (all when empty)."""
    text = text.strip().lower()
    return {cid: c for cid, c in clients.items()
            if text in cid.lower() and (not statuses or str(c.get("status")) in statuses)}


def client_rounds_frame(client_rows: list[dict]) -> pd.DataFrame:
    if not client_rows:
        return pd.DataFrame(columns=["round", "client_id", "train_accuracy", "train_loss", "train_time_s"])
    df = pd.DataFrame(client_rows)
    keep = [c for c in ("round", "client_id", "status", "n_samples", "eval_accuracy", "eval_loss", "train_accuracy",
                        "train_loss", "train_time_s", "epoch_losses", "converged", "samples_used", "update_norm",
                        "update_cosine", "update_z", "z_threshold", "flagged", "reason") if c in df]
    df = df[keep].copy()
    if "epoch_losses" in df:  # the client's losses per local epoch, as it reported them
        df["epoch_losses"] = df["epoch_losses"].map(
            lambda v: ", ".join(f"{x:.3g}" if isinstance(x, float) else "–" for x in v) if isinstance(v, list) else v)
    return df
