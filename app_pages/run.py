"""Run: configure in the sidebar, press Start, watch the rounds live."""

import streamlit as st

from fl.config import ConfigError
from fl.data import DataError
from ui import charts, live, sidebar
from ui.clients import split_preview
from ui.compare import show_comparison, start_comparison
from ui.state import DRAFT_CONFIG, PENDING_CONFIG, current_handle, follow, registry

if PENDING_CONFIG in st.session_state:  # sent by the Runs page: "load into Run page"
    sidebar.apply_config(st.session_state.pop(PENDING_CONFIG))

with st.sidebar:
    buttons = st.container()  # Start/Stop on top, filled once the settings below are read
    config = sidebar.config_sidebar()
    handle = current_handle()
    running = handle is not None and not handle.done
    can_compare = config is not None and config.malicious_clients > 0 and not config.is_ensemble \
        and config.model != "gaussian_nb"
    with buttons:
        start_col, stop_col = st.columns(2)
        start = start_col.button("Start", type="primary", disabled=config is None, width="stretch",
                                 key="start_run")
        stop = stop_col.button("Stop", disabled=not running, width="stretch", key="stop_run")
        compare = can_compare and st.button("Compare FedAvg, median, trimmed mean, Krum", width="stretch",
                                            key="compare_rules", help="The same run under four rules, one chart.")

if config is not None:
    st.session_state[DRAFT_CONFIG] = config.to_dict()

if stop and handle is not None:
    handle.stop()
    handle.wait(5)
    st.rerun()

if start and config is not None:
    try:
        with st.spinner("Preparing data and starting the clients…"):
            handle = registry().start(config)
        follow(handle)
    except (ConfigError, DataError) as exc:
        st.error(f"Cannot start this run: {exc}")
    except OSError as exc:
        st.error(f"Cannot open a local socket for the run ({exc.strerror or exc}). Try again, or stop other runs.")

if compare and config is not None:
    start_comparison(config)

st.title("Federated learning workbench")
if show_comparison():
    st.stop()  # the four runs are in the Runs page too; close the comparison to follow one
if handle is None:
    st.markdown(
        "Pick a **dataset**, how it is **split** across clients, a **model** and an **aggregation** method in "
        "the sidebar, then press **Start**. A real server and one client per partition talk over local TCP "
        "sockets; each client trains only on its own data and sends back parameters, never data.\n\n"
        "You will see the global model's accuracy and loss per round, each client's training accuracy, and "
        "two reference lines: **centralized** (the same model trained on all the data pooled) and "
        "**local only** (each client alone). The **Clients** page shows each client in detail."
    )
    if config is not None:
        preview = split_preview(config.to_dict())
        if isinstance(preview, str):
            st.error(f"These settings cannot start a run: {preview}")
        else:
            sizes = [sum(row) for row in preview["counts"]]
            st.subheader("How the data will be split")
            st.caption(f"{len(sizes)} clients holding {min(sizes)} to {max(sizes)} training rows each; "
                       "the server keeps a held-out test split.")
            st.plotly_chart(charts.label_heatmap(preview["counts"], preview["clients"], preview["classes"]),
                            key="preview-heatmap")
else:
    st.caption(f"Run `{handle.run_id}` · {live.run_title(handle.config.to_dict(), handle.config.effective_rounds)}")
    live.show_run(handle)
