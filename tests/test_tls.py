"""TLS transport: CA verification, certificate pinning, refusal of plain peers."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from fl.federation.client import ClientSettings, FederatedClient, LocalData
from fl.runs.config import RunConfig
from fl.federation.rounds import RoundRunner
from fl.federation.server import FederatedServer, ServerSettings
from fl.runs.build import build_run
from fl.wire.tls import client_context, make_certificates, server_context
from tests.test_cli import ENV, ROOT, Processes, _listening_port


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certificates(tmp_path_factory.mktemp("certs"), ["localhost", "127.0.0.1"])


def _tls_run(certs, client_settings: list[ClientSettings], expect: int = 1):
    """A TLS run; rounds start once ``expect`` clients have joined (the others are meant to be refused)."""
    plan = build_run(RunConfig(model="logreg", partition="iid", dataset="iris", clients=len(client_settings),
                               rounds=2, min_clients=1))
    data = plan.data
    server = FederatedServer(plan.task, ServerSettings(
        ssl_context=server_context(certs["cert"], certs["key"]), wait_for_clients=expect, join_timeout_s=20,
        token="t0ken"))
    host, port = server.bind()
    results: dict[int, object] = {}
    threads = []
    for i, settings in enumerate(client_settings):
        settings.host, settings.port = host, port
        X, y = data.client_data(i)
        client = FederatedClient(f"c{i}", LocalData(X, y, list(data.dataset.feature_names)), settings)
        t = threading.Thread(target=lambda i=i, c=client: results.__setitem__(i, c.run()), name=f"fl-tls-{i}",
                             daemon=True)
        t.start()
        threads.append(t)
    run = RoundRunner(server, plan.settings, plan.strategy(), plan.server_data).run()
    for t in threads:
        t.join(20)
    return run, results


def test_clients_verifying_the_ca_complete_a_run(certs):
    # Prepare
    settings = [ClientSettings(token="t0ken", ssl_context=client_context(cafile=certs["ca"]),
                               connect_timeout_s=10) for _ in range(2)]
    # Execute
    run, results = _tls_run(certs, settings, expect=2)
    # Assert
    assert run.status == "completed" and all(r["n_fit_clients"] == 2 for r in run.rounds)
    assert all(r.ok for r in results.values())


def test_pinned_certificate_is_accepted_and_a_wrong_pin_refused(certs):
    # Prepare
    good = ClientSettings(token="t0ken", ssl_context=client_context(pin_sha256=certs["pin"]), pin_sha256=certs["pin"],
                          connect_timeout_s=10)
    wrong_pin = "00" * 32
    bad = ClientSettings(token="t0ken", ssl_context=client_context(pin_sha256=wrong_pin), pin_sha256=wrong_pin,
                         connect_timeout_s=2)
    # Execute
    run, results = _tls_run(certs, [good, bad])
    # Assert
    assert run.status == "completed"
    assert results[0].ok
    assert not results[1].ok and "does not match --tls-pin" in results[1].reason


def test_plain_client_and_untrusted_ca_cannot_join(certs, tmp_path):
    # Prepare: a different CA that did not sign the server certificate
    other = make_certificates(tmp_path / "other", ["localhost"])
    good = ClientSettings(token="t0ken", ssl_context=client_context(cafile=certs["ca"]), connect_timeout_s=10)
    plain = ClientSettings(token="t0ken", connect_timeout_s=2)
    untrusted = ClientSettings(token="t0ken", ssl_context=client_context(cafile=other["ca"]), connect_timeout_s=2)
    # Execute
    run, results = _tls_run(certs, [good, plain, untrusted])
    # Assert
    assert run.status == "completed" and all(r["n_fit_clients"] == 1 for r in run.rounds)
    assert results[0].ok and not results[1].ok and not results[2].ok
    assert "certificate" in results[2].reason.lower()


def test_cli_server_and_client_over_tls(tmp_path):
    # Prepare: certificates from the CLI itself
    made = subprocess.run([sys.executable, "-m", "fl", "certs", "--out", str(tmp_path), "--host", "127.0.0.1"],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    procs = Processes()
    try:
        server = procs.spawn("server_new.py", "--dataset", "iris", "--port", "0", "--min-clients", "2", "--rounds",
                             "2", "--tls-cert", str(tmp_path / "server.pem"), "--tls-key", str(tmp_path / "server.key"),
                             "--token", "abc")
        port = _listening_port(server)
        clients = [procs.spawn("client_new.py", "--port", str(port), "--dataset", "iris", "--partition-id", str(i),
                               "--num-partitions", "2", "--tls-ca", str(tmp_path / "ca.pem"), "--token", "abc")
                   for i in range(2)]
        # Execute
        out, err = server.communicate(timeout=120)
        for c in clients:
            c.wait(timeout=30)
        # Assert
        assert server.returncode == 0, err
        assert out.count("round ") == 2 and all(c.returncode == 0 for c in clients)
    finally:
        procs.close()
