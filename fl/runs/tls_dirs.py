"""Certificates made for one hosted server alone (Deploy's "Encrypt with TLS"), deleted with it.

Each lives in ``<runs root>/_tls/<random>/`` (the CA, the server certificate
and their private keys) with an ``owner.pid`` file naming the process that
serves with it. ``hosting.host`` deletes a server's directory when its run
ends (finished, stopped or failed) or never starts (the port is in use, bad
data); ``clean_stale`` deletes the directories no live process owns (one
killed mid-run never cleaned up), and the dashboard calls it when it starts.
A private key must not outlive the server it was made for.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path
from typing import Iterable

from fl.federation.server import ServerSettings
from fl.wire.tls import make_certificates, server_context

TLS_DIR = "_tls"
OWNER = "owner.pid"


def make_server_tls(settings: ServerSettings, root: str | Path, hosts: list[str]) -> None:
    """A fresh CA and server certificate for ``hosts`` under ``root/_tls``; sets ssl_context, tls_pin, tls_dir."""
    directory = Path(root) / TLS_DIR / secrets.token_hex(8)
    directory.mkdir(parents=True, mode=0o700)
    try:
        (directory / OWNER).write_text(str(os.getpid()))
        made = make_certificates(directory, hosts)
        settings.ssl_context = server_context(made["cert"], made["key"])
    except BaseException:
        remove_tls_dir(str(directory))
        raise
    settings.tls_pin = made["pin"]
    settings.tls_dir = str(directory)


def remove_tls_dir(path: str | None) -> None:
    """Delete a server's certificate directory, private keys included; a missing one is fine."""
    if path:
        shutil.rmtree(path, ignore_errors=True)


def _owner_alive(directory: Path) -> bool:
    """Whether another process that is still running owns ``directory`` (this process's own are never "other")."""
    try:
        pid = int((directory / OWNER).read_text().strip())
    except (OSError, ValueError):
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # alive, but another user's
        return True
    return True


def clean_stale(root: str | Path, keep: Iterable[str] = ()) -> list[str]:
    """Delete every ``root/_tls/*`` directory not in ``keep`` that no other live process owns; the deleted ones.

    A directory of this very process that is not kept belongs to no server
    it still knows of: its keys are already loaded where they are used, so
    deleting the files never breaks a running server.
    """
    base = Path(root) / TLS_DIR
    kept = {str(Path(k)) for k in keep}
    removed: list[str] = []
    try:
        entries = list(base.iterdir())
    except OSError:
        return removed
    for directory in entries:
        if directory.is_dir() and str(directory) not in kept and not _owner_alive(directory):
            remove_tls_dir(str(directory))
            removed.append(str(directory))
    return removed
