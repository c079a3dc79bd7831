"""Pieces of the Deploy page: server settings, the hosted run, client commands.

A hosted run's address, token and partitioning all live on its RunHandle
(server settings and RunConfig), so a new session or a reload can rebuild
the client commands from the registry alone.
"""

from __future__ import annotations

import errno
import secrets
import shlex
import socket
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from fl.runs.config import RunConfig
from fl.runs.knobs import CLIENT, default_of, knobs_of, to_flags
from fl.runs.live_run import RunHandle
from fl.runs.for_pages import ServerSettings, default_hosts, parse_client_ids
from fl.runs.tls_dirs import make_server_tls
from ui import sidebar
from ui.clients_view import STATUS_ICONS
from ui import widgets
from ui.app_state import DEPLOY_RUN, registry, runs_root

SERVER_DEFAULTS: dict[str, Any] = {"host": "127.0.0.1", "port": 8080, "wait_for": 2, "wait_s": 300,
                                   "max_clients": 100, "expected": ""}
ALL_INTERFACES = ("0.0.0.0", "::", "")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _key(name: str) -> str:
    return f"deploy_{name}"


def hosted_handle() -> RunHandle | None:
    """The tab's hosted run (running or finished), else any live hosted run of this process."""
    reg = registry()
    handle = reg.get(st.session_state.get(DEPLOY_RUN))
    if handle is not None and handle.kind == "hosted":
        return handle
    active = reg.active(kind="hosted")
    if active:
        st.session_state[DEPLOY_RUN] = active[0].run_id
        return active[0]
    st.session_state.pop(DEPLOY_RUN, None)
    return None


# ---------------------------------------------------------------------- the form
def new_token() -> str:
    """A random token that never starts with '-' (the command line would read it as a flag)."""
    while True:
        token = secrets.token_urlsafe(12)
        if not token.startswith("-"):
            return token


def server_widgets() -> dict[str, Any]:
    """Address, token and when to start; the token is drawn once per session, not per rerun."""
    for name, value in SERVER_DEFAULTS.items():
        st.session_state.setdefault(_key(name), value)
    st.session_state.setdefault(_key("token"), new_token())
    out: dict[str, Any] = {}
    c1, c2 = st.columns([2, 1])
    out["host"] = c1.text_input("Listen on (host)", key=_key("host"),
                                help="127.0.0.1 accepts clients on this machine only; use 0.0.0.0 to accept "
                                     "other machines (every network interface).")
    out["port"] = c2.number_input("Port", 0, 65535, key=_key("port"), help="0 picks a free port.")
    out["token"] = st.text_input("Token (shared secret)", key=_key("token"),
                                 help="Clients must present it to join. Leave empty to let anyone who can "
                                      "reach the port join.")
    c3, c4, c5 = st.columns(3)
    out["wait_for"] = c3.number_input("Clients to wait for", 1, 1000, key=_key("wait_for"),
                                      help="Rounds start by themselves once this many clients have joined.")
    out["wait_s"] = c4.number_input("Wait at most (s)", 5, 86_400, step=30, key=_key("wait_s"),
                                    help="After this long, rounds start with the clients already here, or "
                                         "the run fails if too few joined.")
    out["max_clients"] = c5.number_input("Most clients accepted", 1, 1000, key=_key("max_clients"))
    out["expected"] = st.text_input("Expected sites (optional)", key=_key("expected"),
                                    placeholder="biscoe, dream, torgersen",
                                    help="Only these client ids may join (ServerSettings.expected_clients, "
                                         "--expect-clients); the client commands below are named after them, "
                                         "partition i after the i-th. Empty: any id may join. Anyone with the "
                                         "token can still say a listed name first (only client certificates, "
                                         "mutual TLS, bind a name to a site).")
    out["tls"] = st.checkbox("Encrypt with TLS", key=_key("tls"),
                             help="A fresh certificate is made for this server; the client commands pin its "
                                  "fingerprint (--tls-pin), so the token and parameters never cross in clear. "
                                  "The certificate and its key are deleted when the server ends.")
    return out


def config_widgets() -> RunConfig | None:
    """The run settings, in the main area: the Run page's widgets under this page's own keys."""
    with widgets.scope("deploy_cfg_"):
        return _config_widgets()


OWN_DATA, NO_DATA = "own", "none"
DATA_SOURCES = {OWN_DATA: "Its own copy: a built-in dataset or a CSV here",
                NO_DATA: "None: the sites send summaries (counts and sums, never rows)"}


def _config_widgets() -> RunConfig | None:
    values: dict[str, Any] = {}
    st.subheader("Data the server evaluates on")
    source = st.radio("Data the server evaluates on", list(DATA_SOURCES), format_func=DATA_SOURCES.get,
                      key=widgets.key("data_source"), label_visibility="collapsed")
    if source == NO_DATA:
        _coordinator_widgets(values)
    else:
        sidebar.data_widgets(values)
        st.caption("The server keeps a held-out test split of its own copy to evaluate the global model; "
                   "each client brings its own data.")
        st.subheader("Suggested split for the client commands")
        sidebar.split_widgets(values)
        st.caption("Only used to write the commands below: machine i takes partition i of this many.")
    st.subheader("Model")
    sidebar.model_widgets(values)
    st.subheader("Rounds")
    sidebar.rounds_widgets(values)
    st.subheader("Privacy")
    sidebar.privacy_widgets(values)
    return sidebar.config_from_values(values, data_at_clients=source == NO_DATA)


def _coordinator_widgets(values: dict[str, Any]) -> None:
    """A coordinator without rows: only the label column's name and how rare a text value may be to be named;
    the sites' summaries say the columns, the scaling and the classes (docs/protocol.md, Data summaries)."""
    knobs = knobs_of(RunConfig)
    values.update(dataset="csv", csv_path=None, partition="iid")
    values["target"] = st.text_input("Label column, as every site's CSV names it", key=widgets.key("site_target"),
                                      placeholder="species", help=knobs["target"].help).strip()
    minimum = knobs["min_category_count"]
    values["min_category_count"] = st.number_input(minimum.label or "min_category_count", 1, 1_000_000,
                                                   value=int(default_of(RunConfig, "min_category_count")),
                                                   key=widgets.key("min_category_count"),
                                                   help=minimum.help)
    st.caption("The server holds no rows. Before round 1 each site sends a summary of its own CSV; the server "
               "merges them into one task (the shared columns, one-hot categories, a global scaler, the labels: a "
               "site may hold one class) and evaluates on the sites' held-out rows, adding up their counts. Each "
               "site's command below reads its own CSV.")


def check_server_inputs(values: dict[str, Any]) -> str | None:
    """An error sentence for settings the server would reject or clients could not use."""
    host, token = str(values["host"]).strip(), str(values["token"])
    if not host or any(ch.isspace() for ch in host):
        return "Enter an address to listen on: 127.0.0.1 (this machine only) or 0.0.0.0 (other machines too)."
    if token != token.strip() or any(ch.isspace() for ch in token):
        return "The token cannot contain spaces: use letters, digits, - and _ (or keep the generated one)."
    if token.startswith("-"):
        return "The token cannot start with '-' (clients would read it as a flag): change its first character."
    if values["wait_for"] > values["max_clients"]:
        return (f"Clients to wait for ({values['wait_for']}) is more than the most clients accepted "
                f"({values['max_clients']}): lower the first or raise the second.")
    try:
        sites = parse_client_ids(str(values.get("expected") or ""))
    except ValueError as exc:
        return f"Expected sites: {exc}. Separate the ids with commas."
    if sites and values["wait_for"] > len(sites):
        return (f"Clients to wait for ({values['wait_for']}) is more than the {len(sites)} expected sites, the only "
                "ones that may join: lower it, or list more sites.")
    return None


def check_sites(values: dict[str, Any], config: RunConfig) -> str | None:
    """An error sentence when the expected sites cannot name the client commands: one per partition of a
    built-in dataset. (A column split's commands are named after its values: see ``unexpected_sites``.)"""
    sites = parse_client_ids(str(values.get("expected") or ""))
    if sites and config.dataset != "csv" and len(sites) != int(config.clients):
        return (f"Expected sites names {len(sites)} sites, but the split has {int(config.clients)} partitions, one "
                "per client command: list one site per partition, or change the number of clients.")
    return None


def unexpected_sites(handle: RunHandle) -> list[str]:
    """A column split's sites (named after the column's values) that the server does not expect: their
    commands would be refused."""
    expected = handle.server.settings.expected_clients
    if not expected or handle.config.partition != "column":
        return []
    return [cid for cid in handle.plan.client_ids if cid not in expected]


def server_settings(values: dict[str, Any]) -> ServerSettings:
    settings = ServerSettings(host=str(values["host"]).strip(), port=int(values["port"]),
                              token=values["token"] or None, max_clients=int(values["max_clients"]),
                              wait_for_clients=int(values["wait_for"]), join_timeout_s=float(values["wait_s"]),
                              expected_clients=parse_client_ids(str(values.get("expected") or "")))
    if values.get("tls"):  # certificates for this server alone, deleted when its run ends (fl/runs/tls_dirs.py)
        make_server_tls(settings, runs_root(), sorted({settings.host, *default_hosts()} - {"0.0.0.0", "::", ""}))
    return settings


def bind_error(exc: OSError, host: str, port: int) -> str:
    """What went wrong opening the socket, and what to do about it."""
    if isinstance(exc, socket.gaierror) or exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
        return (f"Cannot listen on {host!r}: it is not an address of this machine. Use 127.0.0.1 (this "
                "machine only) or 0.0.0.0 (every network interface).")
    if exc.errno == errno.EADDRINUSE:
        return (f"Port {port} is already in use on {host}. Pick another port (or 0 for a free one), or stop "
                "the program that holds it.")
    if exc.errno == errno.EACCES:
        return f"Not allowed to listen on port {port}: ports below 1024 need administrator rights; use 8080 or above."
    return f"Cannot open a server on {host}:{port} ({exc.strerror or exc}). Check the address and port."


# ---------------------------------------------------------------------- commands
def command_host(host: str) -> tuple[str, str | None]:
    """The host clients should dial, and a note when it differs from the one the server binds."""
    if host in ALL_INTERFACES:
        name = socket.gethostname()
        return name, (f"The server listens on every interface ({host or '0.0.0.0'}), so the commands use this "
                      f"machine's name `{name}`. If other machines cannot resolve it, put this machine's IP "
                      "address instead.")
    return host, None


RECONNECT_S = 600  # the commands' clients rejoin for 10 minutes after losing the server (a resumed server)


def _base(host: str, port: int, token: str | None, pin: str | None = None) -> list[str]:
    args = ["python", "client_new.py", "--host", host, "--port", str(port), "--reconnect", str(RECONNECT_S)]
    if token:
        args += ["--token", token]
    if pin:
        args += ["--tls-pin", pin]
    return args


def data_flags(config: RunConfig) -> list[str]:
    """The flags that make a client rebuild the server's dataset and split (generated from the knobs)."""
    return ["--dataset", config.dataset] + to_flags(config, CLIENT, skip=("dataset", "csv_path", "target"))


def csv_name(config: RunConfig) -> str:
    """The server's CSV as its user named it (an upload is kept as <digest>-<name>)."""
    path = Path(config.csv_path or "data.csv")
    return path.name.split("-", 1)[-1] if path.parent.name == "_uploads" else path.name


def partition_commands(config: RunConfig, host: str, port: int, token: str | None,
                       pin: str | None = None, sites: tuple[str, ...] = ()) -> list[str]:
    """One command per partition of a built-in dataset (partition i named after the i-th of the expected
    ``sites``, if any), or per value of a CSV split by a column (each machine with a copy of that CSV takes its
    site's rows and is named after it); none for another CSV server."""
    if config.dataset == "csv" and config.partition != "column":
        return []
    own = ["--csv", csv_name(config), "--target", str(config.target)] if config.dataset == "csv" else []
    n = int(config.clients)  # a column split's: one per value (the hosted run's config says how many)
    named = sites if config.dataset != "csv" else ()
    return [shlex.join(_base(host, port, token, pin) + data_flags(config) + own
                       + ["--partition-id", str(i), "--num-partitions", str(n)]
                       + (["--client-id", named[i]] if i < len(named) else [])) for i in range(n)]


def csv_command(config: RunConfig, host: str, port: int, token: str | None, pin: str | None = None,
                client_id: str | None = None) -> str:
    """A client with its own CSV (named ``client_id``, an expected site); the label column is the server's
    when it has one."""
    target = config.target if config.dataset == "csv" and config.target else "label"
    return shlex.join(_base(host, port, token, pin) + ["--csv", "my_data.csv", "--target", target]
                      + (["--client-id", client_id] if client_id else []))


# ---------------------------------------------------------------------- live view
def joined_table(clients: dict[str, dict]) -> pd.DataFrame:
    rows = [{"Client": cid, "Status": STATUS_ICONS.get(c.get("status"), c.get("status")),
             "Samples": c.get("n_samples"), "Rounds trained": c.get("rounds_trained", 0)}
            for cid, c in sorted(clients.items())]
    return pd.DataFrame(rows, columns=["Client", "Status", "Samples", "Rounds trained"])


def n_joined(snap: dict) -> int:
    return sum(c.get("status") != "gone" for c in snap["clients"].values())
