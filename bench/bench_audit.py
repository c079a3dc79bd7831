"""Numbers and chart for docs/strategies.md, "Privacy audit": membership-inference AUC against ε.

Run from the repo root: ``python bench/bench_audit.py [--seeds 3] [--parallel 2]`` (~10-20 min on 2 cores).
Two audited sweeps of the same run (digits, 10 clients, IID, an MLP, 30 rounds of 10 local epochs): one
without differential privacy, one with client-side clipping (C = 1) over noise multipliers 0, 0.5, 1 and 2;
each completed run audited as ``python -m fl audit`` does. Prints a markdown table (mean ± std over the
seeds) and writes docs/img/audit_epsilon.png (the Sweep page's chart, rendered by headless chromium when
/usr/bin/chromium exists).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from bench.bench_robustness import _png  # noqa: E402
from fl.runs.config import RunConfig  # noqa: E402
from fl.runs.sweep_spec import make_sweep  # noqa: E402
from fl.runs.sweep_run import start_sweep  # noqa: E402
from ui.privacy_charts import auc_vs_epsilon_figure  # noqa: E402

IMG = ROOT / "docs" / "img"
# Written out, so that a change of RunConfig's defaults does not move the numbers in the doc.
BASE = dict(dataset="digits", clients=10, partition="iid", model="mlp", rounds=30, local_epochs=10, seed=0)
NOISE = [0.0, 0.5, 1.0, 2.0]


def sweep(root: Path, seeds: int, parallel: int, **settings) -> pd.DataFrame:
    """One audited sweep; its summary.csv rows."""
    grid = {"noise_multiplier": NOISE} if settings.get("dp") else {}
    handle = start_sweep(make_sweep(RunConfig(**BASE, **settings), grid, seeds=seeds, audit=True), root,
                         parallel=parallel, on_result=lambda row, done, total: print(f"  {done}/{total} "
                                                                                      f"{row['run_id']}",
                                                                                      file=sys.stderr))
    handle.wait()
    return handle.store.load(handle.sweep_id).summary()


def table(summary: pd.DataFrame) -> str:
    """Mean ± std over the seeds, one line per setting."""
    def pm(values: pd.Series, digits: int = 3) -> str:
        return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}" if len(values) > 1 else \
            f"{values.mean():.{digits}f}"

    lines = ["| setting | ε (δ = 1e-5) | final accuracy | AUC, loss threshold | AUC, calibrated | seeds |",
             "|---|---|---|---|---|---|"]
    for label, group in summary.groupby("setting", sort=False):
        eps = group["epsilon"].iloc[0]
        shown = "–" if pd.isna(eps) else "∞" if eps == float("inf") else f"{eps:.2f}"
        lines.append(f"| {label} | {shown} | {pm(group['final_accuracy'])} | {pm(group['audit_auc'])} | "
                     f"{pm(group['audit_auc_calibrated'])} | {len(group)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--parallel", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        plain = sweep(Path(tmp), args.seeds, args.parallel).assign(setting="no DP")
        private = sweep(Path(tmp), args.seeds, args.parallel, dp="client", clip_norm=1.0)
    private = private.assign(setting=[f"client DP, noise multiplier {v:g}" for v in private["noise_multiplier"]])
    summary = pd.concat([plain, private], ignore_index=True)
    summary = summary[summary["status"] == "completed"]
    print(table(summary))
    fig = auc_vs_epsilon_figure(summary)
    fig.update_layout(width=1080, template="plotly_white",
                      title_text="digits, 10 clients, MLP, 30 rounds x 10 local epochs: audit AUC against ε "
                                 f"({args.seeds} seeds)")
    IMG.mkdir(parents=True, exist_ok=True)
    _png(fig, IMG / "audit_epsilon.png")


if __name__ == "__main__":
    main()
