"""Who may join as whom, and how often: a hostile site scripted against each rule, honest sites unharmed.

Loopback only, in process: a real server, honest ``FederatedClient`` threads,
and hostile peers written by hand (raw hellos over ``Connection``). Every
socket is closed and every thread joined at the end.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from fl.federation import admission
from fl.federation.client import ClientSettings, FederatedClient, LocalData
from fl.federation.identity import JoinRate, identity_problem, parse_client_ids
from fl.federation.rounds import RoundRunner
from fl.federation.server import FederatedServer, ServerSettings
from fl.runs.build import build_run
from fl.runs.config import RunConfig
from fl.wire import Error, Hello, Welcome
from fl.wire.reference_peer import Connection
from fl.wire.tls import client_context, make_certificates, peer_names, server_context
from tests.test_admission import needs_loopback_aliases


class Federation:
    """A server for a short logreg run on iris and the client threads a test adds; ``close`` ends them all."""

    def __init__(self, n_parts: int = 3, rounds: int = 2, **settings):
        self.plan = build_run(RunConfig(model="logreg", partition="iid", dataset="iris", clients=n_parts,
                                        rounds=rounds, min_clients=1))
        self.events: list[dict] = []
        settings.setdefault("join_timeout_s", 30)
        self.server = FederatedServer(self.plan.task, ServerSettings(**settings), on_event=self.events.append)
        self.host, self.port = self.server.bind()
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.results: dict[str, object] = {}
        self.attempts: dict[str, list[str]] = {}
        self.conns: list[Connection] = []

    def client(self, part: int, client_id: str, **settings) -> None:
        """An honest client on partition ``part``, in a thread; its result lands in ``results[client_id]``."""
        X, y = self.plan.data.client_data(part)
        settings.setdefault("connect_timeout_s", 20)
        lines = self.attempts.setdefault(client_id, [])
        client = FederatedClient(client_id, LocalData(X, y, list(self.plan.data.dataset.feature_names)),
                                 ClientSettings(self.host, self.port, **settings), stop=self.stop,
                                 on_attempt=lambda n, problem, left: lines.append(problem))
        thread = threading.Thread(target=lambda: self.results.__setitem__(client_id, client.run()),
                                  name=f"fl-test-{client_id}", daemon=True)
        thread.start()
        self.threads.append(thread)

    def hello(self, client_id: str, token: str | None = None, source: str = "127.0.0.1") -> tuple[Connection, object]:
        """A scripted peer's hello and the server's answer; the connection stays open until ``close``."""
        sock = socket.create_connection((self.host, self.port), timeout=5, source_address=(source, 0))
        conn = Connection(sock)
        self.conns.append(conn)
        conn.send(Hello(client_id=client_id, n_samples=20, n_features=4, token=token))
        return conn, conn.recv(idle_timeout=5)

    def run(self):
        return RoundRunner(self.server, self.plan.settings, self.plan.strategy(), self.plan.server_data).run()

    def of(self, kind: str) -> list[dict]:
        return [e for e in list(self.events) if e["type"] == kind]

    def wait_for(self, condition, within: float = 15.0, what: str = "") -> None:
        deadline = time.monotonic() + within
        while not condition():
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what}")
            time.sleep(0.02)

    def close(self) -> None:
        self.server.stop()
        self.stop.set()
        for conn in self.conns:
            conn.close()
        self.server.close()
        for thread in self.threads:
            thread.join(15)


@pytest.fixture
def federation():
    made: list[Federation] = []

    def make(**kw) -> Federation:
        f = Federation(**kw)
        made.append(f)
        return f

    yield make
    for f in made:
        f.close()


def _charged(fed: Federation, client_id: str) -> list[dict]:
    """Failures, stragglers and flags of ``client_id``: what a round holds against a site."""
    return [e for e in fed.of("failure") + fed.of("straggler") + fed.of("flagged") if e["client_id"] == client_id]


# ---------------------------------------------------------------------- mutual TLS: the certificate's name
@pytest.fixture(scope="module")
def sites_pki(tmp_path_factory):
    return make_certificates(tmp_path_factory.mktemp("pki"), ["127.0.0.1"], clients=["site-a", "site-b"])


def _mtls(made: dict, name: str) -> ClientSettings:
    return ClientSettings(ssl_context=client_context(cafile=made["ca"], certfile=made[f"client:{name}"],
                                                     keyfile=made[f"client_key:{name}"]), connect_timeout_s=10)


def test_under_mutual_tls_a_certificate_joins_only_under_its_own_name(federation, sites_pki, no_thread_leaks):
    # Prepare: an mTLS server waiting for two sites; a hostile holder of site-a's certificate comes first,
    # claiming site-b's id
    made = sites_pki
    fed = federation(ssl_context=server_context(made["cert"], made["key"], made["ca"]), wait_for_clients=2)
    hostile = _mtls(made, "site-a")
    fed.client(0, "site-b", ssl_context=hostile.ssl_context, connect_timeout_s=10)
    fed.wait_for(lambda: fed.of("refused"), what="the hostile hello to be refused")
    # Execute: the real sites, each with its own certificate
    fed.client(1, "site-a", ssl_context=_mtls(made, "site-a").ssl_context)
    real_b = _mtls(made, "site-b")
    fed.threads[0].join(10)
    hostile_result = fed.results.pop("site-b")
    fed.client(2, "site-b", ssl_context=real_b.ssl_context)
    run = fed.run()
    for thread in fed.threads:
        thread.join(15)
    # Assert: the squatter was refused in words naming both names; both real sites trained every round
    assert not hostile_result.ok
    assert "client id 'site-b' is not the name in its certificate ('site-a')" in hostile_result.reason
    refused = fed.of("refused")
    assert [e["code"] for e in refused] == ["auth"] and "'site-a'" in refused[0]["message"]
    assert run.status == "completed" and [r["n_fit_clients"] for r in run.rounds] == [2, 2]
    assert fed.results["site-a"].ok and fed.results["site-b"].ok
    assert sorted(e["client_id"] for e in fed.of("join")) == ["site-a", "site-b"]
    assert not _charged(fed, "site-a") and not _charged(fed, "site-b")


def test_peer_names_reads_the_common_name_and_dns_alternative_names():
    # Prepare: getpeercert() dicts as the ssl module gives them
    ours = {"subject": ((("commonName", "site-a"),),)}
    theirs = {"subject": ((("organizationName", "Lab"),), (("commonName", "Lab A"),)),
              "subjectAltName": (("DNS", "lab-a"), ("IP Address", "10.0.0.1"), ("DNS", "lab-a"))}
    # Execute / Assert
    assert peer_names(ours) == ("site-a",)
    assert peer_names(theirs) == ("Lab A", "lab-a")
    assert peer_names(None) == () and peer_names({}) == ()
    assert identity_problem("lab-a", ("Lab A", "lab-a"), ()) is None
    assert identity_problem("x", (), ())[1].startswith("client id 'x' cannot be checked: its certificate names nobody")
    assert identity_problem("x", None, ()) is None  # no mutual TLS: no certificate to check against


# ---------------------------------------------------------------------- expected sites
def test_with_expected_sites_any_other_id_is_refused_and_the_sites_complete(federation):
    # Prepare
    fed = federation(token="s3cret", expected_clients=("biscoe", "dream"), wait_for_clients=2)
    # Execute: a token holder with an id of its own, then the two sites
    stranger, answer = fed.hello("torgersen", token="s3cret")
    fed.client(0, "biscoe", token="s3cret")
    fed.client(1, "dream", token="s3cret")
    run = fed.run()
    # Assert
    assert isinstance(answer, Error) and answer.code == "auth"
    assert answer.message == "client id 'torgersen' is not one of the 2 sites this server expects (--expect-clients)"
    assert "biscoe" not in answer.message  # a stranger is not told the sites' names
    assert run.status == "completed" and [r["n_fit_clients"] for r in run.rounds] == [2, 2]
    assert sorted(e["client_id"] for e in fed.of("join")) == ["biscoe", "dream"]


def test_parse_client_ids_reads_what_the_cli_and_the_deploy_page_take():
    assert parse_client_ids("biscoe,dream, torgersen") == ("biscoe", "dream", "torgersen")
    assert parse_client_ids("  ") == ()
    with pytest.raises(ValueError, match="is not a client id"):
        parse_client_ids("ok,not ok!")
    with pytest.raises(ValueError, match="dream given twice"):
        parse_client_ids("dream,biscoe,dream")


# ---------------------------------------------------------------------- a squatter without mutual TLS
def test_a_squatter_holding_the_token_delays_the_real_site_which_retries_and_joins(federation):
    # Prepare: two expected sites; a token holder says "site2" first and holds it
    fed = federation(token="s3cret", expected_clients=("site1", "site2"), wait_for_clients=2)
    squatter, welcome = fed.hello("site2", token="s3cret")
    assert isinstance(welcome, Welcome)
    # Execute: the real site2 is refused, says why and keeps trying; the squatter goes; then site1 comes
    fed.client(1, "site2", token="s3cret")
    fed.wait_for(lambda: len(fed.attempts["site2"]) >= 2, what="site2 to retry")
    squatter.close()
    fed.wait_for(lambda: len([e for e in fed.of("join") if e["client_id"] == "site2"]) == 2,
                 what="the real site2 to join")
    fed.client(0, "site1", token="s3cret")
    run = fed.run()
    for thread in fed.threads:
        thread.join(15)
    # Assert: the real site2 was told in words, did not give up, trained every round; nothing charged to it
    assert all("already connected" in line and "a live session holds this id" in line
               for line in fed.attempts["site2"])
    assert fed.results["site2"].ok and fed.results["site1"].ok
    assert run.status == "completed" and [r["n_fit_clients"] for r in run.rounds] == [2, 2]
    assert not _charged(fed, "site2") and not _charged(fed, "site1")


def test_a_site_whose_id_stays_taken_leaves_after_its_connect_window_with_the_reason(federation):
    # Prepare: the squatter holds the id for the whole window
    fed = federation(token="s3cret", wait_for_clients=5)
    _, welcome = fed.hello("site2", token="s3cret")
    assert isinstance(welcome, Welcome)
    start = time.monotonic()
    # Execute
    fed.client(1, "site2", token="s3cret", connect_timeout_s=2)
    fed.threads[-1].join(15)
    # Assert: it tried for its window (not one refusal and out), then left with the reason
    result = fed.results["site2"]
    assert not result.ok and "client id 'site2' is already connected" in result.reason
    # It gives up when the next wait would end past its 2 s window: waits of 0.05 s doubling, each ±20 %, put
    # that between 1.04 s (the 5th wait drawn long after four drawn short) and 2 s, plus the handshakes.
    assert 1.0 < time.monotonic() - start < 10 and len(fed.attempts["site2"]) >= 2


# ---------------------------------------------------------------------- join/leave rates
def _flood(fed: Federation, ids, stop: threading.Event, source: str = "127.0.0.1") -> dict[str, int]:
    """Join and leave as fast as the server answers, cycling through ``ids``, until ``stop`` or the server has
    closed; counts the answers by kind (welcome, rate, other)."""
    counts = {"welcome": 0, "rate": 0, "other": 0}
    i = 0
    while not stop.is_set():
        cid = ids[i % len(ids)]
        i += 1
        try:
            with socket.create_connection((fed.host, fed.port), timeout=5, source_address=(source, 0)) as sock:
                conn = Connection(sock)
                conn.send(Hello(client_id=cid, n_samples=20, n_features=4, token="s3cret"))
                answer = conn.recv(idle_timeout=5)
        except ConnectionRefusedError:  # the run is over and the server closed
            break
        except OSError:
            counts["other"] += 1
            continue
        kind = "welcome" if isinstance(answer, Welcome) else "rate" if isinstance(answer, Error) and \
            answer.code == "rate" else "other"
        counts[kind] += 1
    return counts


def test_a_join_leave_flood_of_one_id_is_cut_at_its_limit_while_an_honest_client_runs(federation, monkeypatch):
    # Prepare: 5 joins of one id per address and window; refusals summarised over 0.5 s; the rounds start when
    # the test says (start_now)
    monkeypatch.setattr(admission, "REFUSAL_WINDOW_S", 0.5)
    fed = federation(token="s3cret", max_joins_per_client=5, wait_for_clients=100, rounds=3)
    fed.client(0, "honest", token="s3cret")
    fed.wait_for(lambda: fed.of("join"), what="the honest client")
    stop = threading.Event()
    counts: dict[str, int] = {}
    flooder = threading.Thread(target=lambda: counts.update(_flood(fed, ["flood"], stop)), name="fl-test-flood",
                               daemon=True)
    # Execute: the flood from the honest client's address, for 2 s before the rounds and during them
    started = time.monotonic()
    flooder.start()
    time.sleep(2.0)
    fed.server.start_now.set()
    run = fed.run()
    stop.set()
    flooder.join(10)
    seconds = time.monotonic() - started
    fed.threads[0].join(15)
    # Assert: 5 sessions, every other hello refused "rate"; the refusals summarised; the honest client unharmed
    hellos = counts["welcome"] + counts["rate"]
    print(f"\none id from one address: {counts['welcome']} joins, {counts['rate']} refused in {seconds:.1f} s "
          f"({hellos / seconds:.0f} hellos/s)")
    assert counts["welcome"] == 5 and counts["rate"] > 20 and counts["other"] <= 1, counts  # 1: cut by the end
    assert len([e for e in fed.of("join") if e["client_id"] == "flood"]) == 5
    rate = [e for e in fed.of("refused") if e["code"] == "rate"]
    assert sum(e["count"] for e in rate) >= counts["rate"] - 20 and len(rate) <= 10 + seconds / 0.5 + 2
    assert "client id 'flood' joined 5 times from 127.0.0.1 in the last 60 s (max_joins_per_client)" \
        in rate[0]["message"]
    assert run.status == "completed" and len(run.rounds) == 3 and fed.results["honest"].ok
    assert not _charged(fed, "honest")


@needs_loopback_aliases
def test_a_flood_of_fresh_ids_from_one_address_is_cut_there_and_other_addresses_join(federation):
    # Prepare: 20 joins per address and window; the flood comes from 127.0.0.2
    fed = federation(token="s3cret", max_joins_per_address=20, wait_for_clients=100, rounds=2)
    stop = threading.Event()
    counts: dict[str, int] = {}
    flooder = threading.Thread(target=lambda: counts.update(_flood(fed, [f"f{i}" for i in range(1000)], stop,
                                                                   "127.0.0.2")),
                               name="fl-test-flood", daemon=True)
    # Execute: the flood first, then an honest client from 127.0.0.1
    flooder.start()
    fed.wait_for(lambda: [e for e in fed.of("refused") if e["code"] == "rate"], what="the flood to be cut")
    fed.client(0, "honest", token="s3cret")
    fed.wait_for(lambda: [e for e in fed.of("join") if e["client_id"] == "honest"], what="the honest client")
    fed.server.start_now.set()
    run = fed.run()
    stop.set()
    flooder.join(10)
    fed.threads[0].join(15)
    # Assert
    assert counts["welcome"] == 20 and counts["rate"] > 0, counts
    assert run.status == "completed" and fed.results["honest"].ok and not _charged(fed, "honest")
    rate = [e for e in fed.of("refused") if e["code"] == "rate"]
    assert "20 clients joined from 127.0.0.2 in the last 60 s (max_joins_per_address)" in rate[0]["message"]


@needs_loopback_aliases
def test_new_ids_are_bounded_per_address_and_old_ones_may_rejoin(federation):
    # Prepare: room for 2 clients at once, so 2 fresh ids per address
    fed = federation(token="s3cret", max_clients=2, wait_for_clients=2)
    # Execute: two fresh ids join and leave from 127.0.0.1, a third tries; another address brings its own
    for cid in ("a", "b"):
        conn, answer = fed.hello(cid, token="s3cret")
        assert isinstance(answer, Welcome), (cid, answer)
        conn.close()
        fed.wait_for(lambda: cid not in fed.server.active_ids(), what=f"{cid} to leave")
    _, third = fed.hello("c", token="s3cret")
    _, again = fed.hello("a", token="s3cret")
    _, elsewhere = fed.hello("c", token="s3cret", source="127.0.0.2")
    # Assert: the fresh-id flood of one address ends there; a site elsewhere and an id seen before still join
    assert isinstance(third, Error) and third.code == "full"
    assert third.message == "2 client ids have joined this run from 127.0.0.1 (max_clients): a new id may not " \
                            "join from there (one seen before may)"
    assert isinstance(again, Welcome) and isinstance(elsewhere, Welcome)
    assert sorted(s.client_id for s in fed.server.slots()) == ["a", "b", "c"]


def test_join_rate_counts_a_window_per_address_and_id_and_forgets_old_keys():
    # Prepare: a clock the test moves
    now = [0.0]
    rate = JoinRate(per_address=3, per_client=2, window_s=10, clock=lambda: now[0])
    # Execute / Assert: per id, per address, and the window sliding
    for _ in range(2):
        assert rate.problem("a", "x") is None
        rate.joined("a", "x")
    assert rate.problem("a", "x")[0] == "rate" and rate.problem("b", "x") is None  # another address: its own
    assert rate.problem("a", "y") is None
    rate.joined("a", "y")
    assert "3 clients joined from a" in rate.problem("a", "z")[1]
    now[0] = 10.5
    assert rate.problem("a", "x") is None and rate.problem("a", "z") is None
    rate.joined("c", "q")  # a window later: the keys with no recent join are dropped
    assert set(rate._address) == {"c"} and set(rate._client) == {("c", "q")}
    # ... and the ids a run admits: per address, then in all
    ids = JoinRate(per_address=100, per_client=100, new_ids_per_address=2, new_ids=3, clock=lambda: now[0])
    for address, cid in (("a", "x"), ("a", "y"), ("b", "z")):
        assert ids.problem(address, cid) is None
        ids.joined(address, cid)
    assert "2 client ids have joined this run from a" in ids.problem("a", "new")[1]
    assert ids.problem("b", "new")[1].startswith("3 client ids have joined this run (4 x max_clients)")
    assert ids.problem("a", "x") is None and ids.problem("b", "y") is None  # seen before: welcome back


# ---------------------------------------------------------------------- the command line
@pytest.fixture(scope="module")
def cli_certs(tmp_path_factory):
    return make_certificates(tmp_path_factory.mktemp("cli"), ["127.0.0.1"], clients=["alpha", "beta", "gamma"])


def _bad_flags(made: dict) -> list[tuple[list[str], str]]:
    server = ["server", "--dataset", "iris", "--port", "0"]
    client = ["client", "--dataset", "iris", "--partition-id", "0", "--num-partitions", "2", "--port", "1",
              "--tls-ca", made["ca"], "--tls-client-cert", made["client:alpha"], "--tls-client-key",
              made["client_key:alpha"]]
    return [
        (server + ["--expect-clients", "a,b,a"], "a given twice"),
        (server + ["--expect-clients", "a,no!"], "'no!' is not a client id"),
        (server + ["--expect-clients", " , "], "name at least one client id"),
        (server + ["--expect-clients", "a,b", "--min-clients", "3"], "--min-clients 3 can never be reached"),
        (server + ["--max-joins-per-client", "0"], "must be 1 or more"),
        (client + ["--client-id", "beta"], "--client-id 'beta' is not the name in --tls-client-cert ('alpha')"),
        (client[:4] + ["0-1"] + client[5:], "a client certificate names one client"),
    ]


def test_bad_identity_flags_exit_2_with_one_line(cli_certs, capsys):
    from fl.cli.main import main

    for argv, needle in _bad_flags(cli_certs):
        # Execute
        code = main(argv)
        # Assert
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert code == 2, argv
        assert len(lines) == 1 and needle in lines[0], (argv, lines)


def test_cli_expected_sites_under_mutual_tls_join_by_their_certificates_names(cli_certs):
    # Prepare: a server expecting alpha and beta (rounds start once both are in); three certified machines
    from tests.test_cli import Processes, _listening_port

    made = cli_certs
    procs = Processes()
    try:
        server = procs.spawn("server_new.py", "--dataset", "iris", "--port", "0", "--rounds", "2", "--wait", "60",
                             "--token", "s3cret", "--tls-cert", made["cert"], "--tls-key", made["key"],
                             "--tls-client-ca", made["ca"], "--expect-clients", "alpha,beta")
        port = _listening_port(server)

        def machine(name: str, part: int):
            return procs.spawn("client_new.py", "--port", str(port), "--token", "s3cret", "--dataset", "iris",
                               "--partition-id", str(part), "--num-partitions", "3", "--tls-ca", made["ca"],
                               "--tls-client-cert", made[f"client:{name}"], "--tls-client-key",
                               made[f"client_key:{name}"], "--connect-timeout", "10")

        # Execute: no --client-id anywhere: each machine is named by its certificate
        gamma = machine("gamma", 2)
        gamma_out, gamma_err = gamma.communicate(timeout=60)
        alpha, beta = machine("alpha", 0), machine("beta", 1)
        out, err = server.communicate(timeout=120)
        alpha_out, _ = alpha.communicate(timeout=30)
        beta.communicate(timeout=30)
    finally:
        procs.close()
    # Assert: gamma refused in words, the two sites joined under their names and finished
    assert gamma.returncode == 1
    assert "client id 'gamma' is not one of the 2 sites this server expects" in gamma_out + gamma_err
    assert server.returncode == 0, err
    assert out.count("round ") == 2 and "alpha joined" in err and "beta joined" in err
    assert alpha.returncode == 0 and beta.returncode == 0 and alpha_out.startswith("alpha: connecting")
