"""The network settings are declared once (fl/runs/network.py): the command line's server and client flags, the
Deploy form's widgets and defaults, and the client commands Deploy writes all come from that declaration."""

from __future__ import annotations

import shlex
from dataclasses import fields

import pytest

from fl.cli.main import build_parser
from fl.federation.client import ClientSettings
from fl.federation.server import ServerSettings
from fl.runs.config import RunConfig
from fl.runs.network import CLIENT_NETWORK, SERVER_NETWORK, client_settings, form_fields, server_settings
from tests.apptest_helpers import new_app
from ui import deploy_view as deploy

SERVER_ARGS = ["server", "--dataset", "iris"]
CLIENT_ARGS = ["client", "--dataset", "iris", "--partition-id", "0", "--num-partitions", "2"]
# The engine's own defaults that differ on purpose (fl/runs/network.py says why): its port is 0 (a free port, for
# servers and clients built in code), and a server built in code waits for 1 client unless told more.
ENGINE_ONLY = {"port", "wait_for"}


def _flag_actions(command: str) -> dict[str, object]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return {option: action for action in sub._actions for option in action.option_strings}


@pytest.mark.parametrize("command, specs, argv", [("server", SERVER_NETWORK, SERVER_ARGS),
                                                  ("client", CLIENT_NETWORK, CLIENT_ARGS)])
def test_each_declared_setting_is_a_flag_with_its_declared_default(command, specs, argv):
    # Prepare
    actions = _flag_actions(command)
    # Execute
    args = build_parser().parse_args(argv)
    # Assert: every setting with a flag is that flag, its dest the setting's name, its default the declared one
    for spec in specs:
        if spec.flag is None:
            assert spec.flag_name() is None
            continue
        action = actions[spec.flag_name()]
        assert action.dest == spec.name, spec.name
        assert action.default == spec.default, spec.name
        assert getattr(args, spec.name) == spec.default, spec.name
        assert spec.help.split("«")[0][:30] in action.help, spec.name


def test_the_chosen_defaults():
    # Assert: the defaults a person meets, on the command line and on the Deploy page
    server = {s.name: s.default for s in SERVER_NETWORK}
    client = {s.name: s.default for s in CLIENT_NETWORK}
    assert (server["host"], server["port"], server["wait"], server["max_clients"]) == ("127.0.0.1", 8080, 300, 1000)
    assert (client["host"], client["port"], client["connect_timeout"], client["reconnect"]) == \
        ("127.0.0.1", 8080, 60, 0)


@pytest.mark.parametrize("specs, engine", [(SERVER_NETWORK, ServerSettings), (CLIENT_NETWORK, ClientSettings)])
def test_the_engines_settings_have_the_same_defaults(specs, engine):
    # Prepare: the engine's dataclass defaults, by attribute
    defaults = {f.name: f.default for f in fields(engine)}
    # Assert: each declared setting names an attribute, with the declared default (but the engine's own port)
    for spec in specs:
        if spec.setting is None:
            continue
        assert spec.setting in defaults, spec.name
        if spec.name not in ENGINE_ONLY:
            assert defaults[spec.setting] == spec.default, spec.name


def test_settings_built_from_parsed_flags_carry_each_flag():
    # Execute
    server_args = build_parser().parse_args(SERVER_ARGS + ["--port", "9001", "--token", "t", "--wait", "12",
                                                           "--max-clients", "7", "--expect-clients", "a,b",
                                                           "--heartbeat", "2", "--max-pending", "9"])
    client_args = build_parser().parse_args(CLIENT_ARGS + ["--port", "9001", "--connect-timeout", "5",
                                                           "--reconnect", "30", "--tls-pin", "ab" * 32])
    server = server_settings(vars(server_args), wait_for_clients=2)
    client = client_settings(vars(client_args))
    # Assert
    assert (server.port, server.token, server.join_timeout_s, server.max_clients) == (9001, "t", 12.0, 7)
    assert (server.expected_clients, server.heartbeat_interval_s, server.max_pending_handshakes) == \
        (("a", "b"), 2.0, 9)
    assert server.wait_for_clients == 2 and server.max_pending_per_address == 64
    assert (client.port, client.connect_timeout_s, client.reconnect_s, client.pin_sha256) == \
        (9001, 5.0, 30.0, "ab" * 32)


def test_the_deploy_forms_defaults_come_from_the_declaration():
    # Prepare
    declared = form_fields()
    # Execute
    form = deploy.form_defaults()
    # Assert: every widget of the form is a declared server setting, with the declared default
    assert set(form) == set(declared) == {name for row in deploy.FORM_ROWS for name, _ in row}
    assert form["port"] == 8080 and form["wait"] == 300 and form["max_clients"] == 1000 and form["wait_for"] == 2
    assert form["expected"] == "" and form["token"] == "" and form["tls"] is False
    for name, spec in declared.items():
        assert form[name] == deploy.form_default(spec)
        if spec.kind in (int, float):
            assert form[name] == spec.default


def test_the_deploy_pages_widgets_start_at_the_declared_defaults(app_env):
    # Execute
    at = new_app()
    at.switch_page("app_pages/deploy.py").run()
    # Assert
    assert not at.exception
    for name, value in deploy.form_defaults().items():
        if name == "token":
            continue  # drawn at random once per session (test_page_deploy)
        kind = form_fields()[name].widget
        widget = at.checkbox(key=f"deploy_{name}") if kind == "checkbox" else \
            at.number_input(key=f"deploy_{name}") if kind == "number" else at.text_input(key=f"deploy_{name}")
        assert widget.value == value, name


def test_the_form_values_make_the_settings_the_cli_would():
    # Prepare: the form at its defaults, with a token and two sites
    values = {**deploy.form_defaults(), "token": "t", "expected": "alpha, beta"}
    # Execute
    from_form = deploy.server_settings(values)
    from_cli = server_settings(vars(build_parser().parse_args(SERVER_ARGS + ["--token", "t",
                                                                             "--expect-clients", "alpha,beta"])),
                               wait_for_clients=2)
    # Assert
    assert from_form == from_cli


@pytest.mark.parametrize("token, pin", [(None, None), ("s3cret", None), ("s3cret", "cd" * 32)])
def test_the_client_command_deploy_writes_round_trips_through_the_parser(token, pin):
    # Prepare
    config = RunConfig(dataset="synthetic", n_samples=500, clients=3, partition="shards", seed=7)
    # Execute
    (command, *_) = deploy.partition_commands(config, "server.example", 9000, token, pin)
    argv = shlex.split(command)
    args = build_parser().parse_args(["client", *argv[2:]])
    # Assert: the parser reads back what Deploy meant, the rest at the declared defaults
    assert argv[:2] == ["python", "client_new.py"]
    assert (args.host, args.port, args.token, args.tls_pin, args.reconnect) == \
        ("server.example", 9000, token, pin, deploy.RECONNECT_S)
    assert args.connect_timeout == next(s.default for s in CLIENT_NETWORK if s.name == "connect_timeout")
    assert args.partition_id == [0] and args.num_partitions == 3 and args.dataset == "synthetic"
    settings = client_settings(vars(args))
    assert (settings.host, settings.port, settings.token, settings.pin_sha256, settings.reconnect_s) == \
        ("server.example", 9000, token, pin, float(deploy.RECONNECT_S))
    # and the CSV command too
    csv = shlex.split(deploy.csv_command(RunConfig(dataset="csv", target="y"), "h", 1, token, pin, "site"))
    back = build_parser().parse_args(["client", *csv[2:]])
    assert (back.host, back.port, back.token, back.tls_pin, back.client_id) == ("h", 1, token, pin, "site")
