"""``--cluster`` read and checked without a cluster: its forms, the addresses a run may listen on, the settings
that cannot go together, and a run whose clients did not all join failing with where they were to come from."""

from __future__ import annotations

import queue
import threading
import types

import pytest

from fl.federation.client_registry import ClientRegistry
from fl.cli.main import main
from fl.runs.cluster import ClusterError, Placement, code_identity, file_digest
from fl.runs.cluster_spec import ClusterSpec, cluster_problem, parse_cluster, route_address
from fl.runs.config import ConfigError, RunConfig
from fl.runs.simulation import allows_fewer, network
from fl.runs.sweep_spec import GridError, knob_name


@pytest.mark.parametrize("text, spec, address", [
    ("local", ClusterSpec("local"), None),
    (" Ray ", ClusterSpec("ray"), None),
    ("dask://127.0.0.1:8786", ClusterSpec("dask", "127.0.0.1", 8786), "tcp://127.0.0.1:8786"),
    ("ray://head.example:10001", ClusterSpec("ray", "head.example", 10001), "ray://head.example:10001"),
    ("dask://[::1]:8786", ClusterSpec("dask", "::1", 8786), "tcp://[::1]:8786"),
])
def test_the_forms_of_a_cluster(text, spec, address):
    # Execute
    parsed = parse_cluster(text)
    # Assert
    assert parsed == spec and parsed.address == address


@pytest.mark.parametrize("text", ["dask", "dask://127.0.0.1", "dask://:8786", "spark://h:1", "dask://h:99999", ""])
def test_a_cluster_that_is_none_of_the_forms_is_one_sentence(text):
    # Execute
    problem = cluster_problem(text)
    # Assert
    assert problem is not None and "\n" not in problem and "dask://HOST:PORT" in problem


def test_a_local_run_never_listens_beyond_loopback_and_a_cluster_reaches_back():
    # Execute
    with pytest.raises(ConfigError) as outside:
        network(parse_cluster("local"), "0.0.0.0", None)
    with pytest.raises(ConfigError) as unadvertised:
        network(parse_cluster("dask://127.0.0.1:8786"), "0.0.0.0", None)
    # Assert
    assert "loopback only, not 0.0.0.0" in str(outside.value)
    assert "--advertise-host" in str(unadvertised.value)
    assert network(parse_cluster("local"), None, None) == ("127.0.0.1", None)
    assert network(parse_cluster("dask://127.0.0.1:8786"), None, None) == ("127.0.0.1", None)
    assert network(parse_cluster("ray"), "0.0.0.0", "10.1.2.3") == ("0.0.0.0", "10.1.2.3")
    assert route_address("localhost") == "127.0.0.1"


def test_settings_that_cannot_go_with_a_cluster_are_refused_by_name(capsys):
    # Execute
    code = main(["simulate", "--cluster", "dask://127.0.0.1:8786", "--workers", "0"])
    line = capsys.readouterr().err
    # Assert: one line naming the flags; a sweep never grids the cluster
    assert code == 2 and line.count("\n") == 1 and "--workers" in line and "--cluster local" in line
    with pytest.raises(GridError, match="one cluster named by --cluster"):
        knob_name("cluster")
    assert RunConfig(cluster="ray", workers=-1).validate().cluster == "ray"


def test_only_min_clients_lets_a_simulation_start_with_fewer():
    # Assert
    assert not allows_fewer(RunConfig(clients=10))
    assert not allows_fewer(RunConfig(clients=10, min_clients=10))
    assert allows_fewer(RunConfig(clients=10, min_clients=6))


class Registry(ClientRegistry):
    """Just the waiting: no socket, no client ever joins."""

    def __init__(self, fewest: int):
        self._lock = threading.Lock()
        self._clients = {}
        self.inbox = queue.Queue()
        self.stop_requested, self.start_now, self.accepting = threading.Event(), threading.Event(), threading.Event()
        self.last_leave_reason = None
        self.clients_alive = None
        self.settings = types.SimpleNamespace(wait_for_clients=200, join_timeout_s=0.2, fewest_to_start=fewest)
        self.join_note = lambda: "placed 2 of 3 hosts on dask://127.0.0.1:8786"


def test_a_run_whose_clients_did_not_all_join_fails_and_says_where_they_were():
    # Execute
    with pytest.raises(RuntimeError) as failed:
        Registry(fewest=200).wait_for_clients(1)
    # Assert
    assert str(failed.value) == ("only 0 of the 200 required clients joined within 0.2 s; "
                                 "placed 2 of 3 hosts on dask://127.0.0.1:8786")


class Checked(Placement):
    """A placement whose workers answer the check task as given, and whose slots are given."""

    engine = "Dask"

    def __init__(self, answers: dict, free: list[str] | None = None):
        super().__init__(parse_cluster("dask://127.0.0.1:8786"), "run")
        self.answers, self.free = answers, free or []

    def _probe(self, csv_path):
        return self.answers

    def _free_slots(self):
        return list(self.free)


def test_the_check_names_the_worker_whose_code_or_csv_differs(tmp_path):
    # Prepare
    csv = tmp_path / "sites.csv"
    csv.write_text("a,label\n1,0\n2,1\n")
    ours = code_identity()
    same = {**ours, "hostname": "node1", "csv": file_digest(str(csv))}
    # Execute
    problems = []
    for answers in ({"tcp://10.0.0.7:1": {**same, "digest": "0123"}},
                    {"tcp://10.0.0.7:1": {**same, "csv": None, "csv_error": "No such file or directory"}},
                    {"tcp://10.0.0.7:1": {**same, "csv": "feed"}}, {}):
        with pytest.raises(ClusterError) as refused:
            Checked(answers).check(str(csv))
        problems.append(str(refused.value))
    Checked({"tcp://10.0.0.7:1": same}).check(str(csv))  # the same code and bytes pass
    # Assert
    assert "worker tcp://10.0.0.7:1 (node1) runs fl" in problems[0] and "other code" in problems[0]
    assert "cannot use the CSV" in problems[1] and "No such file or directory" in problems[1]
    assert "its bytes differ" in problems[2] and "same path, with the same contents" in problems[2]
    assert "has no workers" in problems[3]
    assert all("\n" not in p for p in problems)


def test_hosts_take_the_free_slots_in_turn_and_auto_takes_them_all():
    # Execute
    auto = Checked({}, free=["w0", "w1", "w0"])
    auto.plan(None, n_clients=200, allow_fewer=False)
    partial = Checked({}, free=["w0", "w1"])
    partial.plan(3, n_clients=200, allow_fewer=True)
    # Assert
    assert (auto.n_hosts, auto.slots) == (3, ["w0", "w1", "w0"])
    assert (partial.n_hosts, partial.slots) == (3, ["w0", "w1"])
    assert "placed 2 of 3 hosts on dask://127.0.0.1:8786; 1 found no free worker slot" in partial.note()
