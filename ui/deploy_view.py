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
from fl.runs.network import NetSetting, client_flags, form_fields
from fl.runs.network import server_settings as network_settings
from fl.runs.words import for_page
from fl.runs.tls_dirs import make_server_tls
from ui import sidebar
from ui.clients_view import STATUS_ICONS
from ui import widgets
from ui.app_state import DEPLOY_RUN, registry, runs_root

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


# The form's settings, their defaults, labels, help and ranges: the server's network settings (fl/runs/network.py);
# here only where each sits (rows of (name, column width)) and what the page adds to a help.
FORM_ROWS = ((("host", 2), ("port", 1)), (("token", 1),), (("wait_for", 1), ("wait", 1), ("max_clients", 1)),
             (("expected", 1),), (("tls", 1),))
PAGE_NOTES = {"expected": "The client commands below are named after them, partition i after the i-th. Empty: any "
                          "id may join."}


def form_default(spec: NetSetting) -> Any:
    """A setting's declared default as its widget holds it (a list of ids as text, a whole number as an int)."""
    if spec.kind is tuple:
        return ", ".join(spec.default)
    if spec.default is None:
        return ""
    if spec.widget == "number" and float(spec.default).is_integer():
        return int(spec.default)
    return spec.default


def form_defaults() -> dict[str, Any]:
    """Every form setting's default (the token's: none; the form draws one per session, ``new_token``)."""
    return {name: form_default(spec) for name, spec in form_fields().items()}


def _help(spec: NetSetting) -> str:
    text = for_page(spec.help)
    return " ".join(part for part in (text[:1].upper() + text[1:] + ".", PAGE_NOTES.get(spec.name, "")) if part)


def _widget(spec: NetSetting, where: Any) -> Any:
    """The widget the declaration asks for, under key ``deploy_<name>`` (its value set once per session)."""
    key, label, help = _key(spec.name), spec.label, _help(spec)
    if spec.widget == "checkbox":
        return where.checkbox(label, key=key, help=help)
    if spec.widget == "number":
        whole = all(float(v).is_integer() for v in (spec.default, spec.low, spec.high, spec.step or 1))
        cast = int if whole else float
        return where.number_input(label, cast(spec.low), cast(spec.high), step=cast(spec.step) if spec.step else None,
                                  key=key, help=help)
    return where.text_input(label, key=key, help=help, placeholder=spec.example or None)


def server_widgets() -> dict[str, Any]:
    """Address, token and when to start; the token is drawn once per session, not per rerun."""
    fields = form_fields()
    st.session_state.setdefault(_key("token"), new_token())  # before the defaults: the declared one is none
    for name, value in form_defaults().items():
        st.session_state.setdefault(_key(name), value)
    out: dict[str, Any] = {}
    for row in FORM_ROWS:
        places = st.columns([width for _, width in row]) if len(row) > 1 else [st]
        for (name, _), where in zip(row, places):
            out[name] = _widget(fields[name], where)
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
    """The form's values as the server's settings (fl/runs/network.py); with TLS, a certificate for it."""
    settings = network_settings({**values, "host": str(values["host"]).strip(),
                                 "expected": parse_client_ids(str(values.get("expected") or ""))})
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
    """``python client_new.py`` and its network flags (generated from the client's network settings)."""
    return ["python", "client_new.py", *client_flags({"host": host, "port": port, "token": token,
                                                      "reconnect": RECONNECT_S, "tls_pin": pin})]


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
