"""``python -m fl sweep``: a base config (every ``simulate`` flag), a grid and seeds; one line per finished run.

    python -m fl sweep --dataset digits --model logreg --rounds 5 \\
        --grid aggregation=fedavg,median,krum --grid alpha=0.1,0.5,10 --seeds 5

Plain lines, flushed, so a log or a pipe reads them as well as a terminal.
Bad arguments exit with code 2 and one line; a sweep that does not complete
(stopped, or a run failed) exits with code 1.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Any

import pandas as pd

from fl.cli.console import epsilon_text
from fl.cli.flags import add_cluster_network_flags, add_knob_flags, config_from_args
from fl.cli.usage import UsageError
from fl.runs.audit import LOWER_BOUND
from fl.runs.knobs import SIMULATE
from fl.runs.sweep_spec import DEFAULT_SEEDS, cell_label, make_grid, parse_grid_arg, read_grid_file, SweepSpec
from fl.runs.sweep_run import start_sweep

BAR_WIDTH = 20


def add_sweep_parser(sub: Any) -> None:
    """The ``sweep`` subcommand: simulate's flags for the base config, plus the grid's."""
    sweep = sub.add_parser("sweep", help="run a grid of settings over seeds, in parallel processes; one CSV")
    sweep.add_argument("--config", metavar="JSON", help="the base settings from a saved config.json "
                                                        "(flags beside it override)")
    grid = sweep.add_argument_group("sweep")
    grid.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                      help="a setting and its values (repeat for more axes), e.g. --grid alpha=0.1,0.5,10")
    grid.add_argument("--grid-file", metavar="FILE", help='JSON or TOML: {"grid": {"alpha": [0.1, 0.5]}, '
                                                         '"seeds": 5}; --grid flags beside it override its keys')
    grid.add_argument("--seeds", type=int, help=f"seeds per cell: the base seed, +1, ... (default: the grid "
                                                f"file's, else {DEFAULT_SEEDS})")
    grid.add_argument("--parallel", type=int, metavar="K", help="runs at a time, each in its own worker process "
                                                                "(default: the number of cores; with --cluster, 1: "
                                                                "K runs need K x --workers free worker slots)")
    grid.add_argument("--runs-dir", metavar="DIR", help="where runs and runs/sweeps/ go (default: FL_RUNS_DIR, "
                                                        "else runs)")
    grid.add_argument("--audit", action="store_true",
                      help="audit every completed run for membership inference (python -m fl audit), its AUCs "
                           "and ε in summary.csv: sweep --grid noise_multiplier=... to see what privacy buys")
    add_knob_flags(sweep, SIMULATE)
    add_cluster_network_flags(sweep)


def spec_from_args(args: argparse.Namespace) -> SweepSpec:
    """The validated sweep the flags describe; a ConfigError or GridError (exit 2, one line) otherwise."""
    base = config_from_args(args)
    grid, seeds = read_grid_file(args.grid_file) if args.grid_file else ({}, None)
    for text in args.grid:
        name, values = parse_grid_arg(text)
        grid[name] = values
    seeds = args.seeds if args.seeds is not None else seeds if seeds is not None else DEFAULT_SEEDS
    return SweepSpec(base, make_grid(grid), seeds, audit=bool(getattr(args, "audit", False))).validate()


def progress_line(row: dict, done: int, total: int) -> str:
    """``[#####---------------]  3/18  aggregation=median, alpha=0.1  seed 1: completed  accuracy 0.9312 ...``"""
    filled = BAR_WIDTH * done // max(1, total)
    bar = "#" * filled + "-" * (BAR_WIDTH - filled)
    line = f"[{bar}] {done:>{len(str(total))}}/{total}  {cell_label(row['cell_values'])}  seed {row['seed']}: " \
           f"{row['status']}"
    if row.get("final_accuracy") is not None:
        line += (f"  accuracy {row['final_accuracy']:.4f}  best {row['best_accuracy']:.4f}  "
                 f"{row['rounds_done']} rounds  {row['duration_s']:.1f} s")
    if row.get("epsilon") is not None:
        line += f"  epsilon {epsilon_text(row['epsilon'])}"
    if row.get("audit_auc") is not None:
        line += f"  audit AUC {row['audit_auc']:.4f}"
        if row.get("audit_auc_calibrated") is not None:
            line += f" (calibrated {row['audit_auc_calibrated']:.4f})"
    if row.get("audit_error"):
        line += f"  (audit: {row['audit_error']})"
    if row.get("error"):
        line += f"  ({row['error']})"
    return line


def cells_table(cells: pd.DataFrame, grid_keys: list[str]) -> str:
    """The cells as people read them: accuracy mean ± std [95% interval] over n seeds."""
    def pm(row: pd.Series, metric: str) -> str:
        mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
        if not _finite(mean):
            return "-"
        text = f"{mean:.4f}" + (f" ± {std:.4f}" if _finite(std) else "")
        low, high = row[f"{metric}_ci_low"], row[f"{metric}_ci_high"]
        return text + (f" [{low:.4f}, {high:.4f}]" if _finite(low) else "")

    columns = {**{k: cells[k] for k in grid_keys}, "seeds": cells["n_seeds"],
               "final accuracy (± std [95% CI])": [pm(r, "final_accuracy") for _, r in cells.iterrows()],
               "best accuracy": [pm(r, "best_accuracy") for _, r in cells.iterrows()],
               "final loss": [pm(r, "final_loss") for _, r in cells.iterrows()]}
    for metric, title in (("audit_auc", "audit AUC loss"), ("audit_auc_calibrated", "audit AUC calibrated")):
        if f"{metric}_mean" in cells:
            columns[title] = [pm(r, metric) for _, r in cells.iterrows()]
    return pd.DataFrame(columns).to_string(index=False)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def cmd_sweep(args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    if args.parallel is not None and args.parallel < 1:
        raise UsageError(f"--parallel must be at least 1, got {args.parallel}")
    root = args.runs_dir or os.environ.get("FL_RUNS_DIR", "runs")
    for warning in spec.warnings():
        print(f"note: {warning}", file=sys.stderr, flush=True)

    def on_result(row: dict, done: int, total: int) -> None:
        print(progress_line(row, done, total), flush=True)

    try:
        handle = start_sweep(spec, root, parallel=args.parallel, on_result=on_result,
                             network={"host": args.host, "advertise_host": args.advertise_host})
    except OSError as exc:
        raise UsageError(f"cannot write the sweep under {root} ({exc.strerror or exc})") from None
    print(f"sweep {handle.sweep_id}: {len(spec.cells())} cells x {spec.seeds} seeds = {spec.n_runs} runs, "
          f"{handle.parallel} at a time", flush=True)
    try:
        handle.wait()
    except KeyboardInterrupt:
        print("stopping: runs not started are cancelled, running ones stop within their round", flush=True)
        handle.stop()
        handle.wait()
    stored = handle.store.load(handle.sweep_id)
    print(f"\n{handle.status}: {sum(r['status'] == 'completed' for r in handle.rows)} of {len(handle.rows)} "
          "runs completed", flush=True)
    print(cells_table(stored.cells(), list(spec.grid)))
    if spec.audit:
        print(f"\naudit: membership inference AUC (0.5: the attack cannot tell members from non-members). "
              f"{LOWER_BOUND}", flush=True)
    print(f"\nsummary: {stored.path / 'summary.csv'}\ncells:   {stored.path / 'cells.csv'}", flush=True)
    if handle.error:
        print(f"error: {handle.error}", file=sys.stderr)
    return 0 if handle.status == "completed" else 1
