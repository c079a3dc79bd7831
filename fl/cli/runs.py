"""``python -m fl runs list | show | follow | stop | resume | delete | export``: the run store from a terminal.

The Runs page's operations for headless users, on the same store
(``--runs-dir``, else ``FL_RUNS_DIR``, else ``runs/``) and on runs of any
process of this machine (fl/runs/manage.py, fl/runs/control.py). A run is
named by its id, or by a part of it that only it starts or ends with.
Exit codes: 0 done; 1 a run that did not end as asked (a stop not honoured
in time, a resumed run that did not complete, a stop of a run that had
already ended); 2 a usage error or a refusal, one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from fl.cli.console import fmt, progress_printer, round_line
from fl.cli.outcome import wait_and_finish
from fl.runs.manage import (
    RunsError, delete, find_run, follow, last_rounds, list_runs, resume, row, stop, view, zip_run,
)
from fl.runs.store import RunStore, default_root
from fl.runs.files import write_atomically
from fl.wire.text import shown

LIST_COLUMNS = (("run_id", "id"), ("kind", "kind"), ("status", "status"), ("dataset", "dataset"),
                ("model", "model"), ("rounds", "rounds"), ("accuracy", "accuracy"), ("started", "started"))
STOP_WAIT_S = 60.0
SHOWN_ROUNDS = 5


def add_runs_parser(sub: Any) -> None:
    """``runs`` and its commands, on the subparsers of ``python -m fl``."""
    runs = sub.add_parser("runs", help="list, show, follow, stop, resume, delete or export stored runs")
    commands = runs.add_subparsers(dest="runs_command", metavar="{list,show,follow,stop,resume,delete,export}",
                                   parser_class=type(runs))

    def command(name: str, help: str, with_id: bool = True) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=help, description=help)
        if with_id:
            parser.add_argument("run_id", metavar="ID", help="a run id, or a part only it starts or ends with, "
                                                             "or a run directory's path (--out DIR)")
        parser.add_argument("--runs-dir", metavar="DIR",
                            help="the run store (default: FL_RUNS_DIR, else runs/; the dashboard's)")
        return parser

    listing = command("list", "every run of the store, newest first: id, kind, status, dataset, model, rounds, "
                              "accuracy, started", with_id=False)
    listing.add_argument("--json", action="store_true", help="a JSON list of objects instead of a table")
    show = command("show", "a run's settings, its summary and its last rounds")
    show.add_argument("--rounds", type=int, default=SHOWN_ROUNDS, metavar="N",
                      help="how many of the last rounds (default: %(default)d)")
    show.add_argument("--json", action="store_true", help="config, summary, status and rounds as one JSON object")
    command("follow", "print the run's rounds as they happen, until it ends (Ctrl-C stops following, not the run)")
    halt = command("stop", "ask a live run (started by any process of this machine) to stop within its round")
    halt.add_argument("--wait", type=float, default=STOP_WAIT_S, metavar="SECONDS",
                      help="wait this long for it to end; 0 only asks (default: %(default)g)")
    command("resume", "continue a simulated run after its last finished round, as the Runs page does")
    command("delete", "remove a run that is not running from the store")
    export = command("export", "write the run's files as one zip (the Runs page's download)")
    export.add_argument("--zip", nargs="?", const="", metavar="PATH", dest="zip_path",
                        help="the zip to write (default: ID.zip here; a directory: ID.zip in it)")


def cmd_runs(args: argparse.Namespace) -> int:
    """Run one ``runs`` command; a refusal is one line on stderr and exit code 2."""
    handlers = {"list": _list, "show": _show, "follow": _follow, "stop": _stop, "resume": _resume,
                "delete": _delete, "export": _export}
    if args.runs_command is None:
        _error("python -m fl runs: say what to do: list, show, follow, stop, resume, delete or export")
        return 2
    store = RunStore(args.runs_dir or default_root())
    try:
        return handlers[args.runs_command](store, args)  # a RunsError is main's one line, exit code 2
    except KeyboardInterrupt:  # e.g. while stop waits: the request stands, only the waiting ends
        print("interrupted", file=sys.stderr)
        return 130


def _error(message: str) -> None:
    print(f"error: {shown(message)}", file=sys.stderr)


# ---------------------------------------------------------------------- list, show
def _list(store: RunStore, args: argparse.Namespace) -> int:
    rows = [row(item) for item in list_runs(store)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no runs in {store.root}", file=sys.stderr)
        return 0
    cells = [[_cell(r, key) for key, _ in LIST_COLUMNS] for r in rows]
    widths = [max(len(title), *(len(c[i]) for c in cells)) for i, (_, title) in enumerate(LIST_COLUMNS)]
    print("  ".join(title.ljust(w) for (_, title), w in zip(LIST_COLUMNS, widths)).rstrip())
    for line in cells:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip())
    return 0


def _cell(r: dict, key: str) -> str:
    if key == "rounds":
        return f"{r['rounds_done']}/{r['rounds'] if r['rounds'] is not None else '?'}"
    if key == "accuracy":
        return fmt(r["accuracy"])
    value = r.get(key)
    return "-" if value in (None, "") else shown(value)


def _show(store: RunStore, args: argparse.Namespace) -> int:
    item = view(find_run(store, args.run_id))
    run, summary = item.run, item.run.summary
    rounds = last_rounds(run, args.rounds)
    if args.json:
        print(json.dumps({"run_id": run.run_id, "status": item.status, "live": item.state.live,
                          "pid": item.state.pid, "host": item.state.host, "path": str(run.path),
                          "config": run.config, "summary": summary, "rounds": rounds}, indent=2, default=str))
        return 0
    r = row(item)
    print(f"run {run.run_id}  ({run.kind}, {item.status}"
          + (f", {item.state.where}" if item.state.live else f": {item.state.why}" if item.state.why else "")
          + f")\n  path      {run.path}")
    print(f"  started   {r['started'] or '-'}" + (f"   finished {_when(summary.get('finished_at'))}"
                                                   if summary.get("finished_at") else ""))
    final = summary.get("final_metrics") or {}
    print(f"  rounds    {r['rounds_done']}/{r['rounds'] if r['rounds'] is not None else '?'}   accuracy "
          f"{fmt(final.get('accuracy'))}  loss {fmt(final.get('loss'))}  f1 {fmt(final.get('f1_macro'))}")
    for key in ("n_clients", "best_round", "epsilon", "resumed_after_rounds"):
        if summary.get(key) not in (None, "", []):
            print(f"  {key:<9} {shown(summary[key])}")
    if summary.get("clients_planned") is not None:
        print(f"  took part {shown(summary.get('clients_took_part'))} of {shown(summary['clients_planned'])} clients")
    if summary.get("cluster"):
        print(f"  cluster   {shown(summary['cluster'])}: {shown(summary.get('hosts_placed'))} of "
              f"{shown(summary.get('hosts_wanted'))} hosts placed")
        for host in summary.get("hosts") or []:
            if isinstance(host, dict):
                print(f"    host {shown(host.get('host'))} ({shown(host.get('clients'))}) on "
                      f"{shown(host.get('worker'))} ({shown(host.get('name'))}, pid {shown(host.get('pid'))}); "
                      f"left: {shown(host.get('left'))}")
    for name, base in sorted((summary.get("baselines") or {}).items()):
        if isinstance(base, dict):
            print(f"  baseline  {name} {fmt(base.get('accuracy'))}"
                  + (f" ({shown(base['reason'])})" if base.get("accuracy") is None and base.get("reason") else ""))
    if summary.get("error"):
        print(f"  error     {shown(summary['error'])}")
    print("config")
    for key, value in sorted(run.config.items()):
        print(f"  {key:<22} {shown(json.dumps(value) if isinstance(value, (dict, list)) else value)}")
    print(f"last {len(rounds)} rounds" if rounds else "no rounds yet")
    total = r["rounds"] or 0
    for record in rounds:
        print("  " + _round_text(record, total))
    return 0


def _when(timestamp: Any) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp)) if isinstance(timestamp, (int, float)) \
        else "-"


def _round_text(record: dict, total: int) -> str:
    """A metrics.csv row or a round event, as simulate prints it (what a row lacks counts as 0)."""
    full = {**record, "n_fit_clients": int(record.get("n_fit_clients") or 0),
            "n_failures": int(record.get("n_failures") or 0), "duration_s": float(record.get("duration_s") or 0),
            "round": int(record.get("round") or 0)}
    if isinstance(full.get("epsilon"), str):
        full["epsilon"] = float(full["epsilon"])
    return round_line(full, total)


# ---------------------------------------------------------------------- follow, stop
def _follow(store: RunStore, args: argparse.Namespace) -> int:
    item = view(find_run(store, args.run_id))
    total = item.total_rounds or 0
    if item.state.live:
        print(f"following run {item.run.run_id} ({item.state.where}); Ctrl-C stops following, not the run",
              file=sys.stderr, flush=True)
    ended = None
    try:
        for event in follow(item.run.path):
            if event.get("type") == "round":
                print(_round_text(event, total), flush=True)
            elif event.get("type") == "resumed":
                print(f"resumed after round {event.get('round')}", file=sys.stderr, flush=True)
            else:
                ended = event
    except KeyboardInterrupt:
        print(f"stopped following run {item.run.run_id} (it goes on)", file=sys.stderr)
        return 0
    now = view(find_run(store, item.run.run_id))
    final = now.run.summary.get("final_metrics") or (ended or {}).get("final_metrics") or {}
    print(f"{now.status}: accuracy {fmt(final.get('accuracy'))}  loss {fmt(final.get('loss'))}  "
          f"f1 {fmt(final.get('f1_macro'))}" + (f"  ({now.state.why})" if now.state.why else ""), flush=True)
    return 0


def _stop(store: RunStore, args: argparse.Namespace) -> int:
    run = find_run(store, args.run_id)
    before, after = stop(run.path, max(args.wait, 0.0))
    if not before.live:
        why = f" ({before.why})" if before.why else ""
        print(f"run {run.run_id} is not running: it {_ended(before.status)}{why}; nothing to stop")
        return 1
    if args.wait <= 0:
        print(f"asked run {run.run_id} ({before.where}) to stop; it stops within its round")
        return 0
    if after.live:
        print(f"asked run {run.run_id} ({before.where}) to stop, but it has not ended after {args.wait:g} s",
              file=sys.stderr)
        return 1
    done = find_run(store, run.run_id).summary.get("rounds_done") or 0
    print(f"run {run.run_id} {_ended(after.status)} after round {done}")
    return 0


def _ended(status: str) -> str:
    return {"completed": "completed", "stopped": "was stopped", "failed": "failed",
            "interrupted": "was interrupted"}.get(status, f"ended ({status})")


# ---------------------------------------------------------------------- resume, delete, export
def _resume(store: RunStore, args: argparse.Namespace) -> int:
    run = find_run(store, args.run_id)
    total = view(run).total_rounds or 0
    handle = resume(store, run, on_event=progress_printer(total))
    print(f"resuming run {run.run_id} after round {handle.resume.round}; Ctrl-C stops it", file=sys.stderr,
          flush=True)
    return wait_and_finish(handle)  # the same last lines as a run that was never interrupted


def _delete(store: RunStore, args: argparse.Namespace) -> int:
    run = find_run(store, args.run_id)
    delete(store, run)
    print(f"deleted run {run.run_id}")
    return 0


def _export(store: RunStore, args: argparse.Namespace) -> int:
    if args.zip_path is None:
        raise RunsError("export writes a zip: add --zip [PATH]")
    run = find_run(store, args.run_id)
    target = Path(args.zip_path or f"{run.run_id}.zip")
    if target.is_dir():
        target = target / f"{run.run_id}.zip"
    if not target.parent.is_dir():
        raise RunsError(f"cannot write {target}: {target.parent} is not a directory")
    try:
        write_atomically(target, zip_run(run))
    except OSError as exc:
        raise RunsError(f"cannot write {target} ({exc.strerror or exc})") from None
    print(str(target))
    return 0
