"""Mutual TLS: the server admits only clients whose certificate its CA signed; the rest are refused in words.

Over loopback: in-process (server object, client threads) and as the command
line runs it (server and client processes). Every process is killed and
every thread joined at the end.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from fl.federation.client import ClientSettings, FederatedClient, LocalData
from fl.federation.rounds import RoundRunner
from fl.federation.server import FederatedServer, ServerSettings
from fl.runs.build import build_run
from fl.cli.main import main
from fl.runs.config import RunConfig
from fl.wire.tls import client_context, issue_client_certificates, make_certificates, server_context
from tests.test_cli import ENV, ROOT, Processes, _listening_port

NO_CERT = "the client sent no certificate"
NOT_SIGNED = "the client's certificate was not accepted"
CLIENT_SAYS = "closed the TLS connection before answering hello: if it requires client certificates, pass " \
              "--tls-client-cert and --tls-client-key"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """Our CA (server + client 'alice'), and another CA with its own client 'mallory'."""
    ours = make_certificates(tmp_path_factory.mktemp("ours"), ["127.0.0.1", "localhost"], clients=["alice"])
    theirs = make_certificates(tmp_path_factory.mktemp("theirs"), ["127.0.0.1"], clients=["mallory"])
    return ours, theirs


def _mtls_run(ours: dict, clients: dict[str, ClientSettings], expect: int = 1):
    """A 2-round mTLS run; rounds start once ``expect`` clients joined (the others are meant to be refused)."""
    plan = build_run(RunConfig(model="logreg", partition="iid", dataset="iris", clients=len(clients), rounds=2,
                               min_clients=1))
    events: list[dict] = []
    server = FederatedServer(plan.task, ServerSettings(
        ssl_context=server_context(ours["cert"], ours["key"], ours["ca"]), wait_for_clients=expect,
        join_timeout_s=20), on_event=events.append)
    host, port = server.bind()
    results: dict[str, object] = {}
    threads = []
    for i, (cid, settings) in enumerate(clients.items()):
        settings.host, settings.port = host, port
        X, y = plan.data.client_data(i)
        client = FederatedClient(cid, LocalData(X, y, list(plan.data.dataset.feature_names)), settings)
        thread = threading.Thread(target=lambda c=client: results.__setitem__(c.client_id, c.run()),
                                  name=f"fl-mtls-{cid}", daemon=True)
        thread.start()
        threads.append(thread)
    run = RoundRunner(server, plan.settings, plan.strategy(), plan.server_data).run()
    for thread in threads:
        thread.join(20)
    return run, results, [e for e in events if e["type"] == "refused"]


def test_a_client_with_a_certificate_from_the_ca_joins_and_the_others_are_refused(pki, no_thread_leaks):
    # Prepare: alice (our CA), nobody (no certificate), mallory (another CA), the server's own certificate
    ours, theirs = pki
    ca = ours["ca"]
    clients = {
        "alice": ClientSettings(ssl_context=client_context(cafile=ca, certfile=ours["client:alice"],
                                                           keyfile=ours["client_key:alice"]), connect_timeout_s=10),
        "nobody": ClientSettings(ssl_context=client_context(cafile=ca), connect_timeout_s=5),
        "mallory": ClientSettings(ssl_context=client_context(
            cafile=ca, certfile=theirs["client:mallory"], keyfile=theirs["client_key:mallory"]), connect_timeout_s=5),
        "server": ClientSettings(ssl_context=client_context(cafile=ca, certfile=ours["cert"], keyfile=ours["key"]),
                                 connect_timeout_s=5),
    }
    # Execute
    run, results, refused = _mtls_run(ours, clients)
    # Assert: alice trained every round, the others never got past TLS; both sides said why in one line
    assert run.status == "completed" and [r["n_fit_clients"] for r in run.rounds] == [1, 1]
    assert results["alice"].ok
    for cid in ("nobody", "mallory", "server"):
        assert not results[cid].ok and CLIENT_SAYS in results[cid].reason and "\n" not in results[cid].reason
    assert {e["code"] for e in refused} == {"tls"}
    messages = sorted(e["message"] for e in refused)
    assert len(messages) == 3 and all("\n" not in m for m in messages)
    assert sum(NO_CERT in m for m in messages) == 1
    assert sum(NOT_SIGNED in m for m in messages) == 2  # another CA's, and a server-only certificate


def test_certs_issues_client_certificates_with_the_ca_it_keeps(tmp_path, capsys):
    # Prepare / Execute: a CA, a server and two clients; later one more client with the same CA
    assert main(["certs", "--out", str(tmp_path), "--host", "127.0.0.1", "--client", "a", "--client", "b"]) == 0
    first = capsys.readouterr().out
    pem = (tmp_path / "server.pem").read_bytes()
    assert main(["certs", "--out", str(tmp_path), "--client", "c"]) == 0
    later = capsys.readouterr().out
    # Assert: the old outputs are all there, the server certificate untouched, every key private
    assert "--tls-ca" in first and "--tls-pin" in first and "--tls-client-ca" in first
    assert "client-c.pem" in later and "server.pem" not in later
    assert (tmp_path / "server.pem").read_bytes() == pem
    for name in ("ca.key", "server.key", "client-a.key", "client-b.key", "client-c.key"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600, name
    # ... and c's certificate is accepted by a server that trusts that CA
    server_context(str(tmp_path / "server.pem"), str(tmp_path / "server.key"), str(tmp_path / "ca.pem"))
    client_context(cafile=str(tmp_path / "ca.pem"), certfile=str(tmp_path / "client-c.pem"),
                   keyfile=str(tmp_path / "client-c.key"))
    with pytest.raises(ValueError, match="holds no CA"):
        issue_client_certificates(tmp_path / "empty", ["x"])


@pytest.fixture(scope="module")
def cli_pki(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli")
    made = make_certificates(out, ["127.0.0.1"], clients=["alice"])
    return out, made


def _bad(cli_pki) -> list[tuple[list[str], str]]:
    out, made = cli_pki
    server = ["server", "--dataset", "iris", "--port", "0", "--tls-cert", made["cert"], "--tls-key", made["key"]]
    client = ["client", "--dataset", "iris", "--partition-id", "0", "--num-partitions", "2", "--port", "1"]
    own = ["--tls-client-cert", made["client:alice"], "--tls-client-key", made["client_key:alice"]]
    return [
        (server + ["--tls-client-ca", str(out / "nope.pem")], "cannot read --tls-client-ca"),
        (server + ["--tls-client-ca", made["key"]], "holds no PEM CA certificate"),
        (server[:5] + ["--tls-client-ca", made["ca"]], "--tls-client-ca needs TLS"),
        (server[:7] + ["--tls-key", made["client_key:alice"]], "is not the private key of --tls-cert"),
        (client + ["--tls-ca", made["ca"], "--tls-client-cert", str(out / "nope.pem"), "--tls-client-key",
                   made["client_key:alice"]], "cannot read --tls-client-cert"),
        (client + ["--tls-ca", made["ca"], "--tls-client-cert", made["client:alice"]], "needs both"),
        (client + own, "--tls-client-cert needs TLS"),
        (client + ["--tls-ca", made["ca"], "--tls-client-cert", made["client:alice"], "--tls-client-key",
                   made["key"]], "is not the private key of --tls-client-cert"),
        (client + ["--tls-ca", str(out)], "cannot read --tls-ca"),
        (client + ["--tls-pin", "abc"], "64 hex digits"),
        (["certs", "--out", str(out), "--client", "../x"], "client name"),
        (["certs", "--out", str(out), "--client", "x", "--host", "h"], "already holds a CA"),
        (["certs", "--out", str(out / "ca.pem"), "--client", "x"], "cannot write"),
    ]


def test_bad_tls_flags_exit_2_with_one_line(cli_pki, capsys):
    for argv, needle in _bad(cli_pki):
        # Execute
        code = main(argv)
        # Assert
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert code == 2, argv
        assert len(lines) == 1 and needle in lines[0], (argv, lines)


def test_cli_server_with_a_client_ca_admits_a_certified_client_and_refuses_one_without(tmp_path):
    # Prepare
    made = make_certificates(tmp_path, ["127.0.0.1"], clients=["alice"])
    procs = Processes()
    try:
        server = procs.spawn("server_new.py", "--dataset", "iris", "--port", "0", "--min-clients", "1", "--rounds",
                             "2", "--wait", "60", "--token", "abc", "--tls-cert", made["cert"], "--tls-key",
                             made["key"], "--tls-client-ca", made["ca"])
        port = _listening_port(server)
        common = ["--port", str(port), "--token", "abc", "--dataset", "iris", "--num-partitions", "2",
                  "--tls-ca", made["ca"], "--connect-timeout", "10"]
        # Execute: first a client without a certificate, then alice
        nobody = procs.spawn("client_new.py", *common, "--partition-id", "1")
        nobody_out, nobody_err = nobody.communicate(timeout=60)
        alice = procs.spawn("client_new.py", *common, "--partition-id", "0", "--tls-client-cert",
                            made["client:alice"], "--tls-client-key", made["client_key:alice"])
        out, err = server.communicate(timeout=120)
        alice.wait(timeout=30)
        # Assert
        assert nobody.returncode == 1 and CLIENT_SAYS in nobody_out + nobody_err
        assert "Traceback" not in nobody_out + nobody_err
        assert alice.returncode == 0, alice.stderr.read()
        assert server.returncode == 0, err
        assert out.count("round ") == 2
        refusals = [line for line in err.splitlines() if "(tls)" in line]
        assert len(refusals) == 1 and NO_CERT in refusals[0], err
    finally:
        procs.close()


def test_server_new_takes_the_same_flags():
    # server_new.py is the CLI's server command: its --help lists the mutual-TLS flag
    out = subprocess.run([sys.executable, str(Path(ROOT) / "server_new.py"), "--help"], cwd=ROOT, env=ENV,
                         capture_output=True, text=True, timeout=60).stdout
    assert "--tls-client-ca" in out
    out = subprocess.run([sys.executable, str(Path(ROOT) / "client_new.py"), "--help"], cwd=ROOT, env=ENV,
                         capture_output=True, text=True, timeout=60).stdout
    assert "--tls-client-cert" in out and "--tls-client-key" in out
