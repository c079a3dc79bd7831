"""``python -m fl server``: host a run for client processes; prints ``listening on HOST:PORT`` first.

Its network flags (address, token, limits, heartbeats, join timeout, TLS
files) are generated from the server's network settings, declared once in
fl/runs/network.py; its run flags from RunConfig's knobs.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from fl.cli.console import HeldUntilReleased, column_notes, progress_printer
from fl.cli.flags import RESUME_HELP, add_knob_flags, add_network_flags, config_from_args, resume_from_args
from fl.cli.outcome import kept, say, store_for, wait_and_finish
from fl.cli.tls import server_tls
from fl.cli.usage import UsageError
from fl.runs import hosting
from fl.runs.config import RunConfig
from fl.runs.knobs import SERVER, default_of
from fl.runs.network import SERVER_NETWORK, server_settings


def add_server_parser(sub: Any) -> None:
    srv = sub.add_parser("server", help="host a run for client processes (prints 'listening on HOST:PORT')")
    srv.add_argument("--config", metavar="JSON", help="the run's settings from a saved config.json")
    srv.add_argument("--out", metavar="DIR", help="write config, metrics.csv, clients.csv, events, model here")
    srv.add_argument("--resume", action="store_true", help=RESUME_HELP)
    add_knob_flags(srv, SERVER)
    net = srv.add_argument_group("network")
    add_network_flags(net, net, SERVER_NETWORK)
    net.add_argument("--classes", help="comma-separated labels, when the server has no data")
    net.add_argument("--features", type=int, help="number of features, when the server has no data")


def cmd_server(args: argparse.Namespace) -> int:
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
    expected = args.expected or ()
    if expected and config.min_clients > len(expected):
        raise UsageError(f"--min-clients {config.min_clients} can never be reached: --expect-clients names "
                         f"{len(expected)} sites, and only they may join")
    if len(expected) > args.max_clients:
        raise UsageError(f"--expect-clients names {len(expected)} sites, more than --max-clients {args.max_clients}")
    settings = server_settings(vars(args), wait_for_clients=max(config.min_clients, len(expected)),
                               ssl_context=server_tls(args))
    classes = [c for c in args.classes.split(",")] if not has_data else None
    printer = HeldUntilReleased(progress_printer(config.effective_rounds))  # "listening on" is the first line
    try:
        handle = hosting.host(config, settings, out_dir=args.out, store=store_for(args), classes=classes,
                              n_features=args.features if not has_data else None, on_event=printer,
                              run_id=resumable.run_id if resumable else None,
                              resume=resumable.checkpoint if resumable else None, data_at_clients=data_at_clients)
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port} ({exc.strerror or exc})", file=sys.stderr)
        return 1

    def announce() -> None:
        host, port = handle.server.address
        print(f"listening on {host}:{port}", flush=True)
        printer.release()  # then what the run said before it (its data report, a resume), on stderr
        say(column_notes(handle.plan) + kept(args, handle))

    return wait_and_finish(handle, first=announce)
