"""Private by default: the dashboard binds localhost; a hosted server's TLS keys go with it.

The Deploy page makes a certificate and its private key for each TLS server
it hosts (runs/_tls/<random>/); they must not outlive that server, whether
its run finishes, is stopped or fails, or the process dies (cleaned when the
dashboard next starts).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import pytest

from fl.federation.client import ClientSettings, FederatedClient, LocalData
from fl.federation.server import ServerSettings
from fl.runs import hosting
from fl.runs.build import build_run
from fl.runs.config import RunConfig
from fl.runs.tls_dirs import OWNER, TLS_DIR, clean_stale, make_server_tls
from fl.wire.tls import client_context
from tests.apptest_helpers import ROOT, new_app

CONFIG = RunConfig(model="logreg", partition="iid", dataset="iris", clients=2, rounds=1, min_clients=1)


def test_the_dashboard_listens_on_localhost_only():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "localhost"


def _tls_settings(root: Path, **kw) -> ServerSettings:
    settings = ServerSettings(host="127.0.0.1", port=0, wait_for_clients=1, **kw)
    make_server_tls(settings, root, ["127.0.0.1", "localhost"])
    return settings


def _join(handle, settings: ServerSettings) -> threading.Thread:
    """One pinned TLS client of the hosted run, in a thread."""
    plan = build_run(CONFIG)
    X, y = plan.data.client_data(0)
    host, port = handle.server.address
    client = FederatedClient("c0", LocalData(X, y, list(plan.data.dataset.feature_names)), ClientSettings(
        host, port, ssl_context=client_context(pin_sha256=settings.tls_pin), pin_sha256=settings.tls_pin,
        connect_timeout_s=10))
    thread = threading.Thread(target=client.run, name="fl-test-tls-client", daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("ending", ["finished", "stopped", "failed"])
def test_a_hosted_servers_tls_directory_is_deleted_when_its_run_ends(ending, tmp_path, no_thread_leaks):
    # Prepare: a hosted TLS server with its own certificate directory (private key included)
    settings = _tls_settings(tmp_path, join_timeout_s=0.5 if ending == "failed" else 30)
    directory = Path(settings.tls_dir)
    assert (directory / "server.key").is_file() and (directory / "ca.key").is_file()
    assert oct((directory / "server.key").stat().st_mode & 0o777) == "0o600"
    handle = hosting.host(CONFIG, settings)
    client = _join(handle, settings) if ending == "finished" else None
    # Execute
    if ending == "stopped":
        handle.stop()
    result = handle.wait(30)
    # Assert: the run ended as intended and took its keys with it
    assert result is not None and result.status == {"finished": "completed", "stopped": "stopped",
                                                     "failed": "failed"}[ending]
    assert not directory.exists()
    if client is not None:
        client.join(10)


def test_the_tls_directory_of_a_server_that_cannot_start_is_deleted(tmp_path):
    # Prepare: the port is taken
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        settings = _tls_settings(tmp_path)
        settings.port = taken.getsockname()[1]
        # Execute
        with pytest.raises(OSError):
            hosting.host(CONFIG, settings)
    # Assert
    assert not Path(settings.tls_dir).exists()
    assert list((tmp_path / TLS_DIR).iterdir()) == []


def _stale(root: Path, name: str, owner: str | None) -> Path:
    directory = root / TLS_DIR / name
    directory.mkdir(parents=True)
    (directory / "server.key").write_text("secret")
    if owner is not None:
        (directory / OWNER).write_text(owner)
    return directory


def test_stale_directories_are_deleted_and_those_of_live_servers_kept(tmp_path):
    # Prepare: a dead owner, no owner file, a live other process, and one of this process that is still serving
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(10)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        gone = [_stale(tmp_path, "dead", str(dead.pid)), _stale(tmp_path, "orphan", None),
                _stale(tmp_path, "ours", str(os.getpid()))]
        others = _stale(tmp_path, "other", str(alive.pid))
        serving = _stale(tmp_path, "serving", str(os.getpid()))
        # Execute
        removed = clean_stale(tmp_path, keep=[str(serving)])
        # Assert
        assert sorted(removed) == sorted(str(d) for d in gone)
        assert not any(d.exists() for d in gone)
        assert others.exists() and serving.exists()
    finally:
        alive.kill()
        alive.wait(10)


def test_the_dashboard_cleans_stale_tls_directories_when_it_starts(app_env):
    # Prepare: keys left by a dashboard that was killed while hosting a TLS server
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(10)
    left = _stale(app_env, "killed", str(dead.pid))
    # Execute
    at = new_app()
    # Assert
    assert not at.exception
    assert not left.exists()


def test_stopping_a_tls_server_on_the_deploy_page_deletes_its_keys(app_env):
    # Prepare
    from tests.test_page_deploy import deploy_page, hosted

    at = deploy_page(new_app(), port=0)
    at.checkbox(key="deploy_tls").check().run()
    at.button(key="start_server").click().run()
    (handle,) = hosted(app_env)
    directory = Path(handle.server.settings.tls_dir)
    assert directory.parent == app_env / TLS_DIR and (directory / "server.key").is_file()
    # Execute
    at.button(key="stop_server").click().run()
    # Assert
    assert not at.exception and handle.done
    assert not directory.exists()
