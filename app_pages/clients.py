"""Clients: who is connected, how the data is split, how the global model serves each client.

Drawn for 10 clients or 1,000: the split becomes distributions, the
per-client curves a percentile band, and the table can be filtered.
"""

import json

import streamlit as st

from fl.runs.config import RunConfig
from ui import charts, class_charts, experiment_charts
from ui.clients_view import (
    FLAG_MEANING, FLAGGED_ROUNDS_HELP, STATUS_ICONS, client_rounds_frame, data_report_tables, draw_split,
    filter_clients, split_preview, status_table,
)
from ui.format import pct, words
from ui.app_state import DRAFT_CONFIG, current_handle, store

st.title("Clients")
handle = current_handle(kind=None)


def partition_of(run_id: str):
    try:
        path = store().load(run_id).path / "partition.json"
        return json.loads(path.read_text()) if path.exists() else None
    except (FileNotFoundError, ValueError):
        return None


if handle is None:
    st.info("No run in this tab yet. This is how the data will be split with the settings on the Run page; "
            "press Start there to train.")
    draw_split(split_preview(st.session_state.get(DRAFT_CONFIG) or RunConfig().to_dict()), "heatmap")
    st.stop()

st.caption(f"Run `{handle.run_id}` ({handle.kind})")
many = handle.config.clients > charts.MAX_CLIENT_LINES


def draw(snap: dict, key: str) -> None:
    n_gone = sum(c.get("status") == "gone" for c in snap["clients"].values())
    last = snap["rounds"][-1] if snap["rounds"] else {}
    c1, c2, c3, c4, c5 = st.columns(5)
    c1.metric("Clients", f"{len(snap['clients']):,}")
    c2.metric("Rounds done", f"{len(snap['rounds'])} / {snap['total_rounds']}")
    c3.metric("Lost mid-run", n_gone, help="Clients that disconnected before the run ended.")
    c4.metric("Worst client", pct(last.get("worst_client_accuracy")),
              help="The global model's accuracy on the held-out rows of the client it serves worst, last round.")
    std = last.get("client_accuracy_std")
    c5.metric("Spread across clients", f"±{100 * std:.1f} pts" if isinstance(std, float) else "–",
              help="Standard deviation of the global model's accuracy over the clients' held-out rows.")
    left, right = st.columns([3, 2])
    text = left.text_input("Find clients", key=f"{key}-find", placeholder="client id contains…")
    statuses = right.multiselect("Status", list(STATUS_ICONS), key=f"{key}-status")
    shown = filter_clients(snap["clients"], text, statuses)
    st.caption(f"{len(shown):,} of {len(snap['clients']):,} clients")
    st.dataframe(status_table(shown), hide_index=True, height=min(420, 38 + 35 * max(1, len(shown))),
                 column_config={"Flagged rounds": st.column_config.NumberColumn(help=FLAGGED_ROUNDS_HELP)})
    rows = snap["client_rows"]
    if snap["total_rounds"] == 1 and rows:
        local_only = (snap.get("baselines") or {}).get("local_only") or {}
        st.plotly_chart(charts.client_bars_figure(rows, local_only.get("per_client")), key=f"{key}-bars")
        left_out = list((local_only.get("left_out") or {}).items())
        if left_out:
            named = "; ".join(f"{cid} ({reason})" for cid, reason in left_out[:5])
            st.caption(f"No model of their own on the test split: {named}"
                       + (f"; and {len(left_out) - 5} more." if len(left_out) > 5 else "."))
    elif many and snap["rounds"]:
        st.plotly_chart(charts.client_band_figure(snap["rounds"], snap["total_rounds"]), key=f"{key}-band")
        st.caption("Each client scores the round's global model on its own held-out rows; with this many clients "
                   "the page draws their spread. Pick a client below for its own numbers.")
    elif rows:
        st.plotly_chart(charts.client_metric_figure(rows, "eval_accuracy", total_rounds=snap["total_rounds"]),
                        key=f"{key}-eval")
        st.caption("Each client scores the round's global model on its own held-out rows: under a non-IID split the "
                   "clients it serves worst stand out.")
        left, right = st.columns(2)
        left.plotly_chart(charts.client_metric_figure(rows, "train_accuracy", total_rounds=snap["total_rounds"]),
                          key=f"{key}-acc")
        right.plotly_chart(charts.client_metric_figure(rows, "train_loss", total_rounds=snap["total_rounds"]),
                           key=f"{key}-loss")
    client_confusion(snap, key)
    unjudged = [r for r in snap["rounds"] if r.get("scrutiny")]
    if unjudged:
        shown_rounds = ", ".join(str(r["round"]) for r in unjudged[:10]) + (", ..." if len(unjudged) > 10 else "")
        st.caption(f"Updates of round{'s' if len(unjudged) > 1 else ''} {shown_rounds} were not compared: "
                   f"{unjudged[-1]['scrutiny'].removeprefix('not judged: ')}.")
    heatmap = experiment_charts.scrutiny_heatmap(rows) if rows else None
    if heatmap is not None:
        st.plotly_chart(heatmap, key=f"{key}-scrutiny")
        flagged = sorted({r["client_id"] for r in rows if r.get("flagged")})
        st.caption("The server measures every update it receives: its distance to the median update, as a robust "
                   "z-score (red: farther than the others, blue: closer; ⚑ flagged). "
                   + (f"Flagged at least once: {', '.join(flagged)}." if flagged else "No update was flagged."))
        with st.expander("What a flag means, and what it does not", expanded=bool(flagged)):
            st.markdown(FLAG_MEANING)
    if snap["clients"]:
        st.plotly_chart(charts.bytes_figure(snap["clients"]), key=f"{key}-bytes")
    with st.expander("One client, every round" if many else "Every client, every round"):
        if many:
            chosen = st.selectbox("Client", sorted(shown) or sorted(snap["clients"]), key=f"{key}-one")
            rows = [r for r in handle.snapshot()["client_rows"] if r.get("client_id") == chosen]
        st.dataframe(client_rounds_frame(rows), hide_index=True)


def client_confusion(snap: dict, key: str) -> None:
    """One client's own confusion matrix for a chosen round: how the global model does on its rows."""
    kept = snap.get("client_confusion") or {}
    if not kept:
        return
    classes = next((r["confusion"]["classes"] for r in reversed(snap["rounds"]) if r.get("confusion")),
                   (snap.get("data_report") or {}).get("classes"))
    if not classes:
        return
    with st.expander("One client's confusion matrix (its own held-out rows)"):
        left, right = st.columns(2)
        ids = sorted({cid for per_round in kept.values() for cid in per_round})
        chosen = left.selectbox("Client", ids, key=f"{key}-cm-client")
        counted = sorted(r for r, per_round in kept.items() if chosen in per_round)
        if not counted:
            return
        round_no = counted[-1] if len(counted) == 1 else right.select_slider(
            "Round", counted, value=counted[-1], key=f"{key}-cm-round")
        counts = kept[round_no][chosen]
        st.plotly_chart(class_charts.confusion_figure(counts, classes, f"{chosen}, round {round_no}"),
                        key=f"{key}-cm")
        st.dataframe(class_charts.per_class_table(counts, classes), hide_index=True)
        st.caption("A class this client holds no rows of is absent (no recall), not 0: it is the global model's "
                   "score on this client's own data.")


if handle.kind == "simulation":
    draw_split(partition_of(handle.run_id) or split_preview(handle.config.to_dict()), "heatmap")


def draw_data_report(report: dict | None) -> None:
    """What the run's data is (data_report.json): rows and classes per site, columns used or left out."""
    if not report:
        return
    tables = data_report_tables(report)
    from_sites = report.get("source") == "summaries"
    for warning in report.get("leak_warnings") or []:
        st.warning(f"Possible leak: {words(warning)}")
    with st.expander("Data report: rows and classes per site, columns used or left out (data_report.json)",
                     expanded=from_sites):
        held = report.get("server_holds")
        source = ("Built from the sites' data summaries (counts and sums, never rows)" if from_sites
                  else f"The server holds {held.get('test_rows')} test rows of {held.get('name')}; clients bring "
                       "their own" if held and not report.get("sites") else "From the run's data")
        st.caption(f"{report.get('n_features')} features, classes {report.get('classes')}. {source}; a site "
                   "holding one class trains on it too.")
        if len(tables["sites"]):
            st.dataframe(tables["sites"], hide_index=True)
        st.dataframe(tables["columns"], hide_index=True)
        if len(tables["excluded"]):
            st.dataframe(tables["excluded"], hide_index=True)

if handle.done:
    draw(handle.snapshot(client_rows=not many), "static")
else:
    @st.fragment(run_every=1.0)
    def live() -> None:
        if handle.done:
            st.rerun(scope="app")
        draw(handle.snapshot(client_rows=not many), "live")

    live()
draw_data_report(handle.snapshot(client_rows=False).get("data_report"))
