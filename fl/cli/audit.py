"""``python -m fl audit RUN_DIR``: membership inference against a finished run's model; a short table.

    python -m fl simulate --dataset digits --model mlp --clients 3 --rounds 20 --out runs/demo
    python -m fl audit runs/demo

Prints each attack's AUC and true-positive rates at 1 % and 0.1 % false
positives, the most exposed clients, the run's ε, and that an audit is a
lower bound on leakage; writes audit.json and audit_roc.csv into the run's
directory (fl/runs/audit.py). A directory that cannot be audited is one line
on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from fl.cli.console import epsilon_text, fmt
from fl.cli.usage import UsageError
from fl.runs.audit import AUDIT_FILE, ROC_FILE, run_audit
from fl.wire.text import shown

MAX_CLIENT_LINES = 10


def add_audit_parser(sub: Any) -> None:
    """The ``audit`` subcommand: a run directory, and how many reference models the calibrated attack trains."""
    audit = sub.add_parser("audit", help="membership inference against a finished run's final model (a lower "
                                          "bound on what it leaks)")
    audit.add_argument("run_dir", metavar="RUN_DIR", help="a run's directory (simulate --out DIR, or runs/<id>)")
    audit.add_argument("--references", type=int, default=4, metavar="K",
                       help="reference models of the calibrated attack, each trained on half of the rows not "
                            "audited (default: %(default)d)")


def _attack_line(attack: dict[str, Any], width: int) -> str:
    if attack.get("auc") is None:
        return f"{attack['label']:<{width}}  -       ({attack.get('reason') or 'not computed'})"
    tpr = attack["tpr_at_fpr"]
    return f"{attack['label']:<{width}}  {attack['auc']:.4f}  {tpr['0.01']:<9.4f}  {tpr['0.001']:.4f}"


def privacy_line(report: dict[str, Any]) -> str:
    """The run's differential privacy and the ε it spent, or that it had none."""
    if report.get("dp") in (None, "none"):
        return "differential privacy: none (the clients' updates were neither clipped nor noised)"
    epsilon = report.get("epsilon")
    spent = epsilon_text(math.inf if epsilon == "inf" else epsilon) if epsilon is not None else "not recorded"
    return (f"differential privacy: {report['dp']}-side clipping, noise multiplier {report['noise_multiplier']:g}: "
            f"epsilon {spent} at delta {report['dp_delta']:g} (client level)")


def audit_lines(report: dict[str, Any], directory: str | Path) -> list[str]:
    """The report as a person reads it in a terminal."""
    members, non, refs = report["members"], report["nonmembers"], report["references"]
    attacks = report["attacks"]
    width = max(len("attack"), *(len(a["label"]) for a in attacks.values()))
    lines = [f"privacy audit of {directory}: {report['model']}, {report['aggregation']}, "
             f"{report.get('clients_with_members', len(report['per_client']))} clients with audited rows",
             f"members: {members['n']} of the clients' {members['of']} training rows; non-members: {non['n']} of "
             f"the {non['of']} rows of the server's test split (the larger set sampled to the smaller's size)",
             f"reference models: {refs['n_models']}, each trained on about {refs['rows_each']} of the {refs['pool']} "
             "rows not audited",
             "",
             f"{'attack':<{width}}  AUC     TPR@1%FPR  TPR@0.1%FPR",
             *(_attack_line(a, width) for a in attacks.values()),
             f"an attack that cannot tell scores AUC 0.5 ± {2 * report['chance_sd']:.4f} (2 sd with these counts)"]
    if non["n"] * 0.001 < 1:
        lines.append(f"at 0.1 % FPR: {non['n']} non-members allow no false positive at all, so that column is the "
                     "TPR at zero false positives")
    clients = report["per_client"]
    if len(clients) > 1:
        key = "calibrated" if attacks.get("calibrated", {}).get("auc") is not None else "loss"
        ranked = sorted(clients.items(), key=lambda kv: -kv[1].get(key, 0.0))
        name_width = max(len("client"), *(len(shown(c)) for c, _ in ranked[:MAX_CLIENT_LINES]))
        lines += ["", "per client (its audited members against all non-members), most exposed first:",
                  f"{'client':<{name_width}}  members  AUC loss  AUC calibrated  chance (2 sd)"]
        for cid, row in ranked[:MAX_CLIENT_LINES]:
            lines.append(f"{shown(cid):<{name_width}}  {row['n_members']:<7d}  {fmt(row.get('loss'))}    "
                         f"{fmt(row.get('calibrated'))}          0.5 ± {2 * row['chance_sd']:.4f}")
        if len(ranked) > MAX_CLIENT_LINES:
            lines.append(f"... and {len(ranked) - MAX_CLIENT_LINES} more clients in audit.json")
        others = report.get("clients_with_members", len(clients)) - len(clients)
        if others > 0:
            lines.append(f"(audit.json has the {len(clients)} clients with the most audited members; {others} "
                         "more have a few each)")
    lines += ["", privacy_line(report)]
    if report.get("note"):
        lines.append(f"note: {report['note']}")
    lines.append(report["lower_bound"])
    return lines


def cmd_audit(args: argparse.Namespace) -> int:
    if args.references < 0:
        raise UsageError(f"--references must be 0 or more, got {args.references}")
    report = run_audit(args.run_dir, n_references=args.references)  # an AuditError is the usage error's line
    directory = Path(args.run_dir)
    print("\n".join(audit_lines(report, directory)), flush=True)
    print(f"written: {directory / AUDIT_FILE}, {directory / ROC_FILE} ({report['seconds']:.1f} s)", file=sys.stderr)
    return 0
