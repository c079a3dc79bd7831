"""What ``--cluster`` says: where a simulation's client hosts run, read and checked without any cluster library.

``local`` (the default) runs them in worker processes on this machine (fl/runs/processes.py);
``dask://HOST:PORT`` on the workers of a running Dask scheduler;
``ray://HOST:PORT`` on a Ray cluster through Ray Client, and ``ray`` on the
Ray cluster of this machine (``ray start --head``, or ``RAY_ADDRESS``), else
a local one started for the run. Placing the hosts is fl/runs/cluster.py's
job; this module only reads the text, so that the knob's validation never
imports Dask or Ray.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

LOCAL = "local"
ENGINES = ("local", "dask", "ray")
FORMS = "local, dask://HOST:PORT, ray://HOST:PORT or ray"


@dataclass(frozen=True)
class ClusterSpec:
    """One ``--cluster`` value: the engine and, for a remote one, the host and port to reach it at."""

    engine: str  # local | dask | ray
    host: str | None = None
    port: int | None = None

    @property
    def is_local(self) -> bool:
        return self.engine == LOCAL

    @property
    def address(self) -> str | None:
        """The address the engine's client connects to (Dask: ``tcp://HOST:PORT``; Ray Client: ``ray://``)."""
        if self.host is None:
            return None
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'tcp' if self.engine == 'dask' else 'ray'}://{host}:{self.port}"

    def __str__(self) -> str:
        if self.host is None:
            return self.engine
        return f"{self.engine}://{self.address.split('://', 1)[1]}"  # type: ignore[union-attr]


def parse_cluster(text: str) -> ClusterSpec:
    """Read a ``--cluster`` value; ValueError with one sentence saying which forms there are."""
    value = (text or "").strip()
    if value.lower() in ("local", "ray"):
        return ClusterSpec(value.lower())
    scheme, sep, rest = value.partition("://")
    if not sep or scheme.lower() not in ("dask", "ray"):
        raise ValueError(f"cluster {value!r} is not one of {FORMS}")
    host, port = _host_port(rest, value)
    return ClusterSpec(scheme.lower(), host, port)


def _host_port(rest: str, value: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT`` of a cluster address."""
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        port_text = tail[1:] if tail.startswith(":") else ""
    else:
        host, _, port_text = rest.rpartition(":")
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536 or "/" in host:
        raise ValueError(f"cluster {value!r} needs a host and a port: {FORMS} (e.g. dask://127.0.0.1:8786)")
    return host, int(port_text)


def cluster_problem(text: str) -> str | None:
    """Why a ``cluster`` setting cannot be used (the knob's check), or None."""
    try:
        parse_cluster(text)
    except ValueError as exc:
        return str(exc)
    return None


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def route_address(host: str | None) -> str:
    """The address of this machine that reaches ``host`` (no packet is sent: a UDP socket is only
    connected); 127.0.0.1 for a loopback or absent host. What a cluster's workers can connect back to."""
    if host is None or is_loopback(host):
        return "127.0.0.1"
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((host, 9))
            return probe.getsockname()[0]
    except OSError as exc:
        raise ValueError(f"cannot find this machine's address towards the cluster at {host} "
                         f"({exc.strerror or exc}): give --host") from None
