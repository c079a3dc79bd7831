"""The command line: ``python -m fl simulate | server | client | certs | sweep | audit | runs``.

Builds the parser from each command's module (fl/cli/<command>.py) and runs
the command. The run's flags are generated from RunConfig's knobs
(fl/runs/knobs.py), the server's and client's network flags from their
declaration (fl/runs/network.py). ``--config runs/<id>/config.json`` reruns
a saved run, flags beside it override. Bad arguments, and anything the
engine refuses in words (an ``FLError``: a setting, the data, a checkpoint,
a grid, a run to manage), exit with code 2 and one line on stderr that says
what to fix; a run that starts but does not complete exits with code 1.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from fl.cli.audit import add_audit_parser, cmd_audit
from fl.cli.certs import add_certs_parser, cmd_certs
from fl.cli.client import add_client_parser, cmd_client
from fl.cli.runs import add_runs_parser, cmd_runs
from fl.cli.server import add_server_parser, cmd_server
from fl.cli.simulate import add_simulate_parser, cmd_simulate
from fl.cli.sweep import add_sweep_parser, cmd_sweep
from fl.cli.usage import OneLineParser
from fl.errors import FLError
from fl.runs.words import for_cli
from fl.wire.text import shown

COMMANDS = {"simulate": cmd_simulate, "server": cmd_server, "client": cmd_client, "certs": cmd_certs,
            "sweep": cmd_sweep, "audit": cmd_audit, "runs": cmd_runs}


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m fl", description="Federated learning over real sockets.")
    sub = parser.add_subparsers(dest="command", metavar="{simulate,server,client,certs,sweep,audit,runs}",
                                parser_class=OneLineParser)
    add_simulate_parser(sub)
    add_server_parser(sub)
    add_client_parser(sub)
    add_certs_parser(sub)
    add_sweep_parser(sub)
    add_audit_parser(sub)
    add_runs_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        return COMMANDS[args.command](args)
    except FLError as exc:  # a UsageError, or what the engine refused (a setting, the data, a checkpoint, ...)
        print(f"error: {_one_message(exc)}", file=sys.stderr)
        return 2


def _one_message(exc: FLError) -> str:
    """The error's words with settings as flags (fl/runs/words.py); control characters escaped (some come from
    a file or a peer), its line breaks kept."""
    return "\n".join(shown(line) for line in for_cli(str(exc)).split("\n"))
