"""``python -m fl simulate``: a whole run in one process, a server and N client threads (or a cluster's hosts)."""

from __future__ import annotations

import argparse
from typing import Any

from fl.cli.console import column_notes, progress_printer, split_note
from fl.cli.flags import RESUME_HELP, add_cluster_network_flags, add_knob_flags, config_from_args, resume_from_args
from fl.cli.outcome import kept, say, store_for, wait_and_finish
from fl.runs import simulation
from fl.runs.knobs import SIMULATE


def add_simulate_parser(sub: Any) -> None:
    sim = sub.add_parser("simulate", help="a whole run in one process: server + N client threads")
    sim.add_argument("--config", metavar="JSON", help="rerun a saved config.json (flags beside it override)")
    sim.add_argument("--out", metavar="DIR", help="write config, metrics.csv, clients.csv, events, model here")
    sim.add_argument("--resume", action="store_true", help=RESUME_HELP)
    sim.add_argument("--baselines", action=argparse.BooleanOptionalAction, default=True,
                     help="also train the centralized and local-only models and score the majority class, beside "
                          "the rounds, into summary.json and baselines.json (default: on)")
    add_knob_flags(sim, SIMULATE)
    add_cluster_network_flags(sim)


def cmd_simulate(args: argparse.Namespace) -> int:
    resumable = resume_from_args(args)
    config = resumable.config if resumable else config_from_args(args)
    handle = simulation.start(config, out_dir=args.out, store=store_for(args),
                              run_id=resumable.run_id if resumable else None,
                              resume=resumable.checkpoint if resumable else None, with_baselines=args.baselines,
                              on_event=progress_printer(config.effective_rounds, quiet_joins=config.clients > 20),
                              host=args.host, advertise_host=args.advertise_host)
    return wait_and_finish(handle, first=lambda: say(
        split_note(handle.config, handle.plan.client_ids, getattr(args, "clients", None)) + kept(args, handle)
        + column_notes(handle.plan)))
