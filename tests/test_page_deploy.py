"""The Deploy page, driven by AppTest: host a server, let real client processes join, finish a run."""

from __future__ import annotations

import shlex
import socket
import subprocess
import sys

import numpy as np
import pytest

from tests.apptest_helpers import ROOT, new_app, run_until, texts
from fl.runs.config import RunConfig
from ui import deploy_view as deploy


def deploy_page(at, *, port: int = 0, rounds: int = 3, partitions: int = 2, wait_for: int = 3):
    """The Deploy page with the form set for a small run on 127.0.0.1."""
    at.switch_page("app_pages/deploy.py").run()
    at.text_input(key="deploy_host").set_value("127.0.0.1")
    at.number_input(key="deploy_port").set_value(port)
    at.number_input(key="deploy_wait_for").set_value(wait_for)
    at.selectbox(key="deploy_cfg_dataset").set_value("iris")
    at.slider(key="deploy_cfg_clients").set_value(partitions)
    at.slider(key="deploy_cfg_rounds").set_value(rounds)
    at.slider(key="deploy_cfg_local_epochs").set_value(2)
    at.slider(key="deploy_cfg_fraction").set_value(1.0)
    return at.run()


def hosted(app_env):
    from ui.app_state import _registry

    return _registry(str(app_env)).active(kind="hosted")


@pytest.fixture
def processes():
    """Client processes a test starts; killed at teardown if still alive."""
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def test_form_renders_with_defaults_and_a_stable_token(app_env):
    # Execute
    at = new_app()
    at.switch_page("app_pages/deploy.py").run()
    token = at.text_input(key="deploy_token").value
    at.run()
    # Assert
    assert not at.exception and not at.error
    assert "Deploy" in texts(at.title)
    assert at.text_input(key="deploy_host").value == "127.0.0.1"
    assert at.number_input(key="deploy_port").value == 8080
    assert at.number_input(key="deploy_wait_for").value == 2
    assert len(token) >= 12 and not token.startswith("-")
    assert at.text_input(key="deploy_token").value == token  # reruns keep it
    assert at.button(key="start_server").label == "Start server"


def test_two_client_processes_join_and_the_run_completes(app_env, processes):
    # Prepare: wait for 3, so only "Start rounds now" starts the rounds with the 2 that come
    at = deploy_page(new_app(), port=0, rounds=3, partitions=2, wait_for=3)
    # Execute: host
    at.button(key="start_server").click().run()
    assert not at.exception and not at.error
    (handle,) = hosted(app_env)
    port = handle.server.address[1]
    commands = at.code[0].value.splitlines()
    assert len(commands) == 2
    assert f"--port {port}" in commands[0] and "--partition-id 1 --num-partitions 2" in commands[1]
    assert f"--token {handle.server.settings.token}" in commands[0]
    assert "--csv my_data.csv --target label" in at.code[1].value
    assert at.button(key="start_rounds_now").disabled  # nobody here yet
    # Execute: run exactly the commands shown, as separate processes
    for command in commands:
        args = shlex.split(command)
        assert args[:2] == ["python", "client_new.py"]
        processes.append(subprocess.Popen([sys.executable, *args[1:]], cwd=ROOT, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE))
    run_until(at, lambda a: "Clients: 2 joined" in texts(a.subheader), timeout=30)
    assert list(at.dataframe[0].value["Client"]) == ["client_000", "client_001"]
    at.button(key="start_rounds_now").click().run()
    run_until(at, lambda a: len(a.success) > 0, timeout=40)
    # Assert
    assert not at.exception and not at.error
    assert "Finished 3 rounds" in texts(at.success)
    assert handle.result.status == "completed" and len(handle.result.rounds) == 3
    for proc in processes:
        assert proc.wait(timeout=15) == 0, proc.stderr.read().decode()
    assert at.button(key="host_new") is not None
    # Execute: a new run is offered once this one is over
    at.button(key="host_new").click().run()
    assert at.button(key="start_server").label == "Start server"


def test_port_in_use_shows_what_to_do(app_env):
    # Prepare: hold a port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        port = held.getsockname()[1]
        at = deploy_page(new_app(), port=port)
        # Execute
        at.button(key="start_server").click().run()
    # Assert
    assert not at.exception
    assert f"Port {port} is already in use" in texts(at.error)
    assert hosted(app_env) == []


def test_unknown_host_shows_what_to_do(app_env):
    # Prepare
    at = deploy_page(new_app())
    at.text_input(key="deploy_host").set_value("no-such-host.invalid").run()
    # Execute
    at.button(key="start_server").click().run()
    # Assert
    assert not at.exception
    assert "not an address of this machine" in texts(at.error)
    assert hosted(app_env) == []


def test_stop_server_ends_the_hosted_run_and_a_new_session_finds_a_live_one(app_env):
    # Prepare
    at = deploy_page(new_app())
    at.button(key="start_server").click().run()
    (handle,) = hosted(app_env)
    # Execute: a reload (new session) finds the live hosted run
    other = new_app()
    other.switch_page("app_pages/deploy.py").run()
    assert f"Hosted run `{handle.run_id}`" in texts(other.caption)
    at.button(key="stop_server").click().run()
    # Assert
    assert not at.exception
    assert handle.done and hosted(app_env) == []
    assert "Stopped" in texts(at.warning)


def test_client_commands_for_every_interface_and_a_non_iid_split():
    # Prepare
    config = RunConfig(dataset="synthetic", n_samples=500, n_features=8, n_classes=3, clients=3,
                       partition="shards", shards_per_client=3, seed=7, aggregation="stacking", model="knn")
    # Execute
    host, note = deploy.command_host("0.0.0.0")
    commands = deploy.partition_commands(config, host, 9000, None)
    # Assert: the flags that differ from the defaults, generated from the config's knobs
    assert host == socket.gethostname() and host in note
    assert len(commands) == 3
    assert commands[2] == (f"python client_new.py --host {shlex.quote(host)} --port 9000 --reconnect 600 "
                           "--dataset synthetic "
                           "--n-samples 500 --n-features 8 --n-classes 3 --partition shards --shards-per-client 3 "
                           "--aggregation stacking --seed 7 --partition-id 2 --num-partitions 3")
    assert deploy.partition_commands(RunConfig(dataset="csv"), host, 9000, "t") == []
    assert "--target y" in deploy.csv_command(RunConfig(dataset="csv", target="y"), "h", 1, "t")


def test_a_client_built_from_the_commands_gets_the_servers_split(tmp_path):
    # Bug: a stacking client rebuilt "partition i of N" without the server's validation split, so it trained on
    # the rows the meta-learner is fitted on. Now the commands carry the split and the client rebuilds it.
    from fl.runs.build import build_run, client_partition, data_split
    from fl.cli.main import build_parser
    from fl.cli.flags import config_from_args

    config = RunConfig(dataset="breast_cancer", clients=3, model="random_forest", aggregation="stacking")
    plan = build_run(config)
    args = build_parser().parse_args(["client"] + deploy.data_flags(config))
    client_config = config_from_args(args, clients=3)
    # Execute
    X, y, _ = client_partition(client_config, 1, 3)
    # Assert: the same rows as the server's partition 1, none of them in its validation or test split
    X_server, _ = plan.data.client_data(1)
    np.testing.assert_array_equal(X, X_server)
    held_out = {row.tobytes() for row in np.vstack([plan.data.split.X_val, plan.data.split.X_test])}
    assert not any(row.tobytes() in held_out for row in X)
    assert data_split(client_config) == plan.task.data_split


def test_tls_server_commands_pin_its_certificate_and_pinned_clients_finish(app_env, processes):
    # Prepare
    at = deploy_page(new_app(), port=0, rounds=2, partitions=2, wait_for=2)
    at.checkbox(key="deploy_tls").check().run()
    # Execute
    at.button(key="start_server").click().run()
    (handle,) = hosted(app_env)
    commands = at.code[0].value.splitlines()
    listening = " ".join(m.value for m in at.markdown)
    for command in commands:
        processes.append(subprocess.Popen([sys.executable, *shlex.split(command)[1:]], cwd=ROOT,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    run_until(at, lambda a: len(a.success) > 0, timeout=60)
    # Assert
    assert not at.exception and not at.error
    assert handle.server.settings.tls_pin and f"--tls-pin {handle.server.settings.tls_pin}" in commands[0]
    assert "· TLS" in listening
    assert handle.result.status == "completed"
    for proc in processes:
        assert proc.wait(timeout=15) == 0, proc.stderr.read().decode()


def test_expected_sites_name_the_client_commands_and_only_they_may_join(app_env):
    # Prepare: two expected sites for a split in two
    at = deploy_page(new_app(), port=0, partitions=2, wait_for=2)
    at.text_input(key="deploy_expected").set_value("alpha, beta").run()
    # Execute
    at.button(key="start_server").click().run()
    # Assert: the server expects them, each partition command is named after one, the CSV command after each
    assert not at.exception and not at.error
    (handle,) = hosted(app_env)
    assert handle.server.settings.expected_clients == ("alpha", "beta")
    commands = at.code[0].value.splitlines()
    assert commands[0].endswith("--partition-id 0 --num-partitions 2 --client-id alpha")
    assert commands[1].endswith("--partition-id 1 --num-partitions 2 --client-id beta")
    assert [line.rsplit(" ", 1)[-1] for line in at.code[1].value.splitlines()] == ["alpha", "beta"]
    assert "only the 2 expected sites may join" in " ".join(m.value for m in at.markdown)
    handle.stop()
    handle.wait(10)


def test_expected_sites_that_cannot_name_the_commands_are_refused_in_words(app_env):
    # Prepare / Execute: a bad id, a site list that does not match the partitions, fewer sites than awaited
    cases = [("alpha, no way!", 2, 2, "is not a client id"), ("alpha, beta, gamma", 2, 2, "names 3 sites, but the "
                                                                                         "split has 2 partitions"),
             ("alpha", 2, 2, "more than the 1 expected sites")]
    for sites, partitions, wait_for, needle in cases:
        at = deploy_page(new_app(), port=0, partitions=partitions, wait_for=wait_for)
        at.text_input(key="deploy_expected").set_value(sites).run()
        at.button(key="start_server").click().run()
        # Assert: nothing hosted, one sentence that says what to change
        assert not at.exception
        assert needle in texts(at.error), (sites, texts(at.error))
        assert hosted(app_env) == []


def test_a_column_splits_commands_keep_their_site_names_and_unexpected_ones_are_named():
    # Prepare: a column split's sites are named after its values, not after the expected list
    from types import SimpleNamespace

    config = RunConfig(dataset="csv", csv_path="heart.csv", target="disease", partition="column",
                       split_column="hospital", clients=3)
    handle = SimpleNamespace(server=SimpleNamespace(settings=SimpleNamespace(expected_clients=("Cleveland",
                                                                                               "Hungary"))),
                             config=config, plan=SimpleNamespace(client_ids=["Cleveland", "Hungary", "Zurich"]))
    # Execute
    commands = deploy.partition_commands(config, "h", 1, "t", sites=("Cleveland", "Hungary"))
    # Assert
    assert len(commands) == 3 and not any("--client-id" in c for c in commands)
    assert deploy.unexpected_sites(handle) == ["Zurich"]
    assert deploy.check_sites({"expected": "a,b"}, config) is None  # the data names a column split's sites


def test_a_coordinator_without_data_hosts_three_site_csvs_to_completion(app_env, tmp_path):
    """Deploy's headline cross-silo mode: the server holds no rows; three sites, each with its own CSV."""
    penguins = pytest.importorskip("palmerpenguins")
    from tests.site_helpers import run_sites, site_client

    # Prepare: one CSV per island as the public table has it (Torgersen: only Adelie)
    sites = {}
    for island, rows in penguins.load_penguins().groupby("island"):
        sites[island.lower()] = tmp_path / f"{island.lower()}.csv"
        rows.drop(columns="island").to_csv(sites[island.lower()], index=False)
    at = new_app()
    at.switch_page("app_pages/deploy.py").run()
    at.text_input(key="deploy_host").set_value("127.0.0.1")
    at.number_input(key="deploy_port").set_value(0)
    at.number_input(key="deploy_wait_for").set_value(3)
    at.radio(key="deploy_cfg_data_source").set_value("none").run()
    # Assert the form: no upload, no split, the label column and the rarest value's rows instead
    assert not at.get("file_uploader") and "deploy_cfg_partition" not in [s.key for s in at.selectbox]
    at.text_input(key="deploy_cfg_site_target").set_value("species")
    at.selectbox(key="deploy_cfg_model").set_value("logreg")
    at.slider(key="deploy_cfg_rounds").set_value(3)
    at.checkbox(key="deploy_cfg_secagg").check()  # and the coordinator sees only the sum of the sites' updates
    # Execute: host it, then the three sites join from their own files
    at.button(key="start_server").click().run()
    assert not at.exception and not at.error, texts(at.error)
    (handle,) = hosted(app_env)
    codes = [c.value for c in at.code]
    assert any("--csv my_data.csv --target species" in c for c in codes)
    clients = [site_client(path, cid, handle.server.address[1], "species", handle.server.settings.token)
               for cid, path in sites.items()]
    threads, results = run_sites(clients)
    try:
        result = handle.wait(120)
    finally:
        handle.stop()
        for t in threads:
            t.join(15)
    # Assert: every round with the three sites; the task came from their summaries
    assert result is not None and result.status == "completed", result and result.error
    assert len(result.rounds) == 3 and all(r["n_failures"] == 0 for r in result.rounds)
    assert all(r["secagg_survivors"] == 3 for r in result.rounds)
    assert sorted(results) == sorted(sites) and all(r.ok for r in results.values())
    assert handle.server.task.classes == ["Adelie", "Chinstrap", "Gentoo"]
