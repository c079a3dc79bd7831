"""``--cluster`` read and checked without a cluster: its forms, the addresses a run may listen on, the settings
that cannot go together, and a run whose clients did not all join failing with where they were to come from."""

from __future__ import annotations

import queue
import threading
import types

import pytest

from fl.federation.registry import ClientRegistry
from fl.runs.cli import main
from fl.runs.cluster_spec import ClusterSpec, cluster_problem, parse_cluster, route_address
from fl.runs.config import ConfigError, RunConfig
from fl.runs.simulation import allows_fewer, network
from fl.runs.sweep import GridError, knob_name


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
