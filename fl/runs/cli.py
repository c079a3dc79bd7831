"""The command line: ``python -m fl simulate | server | client | certs | sweep | audit | runs``.

The run's flags are generated from RunConfig's knobs (their defaults, ranges,
choices and help live there); only the network flags are written here.
``--config runs/<id>/config.json`` reruns a saved run, flags beside it
override. Bad arguments exit with code 2 and one line on stderr that says
what to fix; a run that starts but does not complete exits with code 1.
"""

from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path
from typing import Any, Sequence

from fl.data import DataError
from fl.federation.identity import MAX_JOINS_PER_CLIENT
from fl.federation.liveness import DEFAULT_INTERVAL_S, DEFAULT_MISSES
from fl.runs.cli_types import (  # noqa: F401 - re-exported
    at_least_one, client_id_list, json_object, parse_partitions, seconds,
)
from fl.runs.config import ConfigError, RunConfig
from fl.runs.drift import drift_sentence, find_drift
from fl.runs.words import for_cli
from fl.runs.console import (
    HeldUntilReleased, baselines_lines, client_printer, column_notes, epsilon_text, fmt, progress_printer, split_note,
)
from fl.runs.knobs import CLIENT, SERVER, SIMULATE, default_of, knobs_of
from fl.runs.runs_cli import add_runs_parser, cmd_runs
from fl.runs.store import RunStore, default_root
from fl.wire.text import shown

GROUP_TITLES = {"data": "data", "split": "split across clients", "model": "model and aggregation",
                "rounds": "rounds and evaluation", "optimizer": "server optimisers and FedProx",
                "faults": "simulated faults and attacks", "privacy": "differential privacy",
                "runtime": "runtime", "tracking": "experiment tracking"}


RESUME_HELP = ("continue the run in --out DIR after its last finished round (its saved settings, its "
               "checkpoint, its run id); run flags given again must equal the saved settings")


class UsageError(Exception):
    """Exit 2 with this one line."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but an error is a single 'error: ...' line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


# ---------------------------------------------------------------------- flags
def add_knob_flags(parser: argparse.ArgumentParser, command: str) -> None:
    """One flag per knob the command takes; unset flags stay unset (the config's default applies)."""
    groups: dict[str, Any] = {}
    for name, k in knobs_of(RunConfig).items():
        if command not in k.commands:
            continue
        group = groups.get(k.group) or groups.setdefault(k.group, parser.add_argument_group(GROUP_TITLES[k.group]))
        default = default_of(RunConfig, name)
        shown = "on" if default is True else "off" if default is False or default == "" else default
        kw: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": f"{k.help} (default: {shown})"}
        flag = k.flag_name(name)
        if k.kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        elif k.kind is dict:
            group.add_argument(flag, type=json_object, metavar="JSON", **kw)
        elif k.choices is not None:
            group.add_argument(flag, choices=list(k.choices()), **kw)
        else:
            if k.const is not None:  # the value is optional: the flag alone means k.const
                kw.update(nargs="?", const=k.const)
            group.add_argument(flag, type=k.parse or k.kind,
                               metavar=name.split("_")[-1].upper() if k.kind is str or k.parse else None, **kw)


def add_cluster_network_flags(parser: argparse.ArgumentParser) -> None:
    """Where a simulation's server listens when its hosts are on a cluster (``--cluster``)."""
    net = parser.add_argument_group("network (with --cluster)")
    net.add_argument("--host", help="the address the run's server binds: 127.0.0.1 for a local run (it listens "
                                    "on loopback only); with --cluster, one the cluster's workers reach (default: "
                                    "this machine's address towards the scheduler)")
    net.add_argument("--advertise-host", metavar="HOST", help="the address the hosts on the cluster connect to, "
                                                              "when it differs from --host (NAT, 0.0.0.0)")


def build_parser() -> argparse.ArgumentParser:
    from fl.runs import cli_tls  # its own module, which imports this one

    parser = OneLineParser(prog="python -m fl", description="Federated learning over real sockets.")
    sub = parser.add_subparsers(dest="command", metavar="{simulate,server,client,certs,sweep,audit,runs}",
                                parser_class=OneLineParser)
    sim = sub.add_parser("simulate", help="a whole run in one process: server + N client threads")
    sim.add_argument("--config", metavar="JSON", help="rerun a saved config.json (flags beside it override)")
    sim.add_argument("--out", metavar="DIR", help="write config, metrics.csv, clients.csv, events, model here")
    sim.add_argument("--resume", action="store_true", help=RESUME_HELP)
    sim.add_argument("--baselines", action=argparse.BooleanOptionalAction, default=True,
                     help="also train the centralized and local-only models and score the majority class, beside "
                          "the rounds, into summary.json and baselines.json (default: on)")
    add_knob_flags(sim, SIMULATE)
    add_cluster_network_flags(sim)

    srv = sub.add_parser("server", help="host a run for client processes (prints 'listening on HOST:PORT')")
    srv.add_argument("--config", metavar="JSON", help="the run's settings from a saved config.json")
    srv.add_argument("--out", metavar="DIR", help="write config, metrics.csv, clients.csv, events, model here")
    srv.add_argument("--resume", action="store_true", help=RESUME_HELP)
    add_knob_flags(srv, SERVER)
    net = srv.add_argument_group("network")
    net.add_argument("--host", default="127.0.0.1")
    net.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    net.add_argument("--token", help="shared secret clients must present")
    net.add_argument("--max-clients", type=int, default=1000)
    net.add_argument("--wait", type=float, default=300.0, help="seconds to wait for --min-clients to join")
    net.add_argument("--heartbeat", type=seconds, default=DEFAULT_INTERVAL_S, metavar="SECONDS",
                     help="ping clients this often; 0 turns heartbeats off (default: %(default)g)")
    net.add_argument("--heartbeat-misses", type=at_least_one, default=DEFAULT_MISSES, metavar="N",
                     help="a client silent for N heartbeat intervals is gone (default: %(default)d)")
    net.add_argument("--max-pending", type=at_least_one, default=256, metavar="N",
                     help="connections still in their handshake at once; more are closed (default: %(default)d)")
    net.add_argument("--max-pending-per-address", type=at_least_one, default=64, metavar="N",
                     help="... from one address: raise it for many clients behind one NAT (default: %(default)d)")
    net.add_argument("--expect-clients", type=client_id_list, metavar="ID,ID,...",
                     help="only these client ids may join (others are refused); rounds start once all have "
                          "joined, or after --wait with at least --min-clients")
    net.add_argument("--max-joins-per-client", type=at_least_one, default=MAX_JOINS_PER_CLIENT,
                     metavar="N", help="joins of one client id from one address in any 60 s; more are refused "
                                       "(default: %(default)d)")
    net.add_argument("--max-joins-per-address", type=at_least_one, metavar="N",
                     help="joins of any ids from one address in any 60 s (default: twice --max-clients, at "
                          "least 20)")
    cli_tls.add_server_tls_flags(net)
    net.add_argument("--classes", help="comma-separated labels, when the server has no data")
    net.add_argument("--features", type=int, help="number of features, when the server has no data")

    cli = sub.add_parser("client", help="join a server with local data")
    add_knob_flags(cli, CLIENT)
    own = cli.add_argument_group("this client")
    own.add_argument("--host", default="127.0.0.1")
    own.add_argument("--port", type=int, default=8080)
    own.add_argument("--token")
    own.add_argument("--client-id", help="1-64 chars of A-Z a-z 0-9 _ . - (default: the name in "
                                          "--tls-client-cert, else from host and partition)")
    own.add_argument("--partition-id", type=parse_partitions, metavar="I|I-J",
                     help="take partition I of a built-in dataset or of --csv (or host partitions I to J, one "
                          "process) ...")
    own.add_argument("--num-partitions", type=int, help="... split in N partitions")
    own.add_argument("--connect-timeout", type=float, default=60.0, help="keep retrying this long")
    own.add_argument("--reconnect", type=seconds, default=0.0, metavar="SECONDS",
                     help="if the server goes away mid-run (not after its bye), keep trying to rejoin it this "
                          "long, with the same id and local state (default: 0, leave)")
    cli_tls.add_client_tls_flags(own)

    cli_tls.add_certs_parser(sub)
    from fl.runs.sweep_cli import add_sweep_parser  # its own module, which imports this one

    add_sweep_parser(sub)
    from fl.runs.audit_cli import add_audit_parser

    add_audit_parser(sub)
    add_runs_parser(sub)
    return parser


def config_from_args(args: argparse.Namespace, data_at_clients: bool = False, **fixed: Any) -> RunConfig:
    """The saved config (``--config``) or the defaults, then every flag given, then ``fixed``; validated
    (``data_at_clients``: a server whose CSV rows are all at the sites needs no file)."""
    values: dict[str, Any] = {}
    if getattr(args, "config", None):
        try:
            values = RunConfig.from_json(Path(args.config).read_text()).to_dict()
        except OSError as exc:
            raise UsageError(f"cannot read --config {args.config} ({exc.strerror or exc})") from None
        except ConfigError as exc:
            raise UsageError(f"--config {args.config}: {exc}") from None
    given = {name: getattr(args, name) for name in knobs_of(RunConfig) if hasattr(args, name)}
    if given.get("csv_path") and "dataset" not in given:
        given["dataset"] = "csv"
    values.update(given)
    values.update(fixed)
    try:
        return RunConfig.from_dict(values).validate(data_at_clients)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


# ---------------------------------------------------------------------- commands
def resume_from_args(args: argparse.Namespace) -> Any:
    """``--resume``: the run in --out DIR, read and checked (a Resumable), or None without the flag.

    Run flags (and ``--config``) may be given again as long as they say what the run was saved with (the
    command that started it, repeated with --resume); a changed one is refused by name, with both values.
    """
    if not getattr(args, "resume", False):
        return None
    from fl.federation.checkpoint import CheckpointError
    from fl.runs.resume import open_resume

    if not args.out:
        raise UsageError("--resume continues the run in --out DIR: add --out")
    try:
        resumable = open_resume(args.out)
    except CheckpointError as exc:
        raise UsageError(str(exc)) from None
    changed = changed_settings(args, resumable.config)
    if changed:
        raise UsageError(f"--resume goes on with the run's saved settings; {', '.join(changed)}: "
                         f"drop {'it' if len(changed) == 1 else 'them'}")
    return resumable


def changed_settings(args: argparse.Namespace, saved: RunConfig) -> list[str]:
    """The run flags given (directly, or in ``--config``) whose values differ from ``saved``, each with both."""
    knobs = knobs_of(RunConfig)
    changed = [f"{knobs[name].flag_name(name)} {_shown(getattr(args, name))} differs from the saved "
               f"{_shown(getattr(saved, name))}"
               for name in knobs if hasattr(args, name) and getattr(args, name) != getattr(saved, name)]
    if getattr(args, "config", None):
        try:
            other = RunConfig.from_json(Path(args.config).read_text())
        except OSError as exc:
            raise UsageError(f"cannot read --config {args.config} ({exc.strerror or exc})") from None
        except ConfigError as exc:
            raise UsageError(f"--config {args.config}: {exc}") from None
        changed += [f"--config {args.config} sets {knobs[name].flag_name(name)} {_shown(getattr(other, name))}, "
                    f"the saved {_shown(getattr(saved, name))}"
                    for name in knobs if getattr(other, name) != getattr(saved, name) and not hasattr(args, name)]
    return changed


def _shown(value: Any) -> str:
    """A setting as typed on the command line."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None:
        return "default"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        import json

        return json.dumps(value, separators=(",", ":"))
    return str(value)


def cmd_simulate(args: argparse.Namespace) -> int:
    from fl.federation.checkpoint import CheckpointError
    from fl.runs import simulation

    resumable = resume_from_args(args)
    config = resumable.config if resumable else config_from_args(args)
    try:
        handle = simulation.start(config, out_dir=args.out, store=_store(args),
                                  run_id=resumable.run_id if resumable else None,
                                  resume=resumable.checkpoint if resumable else None, with_baselines=args.baselines,
                                  on_event=progress_printer(config.effective_rounds, quiet_joins=config.clients > 20),
                                  host=args.host, advertise_host=args.advertise_host)
    except (DataError, ConfigError, CheckpointError) as exc:
        raise UsageError(str(exc)) from None
    _say(split_note(handle.config, handle.plan.client_ids, getattr(args, "clients", None)) + _kept(args, handle))
    _say(column_notes(handle.plan))
    return _wait_and_finish(handle)


def _store(args: argparse.Namespace) -> RunStore | None:
    """Without --out a run is kept in the run store (FL_RUNS_DIR, else runs/), beside the dashboard's."""
    return None if args.out else RunStore(default_root())


def _kept(args: argparse.Namespace, handle: Any) -> list[str]:
    """Where a run without --out is kept, and how to manage it from another terminal."""
    if args.out or handle.writer is None:
        return []
    return [f"run {handle.run_id} kept in {handle.writer.dir} (python -m fl runs follow|stop {handle.run_id})"]


def _say(lines: list[str]) -> None:
    """Lines for the person, on stderr in one write (round lines on stdout stay parseable); control characters
    escaped, as some name what a peer sent (fl/wire/text.py)."""
    if lines:
        sys.stderr.write("\n".join(shown(for_cli(line)) for line in lines) + "\n")
        sys.stderr.flush()


def _wait_and_finish(handle: Any) -> int:
    try:
        handle.wait()
    except KeyboardInterrupt:
        handle.stop()
        handle.wait(5)
    result = handle.result
    if result is None:
        print("run did not finish", file=sys.stderr)
        return 1
    final = result.final_metrics or {}
    if handle.baselines_thread is not None:  # a simulation's reference numbers, before the last line
        line, notes = baselines_lines(handle.state.baselines, handle.state.baselines_status,
                                      final.get("accuracy") if result.status == "completed" else None)
        print(line, flush=True)
        _say(notes)
    epsilon = result.rounds[-1].get("epsilon") if result.rounds else None
    drift = find_drift(result.rounds)
    if drift is not None:  # the sentence on stderr, the fact on the last line
        _say([f"drift: {drift_sentence(result.rounds, handle.config.to_dict())}"])
    print(f"{result.status}: accuracy {fmt(final.get('accuracy'))}  loss {fmt(final.get('loss'))}  "
          f"f1 {fmt(final.get('f1_macro'))}"
          + (f"  (drift: {100 * drift.fall:.1f} points below round {drift.best_round}'s {fmt(drift.best)})"
             if drift is not None else "")
          + (f"  epsilon {epsilon_text(epsilon)}" if epsilon is not None else "")
          + _took_part(handle), flush=True)
    if result.error:
        print(f"error: {shown(result.error)}", file=sys.stderr)
    return 0 if result.status == "completed" else 1


def _took_part(handle: Any) -> str:
    """``  (134 of 200 clients took part)`` for a simulation that ran with fewer clients than it had."""
    result = getattr(handle, "result", None)
    if getattr(handle, "kind", None) != "simulation" or result is None or result.status != "completed":
        return ""
    from fl.runs.simulation import took_part

    counts = took_part(handle.state.snapshot(client_rows=False))
    if counts["clients_took_part"] >= counts["clients_planned"]:
        return ""
    return f"  ({counts['clients_took_part']} of {counts['clients_planned']} clients took part)"


def cmd_server(args: argparse.Namespace) -> int:
    from fl.federation.server import ServerSettings
    from fl.runs import hosting

    from fl.federation.checkpoint import CheckpointError

    resumable = resume_from_args(args)
    # --dataset csv --target COL without --csv: every row is at the sites; their summaries make the task
    data_at_clients = (getattr(args, "dataset", None) == "csv" and not getattr(args, "csv_path", None)
                       and not getattr(args, "config", None) and not (args.classes and args.features)) \
        or (resumable is not None and resumable.config.dataset == "csv" and not resumable.config.csv_path)
    has_data = any(hasattr(args, name) for name in ("dataset", "csv_path")) or bool(getattr(args, "config", None)) \
        or (resumable is not None and not (args.classes and args.features))
    if not has_data and not (args.classes and args.features):
        raise UsageError("the server needs its own data (--dataset or --csv/--target), or --dataset csv --target "
                         "COL to build the task from the sites' data summaries, or both --classes and --features")
    config = resumable.config if resumable else config_from_args(
        args, data_at_clients, clients=max(getattr(args, "min_clients", 1), default_of(RunConfig, "clients")))
    expected = args.expect_clients or ()
    if expected and config.min_clients > len(expected):
        raise UsageError(f"--min-clients {config.min_clients} can never be reached: --expect-clients names "
                         f"{len(expected)} sites, and only they may join")
    if len(expected) > args.max_clients:
        raise UsageError(f"--expect-clients names {len(expected)} sites, more than --max-clients {args.max_clients}")
    settings = ServerSettings(host=args.host, port=args.port, token=args.token, max_clients=args.max_clients,
                              wait_for_clients=max(config.min_clients, len(expected)), join_timeout_s=args.wait,
                              ssl_context=_server_tls(args), heartbeat_interval_s=args.heartbeat,
                              heartbeat_misses=args.heartbeat_misses, max_pending_handshakes=args.max_pending,
                              max_pending_per_address=args.max_pending_per_address, expected_clients=expected,
                              max_joins_per_client=args.max_joins_per_client,
                              max_joins_per_address=args.max_joins_per_address)
    classes = [c for c in args.classes.split(",")] if not has_data else None
    printer = HeldUntilReleased(progress_printer(config.effective_rounds))  # "listening on" is the first line
    try:
        handle = hosting.host(config, settings, out_dir=args.out, store=_store(args), classes=classes,
                              n_features=args.features if not has_data else None, on_event=printer,
                              run_id=resumable.run_id if resumable else None,
                              resume=resumable.checkpoint if resumable else None, data_at_clients=data_at_clients)
    except (DataError, ConfigError, CheckpointError) as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port} ({exc.strerror or exc})", file=sys.stderr)
        return 1
    host, port = handle.server.address
    print(f"listening on {host}:{port}", flush=True)
    printer.release()  # then what the run said before it (its data report, a resume), on stderr
    _say(column_notes(handle.plan) + _kept(args, handle))
    return _wait_and_finish(handle)


def cmd_client(args: argparse.Namespace) -> int:
    """One client (its CSV, or partition I), or a host of many (``--partition-id 0-249``) on one event loop."""
    from fl.federation.client import ClientSettings, FederatedClient
    from fl.federation.session import ClientHost
    from fl.runs.cli_tls import certificate_id, client_tls
    from fl.wire import CLIENT_ID_PATTERN

    ssl_context = client_tls(args)  # bad TLS flags are told before any data is loaded
    if args.client_id and not CLIENT_ID_PATTERN.fullmatch(args.client_id):
        raise UsageError(f"--client-id {args.client_id!r} must be 1-64 chars of A-Z a-z 0-9 _ . -")
    args.client_id = certificate_id(args) or args.client_id  # a certificate names its client
    datas = _client_data(args)
    if args.client_id and len(datas) > 1:
        raise UsageError("--client-id names one client; a range of partitions is named client_000, ... or by site"
                         + ("; a client certificate names one client: host one partition per certificate"
                            if args.tls_client_cert else ""))
    settings = ClientSettings(host=args.host, port=args.port, token=args.token,
                              connect_timeout_s=args.connect_timeout, pin_sha256=args.tls_pin,
                              ssl_context=ssl_context, reconnect_s=args.reconnect)
    clients = []
    for n, (local, default_id) in enumerate(datas):
        client_id = args.client_id or default_id
        on_attempt, on_event = client_printer(client_id)
        verbose = len(datas) == 1 or n == 0  # a host of many: the first client speaks for the waiting
        clients.append(FederatedClient(client_id, local, settings, seed=getattr(args, "seed", 0),
                                       on_event=on_event if len(datas) == 1 else None,
                                       on_attempt=on_attempt if verbose else None))
    where = f"{args.host}:{args.port}"
    if len(clients) == 1:
        print(f"{clients[0].client_id}: connecting to {where} with {len(datas[0][0].y)} local rows", flush=True)
    else:
        print(f"hosting {len(clients)} clients ({clients[0].client_id} to {clients[-1].client_id}) on one event "
              f"loop, connecting to {where}", flush=True)
    results = ClientHost(clients, name="cli").run()
    for result in results if len(results) == 1 else []:
        print(f"{result.client_id}: left ({shown(result.reason)}) after {result.rounds_trained} rounds", flush=True)
    if len(results) > 1:
        reasons: dict[str, int] = {}
        for result in results:
            reasons[result.reason] = reasons.get(result.reason, 0) + 1
        said = ", ".join(f"{n} {shown(reason)}" for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1]))
        print(f"{len(results)} clients left after {max(r.rounds_trained for r in results)} rounds: {said}", flush=True)
    return 0 if all(r.ok for r in results) else 1


def _client_data(args: argparse.Namespace) -> list[tuple[Any, str]]:
    """The client's own rows (its CSV), or partitions of a built-in dataset split as the server splits it."""
    from fl.data import load_client_frame
    from fl.federation.client import LocalData
    from fl.runs.build import check_partitions, client_ids_for, data_split, load_data

    if getattr(args, "csv_path", None) and args.partition_id is None:
        if not getattr(args, "target", None):
            raise UsageError("--csv needs --target COL, the label column")
        try:
            own = load_client_frame(args.csv_path, args.target)
        except DataError as exc:
            raise UsageError(str(exc)) from None
        return [(LocalData(X=own.X, y=own.y, feature_names=own.names, frame=own.frame,
                           target_values=own.target_values), f"{socket.gethostname()}-csv")]
    if not ((hasattr(args, "dataset") or getattr(args, "csv_path", None)) and args.partition_id is not None
            and args.num_partitions):
        raise UsageError("a client needs its data: --csv FILE --target COL, or --dataset NAME "
                         "--partition-id I --num-partitions N")
    if not all(0 <= i < args.num_partitions for i in args.partition_id):
        raise UsageError(f"--partition-id must be between 0 and {args.num_partitions - 1}")
    config = config_from_args(args, clients=args.num_partitions)
    try:
        data = load_data(config, args.num_partitions)
        check_partitions(data, args.num_partitions)  # a column split: N is its number of values
    except DataError as exc:
        raise UsageError(str(exc)) from None
    split, names, ids = data_split(config), list(data.dataset.feature_names), client_ids_for(data)
    return [(LocalData(*data.client_data(i), feature_names=names, data_split=split), ids[i])
            for i in args.partition_id]


def _server_tls(args: argparse.Namespace) -> Any:
    from fl.runs.cli_tls import server_tls  # TLS flags and certs live in fl/runs/cli_tls.py

    return server_tls(args)


def cmd_certs(args: argparse.Namespace) -> int:
    from fl.runs.cli_tls import cmd_certs as make_certs

    return make_certs(args)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        from fl.runs.audit_cli import cmd_audit
        from fl.runs.sweep_cli import cmd_sweep

        commands = {"simulate": cmd_simulate, "server": cmd_server, "client": cmd_client, "certs": cmd_certs,
                    "sweep": cmd_sweep, "audit": cmd_audit, "runs": cmd_runs}
        return commands[args.command](args)
    except UsageError as exc:
        print(f"error: {for_cli(str(exc))}", file=sys.stderr)
        return 2
