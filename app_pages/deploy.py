"""Deploy: host a server that clients on other machines join."""

import streamlit as st

from fl.runs.config import RunConfig
from fl.runs.for_pages import FLError
from fl.runs.live_run import RunHandle
from fl.runs.store import StoredRun
from ui import deploy_view as deploy, live
from ui.app_state import RESUME_RUN, registry, store

st.title("Deploy")
handle = deploy.hosted_handle()


def start_form() -> None:
    """Server settings and the run config; Start hosts the run and remembers it for this tab."""
    st.markdown("Host a server here; clients on other machines join it with their own data "
                "(`python client_new.py ...`, commands below once the server is up). Only parameters or "
                "fitted models cross the network, never the clients' data.")
    resuming = resumed_run()
    server_col, config_col = st.columns(2, gap="large")
    with server_col:
        st.subheader("Server")
        values = deploy.server_widgets()
        start = st.button("Resume run" if resuming else "Start server", type="primary", key="start_server",
                          width="stretch")
    with config_col:
        if resuming is not None:
            st.subheader("Run settings")
            st.caption("A resumed run keeps the settings it started with.")
            st.json(resuming.config, expanded=False)
            config = RunConfig.from_dict(resuming.config)
        else:
            config = deploy.config_widgets()
    if not start:
        return
    problem = deploy.check_server_inputs(values)
    if config is None:
        problem = "Fix the model settings marked in red, then press Start server again."
    problem = problem or deploy.check_sites(values, config)
    if problem:
        server_col.error(problem)
        return
    settings = deploy.server_settings(values)
    try:
        with st.spinner("Loading the server's data and opening the port…"):
            hosted = registry().resume(resuming.run_id, settings) if resuming is not None \
                else registry().host(config, settings)
    except FLError as exc:
        server_col.error(f"Cannot host this run: {exc}")
        return
    except OSError as exc:
        server_col.error(deploy.bind_error(exc, settings.host, settings.port))
        return
    st.session_state.pop(RESUME_RUN, None)
    st.session_state[deploy.DEPLOY_RUN] = hosted.run_id
    st.rerun()


def resumed_run() -> StoredRun | None:
    """The stored hosted run this tab was sent here to resume (from the Runs page), with a way back out."""
    run_id = st.session_state.get(RESUME_RUN)
    if not run_id:
        return None
    try:
        run = store().load(run_id)
    except (OSError, ValueError):
        st.session_state.pop(RESUME_RUN, None)
        return None
    done = run.summary.get("rounds_done") or 0
    st.info(f"Resuming run `{run.run_id}` after round {done} of {run.config.get('rounds')}. Clients started with "
            "`--reconnect SECONDS` rejoin by themselves if this server listens on the same host and port with "
            "the same token (and TLS) as before; others can join with the commands shown once it is up.")
    if st.button("Host a new run instead", key="cancel_resume"):
        st.session_state.pop(RESUME_RUN, None)
        st.rerun()
    return run


def connection_info(handle: RunHandle) -> None:
    """Where the server listens and the exact command for each machine."""
    settings = handle.server.settings
    bound_host, port = handle.server.address or (settings.host, settings.port)
    host, note = deploy.command_host(settings.host)
    sites = settings.expected_clients
    st.markdown(f"Listening on `{bound_host}:{port}`" + (" · TLS" if settings.tls_pin else " · plain TCP")
                + (" · token required" if settings.token else
                   " · **no token**: anyone who can reach the port may join")
                + (f" · only the {len(sites)} expected sites may join" if sites else ""))
    refused = deploy.unexpected_sites(handle)
    if refused:
        st.warning(f"Not among the expected sites, so their commands will be refused: {', '.join(refused)}. "
                   "Stop the server and list them under Expected sites.")
    if note:
        st.caption(note)
    elif settings.host in deploy.LOOPBACK:
        st.warning("This server accepts clients on this machine only. To accept other machines, stop it and "
                   "host again on 0.0.0.0.")
    config = handle.config
    commands = deploy.partition_commands(config, host, port, settings.token, settings.tls_pin, sites)
    if commands and config.partition == "column":
        st.markdown(f"**On each site's machine**, from a copy of this project and of `{deploy.csv_name(config)}`, "
                    f"machine *i* takes the rows of the *i*-th value of `{config.split_column}` (one of "
                    f"{len(commands)}) and is named after it:")
        st.code("\n".join(commands), language="bash", wrap_lines=True)
    elif commands:
        st.markdown(f"**On each machine**, from a copy of this project (`pip install -r requirements.txt`), "
                    f"machine *i* takes partition *i* of {len(commands)} of `{config.dataset}`:")
        st.code("\n".join(commands), language="bash", wrap_lines=True)
    st.markdown("**Or with the machine's own CSV** (columns are matched to the server's features by name; "
                "put your file and its label column" + ("; one command per expected site" if sites else "") + "):")
    st.code("\n".join(deploy.csv_command(config, host, port, settings.token, settings.tls_pin, site)
                       for site in (sites or (None,))), language="bash", wrap_lines=True)


def client_panel(handle: RunHandle) -> None:
    """Joined clients, Start rounds now and Stop; redrawn every second from the snapshot."""

    @st.fragment(run_every=live.REFRESH_SECONDS)
    def panel() -> None:
        if handle.done:
            st.rerun(scope="app")
        snap = handle.snapshot()
        settings = handle.server.settings
        joined = deploy.n_joined(snap)
        waiting = snap["status"] in ("starting", "waiting for clients")
        st.subheader(f"Clients: {joined} joined")
        if snap["clients"]:
            st.dataframe(deploy.joined_table(snap["clients"]), hide_index=True)
        else:
            st.caption("No client yet. Run the commands above on the client machines.")
        if waiting:
            st.caption(f"Rounds start by themselves once {settings.wait_for_clients} clients have joined, or "
                       f"after {settings.join_timeout_s:g} s with at least {handle.config.min_clients}. "
                       "Start rounds now to go with the clients already here.")
        c1, c2 = st.columns(2)
        if c1.button("Start rounds now", key="start_rounds_now", width="stretch",
                     disabled=not waiting or joined < handle.config.min_clients):
            handle.start_rounds_now()
            st.toast(f"Starting rounds with {joined} clients.")
        if c2.button("Stop server", key="stop_server", width="stretch"):
            handle.stop()
            handle.wait(5)
            st.rerun(scope="app")

    panel()


if handle is None:
    start_form()
    st.stop()

st.caption(f"Hosted run `{handle.run_id}` · {live.run_title(handle.config.to_dict())}")
done = handle.done  # read once: the buttons and the view below must agree though the run may end meanwhile
if done:
    if st.button("Host a new run", type="primary", key="host_new"):
        st.session_state.pop(deploy.DEPLOY_RUN, None)
        st.rerun()
else:
    connection_info(handle)
    client_panel(handle)
live.show_run(handle, done=done)
