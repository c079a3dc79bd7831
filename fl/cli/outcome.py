"""How ``simulate`` and ``server`` keep a run and end: where it is kept, the person's lines on stderr, and the
last line (the final metrics, the drift, ε, who took part) with the exit code."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

from fl.cli.console import baselines_lines, epsilon_text, fmt
from fl.runs.drift import drift_sentence, find_drift
from fl.runs.simulation import took_part
from fl.runs.store import RunStore, default_root
from fl.runs.words import for_cli
from fl.wire.text import shown


def store_for(args: argparse.Namespace) -> RunStore | None:
    """Without --out a run is kept in the run store (FL_RUNS_DIR, else runs/), beside the dashboard's."""
    return None if args.out else RunStore(default_root())


def kept(args: argparse.Namespace, handle: Any) -> list[str]:
    """Where a run without --out is kept, and how to manage it from another terminal."""
    if args.out or handle.writer is None:
        return []
    return [f"run {handle.run_id} kept in {handle.writer.dir} (python -m fl runs follow|stop {handle.run_id})"]


def say(lines: list[str]) -> None:
    """Lines for the person, on stderr in one write (round lines on stdout stay parseable); control characters
    escaped, as some name what a peer sent (fl/wire/text.py)."""
    if lines:
        sys.stderr.write("\n".join(shown(for_cli(line)) for line in lines) + "\n")
        sys.stderr.flush()


def wait_and_finish(handle: Any, first: Callable[[], None] | None = None) -> int:
    """Wait for the run, stopping it on Ctrl-C, then print its last lines; the exit code. ``first`` prints what
    comes before the wait (the server's ``listening on``): a Ctrl-C while it prints stops the run the same way,
    instead of leaving the run's threads to hold the process until its join timeout."""
    try:
        if first is not None:
            first()
        handle.wait()
    except KeyboardInterrupt:
        handle.stop()
        # Polled, not joined: a join the Ctrl-C interrupted can return at once ever after (CPython gh-90882),
        # which printed "run did not finish" over a run that was stopping cleanly
        handle.wait_until_done(10)
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
        say(notes)
    epsilon = result.rounds[-1].get("epsilon") if result.rounds else None
    drift = find_drift(result.rounds)
    if drift is not None:  # the sentence on stderr, the fact on the last line
        say([f"drift: {drift_sentence(result.rounds, handle.config.to_dict())}"])
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
    counts = took_part(handle.state.snapshot(client_rows=False))
    if counts["clients_took_part"] >= counts["clients_planned"]:
        return ""
    return f"  ({counts['clients_took_part']} of {counts['clients_planned']} clients took part)"
