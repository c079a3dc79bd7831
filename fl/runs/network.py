"""The network settings of a server and of a client, declared once.

A server's address, token, limits, heartbeats, join timeout and TLS files,
and a client's address, token, timeouts and TLS files, are each one
``NetSetting`` here: its name, its one default, its help text, its flag, the
``ServerSettings`` / ``ClientSettings`` attribute it fills, and how the
Deploy page shows it. From these lists come the ``server`` and ``client``
flags of the command line (fl/cli/server.py, fl/cli/client.py), the Deploy
page's form and its defaults (ui/deploy_view.py), the client commands Deploy
writes (``client_flags``) and the settings objects both build
(``server_settings``, ``client_settings``). As RunConfig's knobs do for a
run's settings (fl/runs/knobs.py), so nothing else writes them again.

The defaults a person meets: port 8080, wait 300 s for clients to join, at
most 1000 clients, a client keeps trying to reach the server for 60 s.
``ServerSettings`` and ``ClientSettings`` (fl/federation, a layer below,
which cannot import this) carry the same defaults, checked by
tests/test_network_settings.py, but for two: their port is 0 (a server or
client built in code, e.g. a simulation's, takes a free port), and their
``wait_for_clients`` is 1 (the command line derives it from ``--min-clients``;
only the Deploy form asks for it, 2 by default).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from fl.federation.client import ClientSettings
from fl.federation.identity import MAX_JOINS_PER_CLIENT, parse_client_ids
from fl.federation.liveness import DEFAULT_INTERVAL_S, DEFAULT_MISSES
from fl.federation.server import ServerSettings

NETWORK, TLS = "network", "tls"


# ---------------------------------------------------------------------- how a flag's text is read
# Each raises argparse.ArgumentTypeError with what is wrong, which the parser turns into one line and exit code 2.
def seconds(text: str) -> float:
    """A duration: a finite number of seconds, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more seconds")
    return value


def at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more")
    return value


def client_id_list(text: str) -> tuple[str, ...]:
    """``--expect-clients biscoe,dream,torgersen``: client ids, read as the Deploy page reads its field."""
    try:
        ids = parse_client_ids(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not ids:
        raise argparse.ArgumentTypeError("name at least one client id, e.g. biscoe,dream,torgersen")
    return ids


# ---------------------------------------------------------------------- the declaration
@dataclass(frozen=True)
class NetSetting:
    """One network setting: everything the command line, the Deploy page and the settings objects need."""

    name: str  # the command line's dest, and the Deploy form's key (deploy_<name>)
    default: Any  # the one default (None: unset; the help says what then)
    help: str
    kind: type = str  # str | int | float | bool | tuple (client ids)
    flag: str | None = ""  # "" : --name-with-dashes; None: no flag (a Deploy form field only)
    parse: Callable[[str], Any] | None = None  # how the command line reads it, when not kind(text)
    metavar: str | None = None
    setting: str | None = None  # the ServerSettings / ClientSettings attribute it fills (None: none)
    group: str = NETWORK  # network | tls: the help section the flag sits in
    label: str = ""  # the Deploy form's label
    widget: str | None = None  # text | number | checkbox | token (text, drawn at random once) | None: not on the form
    low: float | None = None  # a number widget's range and step
    high: float | None = None
    step: float | None = None
    example: str = ""  # the Deploy form's placeholder
    always: bool = False  # written in every client command Deploy writes, even at its default

    def flag_name(self) -> str | None:
        if self.flag is None:
            return None
        return self.flag or "--" + self.name.replace("_", "-")

    def flag_help(self) -> str:
        """The help, with the default said when there is one to say (settings named in it are «markers»: the
        command line renders them as flags, fl/runs/words.py)."""
        if self.default in (None, "", ()) or self.kind is bool:
            return self.help
        shown = f"{self.default:g}" if isinstance(self.default, float) else str(self.default)
        return f"{self.help} (default: {shown})"


SERVER_NETWORK: tuple[NetSetting, ...] = (
    NetSetting("host", "127.0.0.1", "the address to listen on: 127.0.0.1 accepts clients on this machine only; "
               "0.0.0.0 accepts other machines too (every network interface)", setting="host",
               label="Listen on (host)", widget="text"),
    NetSetting("port", 8080, "the port to listen on; 0 picks a free port", kind=int, setting="port", label="Port",
               widget="number", low=0, high=65535),
    NetSetting("token", None, "the shared secret clients must present to join; without one, anyone who can reach "
               "the port may join", setting="token", label="Token (shared secret)", widget="token"),
    NetSetting("wait_for", 2, "rounds start by themselves once this many clients have joined", kind=int, flag=None,
               setting="wait_for_clients", label="Clients to wait for", widget="number", low=1, high=1000),
    NetSetting("wait", 300.0, "seconds to wait for clients to join: after this long, rounds start with the "
               "clients already there (at least «min_clients»), or the run fails if too few joined", kind=float,
               metavar="SECONDS", setting="join_timeout_s", label="Wait at most (s)", widget="number", low=5,
               high=86_400, step=30),
    NetSetting("max_clients", 1000, "the most clients accepted", kind=int, metavar="N", setting="max_clients",
               label="Most clients accepted", widget="number", low=1, high=100_000),
    NetSetting("expected", (), "only these client ids may join (others are refused); rounds start once all have "
               "joined, or after «wait» with at least «min_clients». Anyone with the token can still say a listed "
               "name first (only client certificates, mutual TLS, bind a name to a site)", kind=tuple,
               flag="--expect-clients", parse=client_id_list, metavar="ID,ID,...", setting="expected_clients",
               label="Expected sites (optional)", widget="text", example="biscoe, dream, torgersen"),
    NetSetting("heartbeat", DEFAULT_INTERVAL_S, "ping clients this often, in seconds; 0 turns heartbeats off",
               kind=float, parse=seconds, metavar="SECONDS", setting="heartbeat_interval_s"),
    NetSetting("heartbeat_misses", DEFAULT_MISSES, "a client silent for N heartbeat intervals is gone", kind=int,
               parse=at_least_one, metavar="N", setting="heartbeat_misses"),
    NetSetting("max_pending", 256, "connections still in their handshake at once; more are closed", kind=int,
               parse=at_least_one, metavar="N", setting="max_pending_handshakes"),
    NetSetting("max_pending_per_address", 64, "... from one address: raise it for many clients behind one NAT",
               kind=int, parse=at_least_one, metavar="N", setting="max_pending_per_address"),
    NetSetting("max_joins_per_client", MAX_JOINS_PER_CLIENT, "joins of one client id from one address in any "
               "60 s; more are refused", kind=int, parse=at_least_one, metavar="N", setting="max_joins_per_client"),
    NetSetting("max_joins_per_address", None, "joins of any ids from one address in any 60 s (default: twice "
               "«max_clients», at least 20)", kind=int, parse=at_least_one, metavar="N",
               setting="max_joins_per_address"),
    NetSetting("tls_cert", None, "serve TLS with this certificate (with --tls-key)", metavar="PEM", group=TLS),
    NetSetting("tls_key", None, "the certificate's private key", metavar="PEM", group=TLS),
    NetSetting("tls_client_ca", None, "mutual TLS: require every client to present a certificate signed by this "
               "CA (python -m fl certs --client NAME issues them)", metavar="PEM", group=TLS),
    NetSetting("tls", False, "a fresh certificate is made for this server; the client commands pin its fingerprint "
               "(--tls-pin), so the token and parameters never cross in clear. The certificate and its key are "
               "deleted when the server ends", kind=bool, flag=None, group=TLS, label="Encrypt with TLS",
               widget="checkbox"),
)

CLIENT_NETWORK: tuple[NetSetting, ...] = (
    NetSetting("host", "127.0.0.1", "the server's address", setting="host", always=True),
    NetSetting("port", 8080, "the server's port", kind=int, setting="port", always=True),
    NetSetting("token", None, "the shared secret the server asks for", setting="token"),
    NetSetting("connect_timeout", 60.0, "keep retrying this many seconds while the server is not up", kind=float,
               metavar="SECONDS", setting="connect_timeout_s"),
    NetSetting("reconnect", 0.0, "if the server goes away mid-run (not after its bye), keep trying to rejoin it "
               "this many seconds, with the same id and local state (0: leave)", kind=float, parse=seconds,
               metavar="SECONDS", setting="reconnect_s"),
    NetSetting("tls_ca", None, "use TLS; verify the server against this CA file", metavar="PEM", group=TLS),
    NetSetting("tls_pin", None, "use TLS; accept only this server certificate fingerprint", metavar="SHA256",
               setting="pin_sha256", group=TLS),
    NetSetting("tls_client_cert", None, "this client's certificate, for a server that requires one (with "
               "--tls-client-key)", metavar="PEM", group=TLS),
    NetSetting("tls_client_key", None, "the client certificate's private key", metavar="PEM", group=TLS),
)


def by_name(specs: Sequence[NetSetting]) -> dict[str, NetSetting]:
    return {s.name: s for s in specs}


def defaults(specs: Sequence[NetSetting]) -> dict[str, Any]:
    """Every setting's default, by name."""
    return {s.name: s.default for s in specs}


def form_fields(specs: Sequence[NetSetting] = SERVER_NETWORK) -> dict[str, NetSetting]:
    """The settings the Deploy form shows, by name."""
    return {s.name: s for s in specs if s.widget is not None}


# ---------------------------------------------------------------------- what is built from them
def _engine_values(specs: Sequence[NetSetting], values: dict[str, Any]) -> dict[str, Any]:
    """``values`` (by setting name; a missing or unset one takes its default) as settings attributes."""
    out: dict[str, Any] = {}
    for s in specs:
        if s.setting is None:
            continue
        value = values.get(s.name, s.default)
        if value is None:
            value = s.default
        if value is not None and s.kind in (int, float):
            value = s.kind(value)
        elif s.kind is tuple:
            value = tuple(value or ())
        elif s.kind is str and value == "" and s.default is None:
            value = None  # an empty token is no token
        out[s.setting] = value
    return out


def server_settings(values: dict[str, Any], **fixed: Any) -> ServerSettings:
    """The server's settings from ``values`` (the command line's parsed flags, or the Deploy form's), then
    ``fixed`` (what the caller decides: the TLS context, the clients to wait for)."""
    return ServerSettings(**{**_engine_values(SERVER_NETWORK, values), **fixed})


def client_settings(values: dict[str, Any], **fixed: Any) -> ClientSettings:
    """A client's settings from ``values`` (its parsed flags), then ``fixed`` (its TLS context)."""
    return ClientSettings(**{**_engine_values(CLIENT_NETWORK, values), **fixed})


def client_flags(values: dict[str, Any]) -> list[str]:
    """The client command line's network flags for ``values``: the server's host and port always, then each
    other setting given that is not its default. The inverse of the client parser (fl/cli/client.py); the
    Deploy page writes its commands with it."""
    out: list[str] = []
    for s in CLIENT_NETWORK:
        value = values.get(s.name)
        if value is None or value == "" or s.flag is None or (value == s.default and not s.always):
            continue
        out += [s.flag_name(), f"{value:g}" if isinstance(value, float) else str(value)]
    return out
