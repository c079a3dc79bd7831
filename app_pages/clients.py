"""Clients: who is connected, how the data is split, how the global model serves each client."""

import json

import streamlit as st

from fl.runs.config import RunConfig
from ui import charts
from ui.clients import client_rounds_frame, split_preview, status_table
from ui.format import pct
from ui.state import DRAFT_CONFIG, current_handle, store

st.title("Clients")
handle = current_handle(kind=None)


def draw_split(summary) -> None:
    if isinstance(summary, str):
        st.error(f"This split cannot be made: {summary}")
    elif summary:
        st.plotly_chart(charts.label_heatmap(summary["counts"], summary["clients"], summary["classes"]),
                        key="heatmap")


def partition_of(run_id: str):
    try:
        path = store().load(run_id).path / "partition.json"
        return json.loads(path.read_text()) if path.exists() else None
    except (FileNotFoundError, ValueError):
        return None


if handle is None:
    st.info("No run in this tab yet. This is how the data will be split with the settings on the Run page; "
            "press Start there to train.")
    draw_split(split_preview(st.session_state.get(DRAFT_CONFIG) or RunConfig().to_dict()))
    st.stop()

st.caption(f"Run `{handle.run_id}` ({handle.kind})")


def draw(snap: dict, key: str) -> None:
    n_gone = sum(c.get("status") == "gone" for c in snap["clients"].values())
    last = snap["rounds"][-1] if snap["rounds"] else {}
    c1, c2, c3, c4, c5 = st.columns(5)
    c1.metric("Clients", len(snap["clients"]))
    c2.metric("Rounds done", f"{len(snap['rounds'])} / {snap['total_rounds']}")
    c3.metric("Lost mid-run", n_gone, help="Clients that disconnected before the run ended.")
    c4.metric("Worst client", pct(last.get("worst_client_accuracy")),
              help="The global model's accuracy on the data of the client it serves worst, last round.")
    std = last.get("client_accuracy_std")
    c5.metric("Spread across clients", f"±{100 * std:.1f} pts" if isinstance(std, float) else "–",
              help="Standard deviation of the global model's accuracy over the clients' own data.")
    st.dataframe(status_table(snap["clients"]), hide_index=True)
    rows = snap["client_rows"]
    if rows and snap["total_rounds"] == 1:
        per_client = ((snap.get("baselines") or {}).get("local_only") or {}).get("per_client")
        st.plotly_chart(charts.client_bars_figure(rows, per_client), key=f"{key}-bars")
    elif rows:
        st.plotly_chart(charts.client_metric_figure(rows, "eval_accuracy", total_rounds=snap["total_rounds"]),
                        key=f"{key}-eval")
        st.caption("Each client scores the round's global model on its own data: under a non-IID split the "
                   "clients it serves worst stand out.")
        left, right = st.columns(2)
        left.plotly_chart(charts.client_metric_figure(rows, "train_accuracy", total_rounds=snap["total_rounds"]),
                          key=f"{key}-acc")
        right.plotly_chart(charts.client_metric_figure(rows, "train_loss", total_rounds=snap["total_rounds"]),
                           key=f"{key}-loss")
    if snap["clients"]:
        st.plotly_chart(charts.bytes_figure(snap["clients"]), key=f"{key}-bytes")
    with st.expander("Every client, every round"):
        st.dataframe(client_rounds_frame(rows), hide_index=True)


if handle.kind == "simulation":
    draw_split(partition_of(handle.run_id) or split_preview(handle.config.to_dict()))

if handle.done:
    draw(handle.snapshot(), "static")
else:
    @st.fragment(run_every=1.0)
    def live() -> None:
        if handle.done:
            st.rerun(scope="app")
        draw(handle.snapshot(), "live")

    live()
