"""Numbers and charts for docs/strategies.md: attacks vs robust rules, DP trade-off.

Run from the repo root: ``python bench/bench_robustness.py``. Prints markdown
tables and writes docs/img/attack_recovery.png and docs/img/dp_tradeoff.png
(plotly figures rendered by headless chromium, when /usr/bin/chromium exists).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import plotly.graph_objects as go  # noqa: E402
from plotly.subplots import make_subplots  # noqa: E402

from fl.runs import simulation  # noqa: E402
from fl.runs.config import RunConfig  # noqa: E402

IMG = ROOT / "docs" / "img"
# The settings the tables in docs/strategies.md were measured with (IID split, 5 local epochs, clients
# training on all their rows): written out, so that a change of RunConfig's defaults does not move them.
ATTACK = dict(dataset="digits", clients=10, rounds=10, model="logreg", seed=0, partition="iid", local_epochs=5,
              local_test_size=0.0)
RULES = [("fedavg", {}), ("median", {}), ("trimmed_mean", {"trim_beta": 0.3}), ("krum", {"num_malicious": 3}),
         ("krum (multi, k=5)", {"num_malicious": 3, "num_to_keep": 5})]


def _run(**kw):
    return simulation.run(RunConfig(**kw))


def attacks() -> dict[str, list[float]]:
    curves: dict[str, list[float]] = {}
    print("| attack (3 of 10 clients) | " + " | ".join(name for name, _ in RULES) + " |")
    print("|---|" + "---|" * len(RULES))
    for attack in ("none", "sign_flip", "scale", "label_flip", "gaussian_noise"):
        row = []
        for name, extra in RULES:
            agg = name.split(" ")[0]
            result = _run(**ATTACK, aggregation=agg, malicious_clients=0 if attack == "none" else 3,
                          attack=attack, **extra)
            row.append(result.final_metrics["accuracy"])
            if attack == "sign_flip":
                curves[name] = [r["accuracy"] for r in result.rounds]
        print(f"| {attack} | " + " | ".join(f"{a:.3f}" for a in row) + " |")
    return curves


def privacy() -> dict[float, tuple[list[float], list[float]]]:
    out = {}
    print("\n| noise multiplier σ | final accuracy | ε after 10 rounds (δ = 1e-5) |")
    print("|---|---|---|")
    for sigma in (0.0, 0.5, 1.0, 2.0, 4.0):
        result = _run(**ATTACK, dp="server", clip_norm=1.0, noise_multiplier=sigma)
        acc = [r["accuracy"] for r in result.rounds]
        eps = [r["epsilon"] for r in result.rounds]
        out[sigma] = (acc, eps)
        print(f"| {sigma:g} | {acc[-1]:.3f} | {eps[-1]:.2f} |")
    clean = _run(**ATTACK)
    print(f"| no DP (plain FedAvg) | {clean.final_metrics['accuracy']:.3f} | – |")
    return out


def _png(fig: go.Figure, path: Path) -> None:
    """Render a plotly figure to PNG with headless chromium (no kaleido needed)."""
    chromium = "/usr/bin/chromium"
    if not os.path.exists(chromium):
        print(f"(chromium missing: {path.name} not written)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        html = Path(tmp) / "fig.html"
        fig.write_html(html, include_plotlyjs=True, full_html=True, config={"displayModeBar": False})
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        f"--screenshot={path}", "--window-size=1120,480", "--hide-scrollbars", "--virtual-time-budget=4000",
                        f"--user-data-dir={tmp}/profile", html.as_uri()], check=True, capture_output=True, timeout=120)
    print(f"wrote {path.relative_to(ROOT)}")


def charts(curves: dict[str, list[float]], dp: dict[float, tuple[list[float], list[float]]]) -> None:
    IMG.mkdir(parents=True, exist_ok=True)
    fig = go.Figure()
    for name, ys in curves.items():
        fig.add_trace(go.Scatter(x=list(range(1, len(ys) + 1)), y=ys, mode="lines+markers", name=name))
    fig.update_layout(title="digits, 10 clients, 3 send sign-flipped updates: test accuracy per round",
                      xaxis_title="Round", yaxis_title="Accuracy", yaxis_tickformat=".0%", template="plotly_white",
                      width=1080, height=450, margin=dict(l=60, r=20, t=60, b=50))
    _png(fig, IMG / "attack_recovery.png")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Test accuracy", "ε spent (δ = 1e-5)"))
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"]
    for colour, (sigma, (acc, eps)) in zip(palette, dp.items()):
        xs = list(range(1, len(acc) + 1))
        line = dict(color=colour)
        fig.add_trace(go.Scatter(x=xs, y=acc, mode="lines+markers", name=f"σ = {sigma:g}", legendgroup=str(sigma),
                                 line=line), row=1, col=1)
        if sigma > 0:
            fig.add_trace(go.Scatter(x=xs, y=eps, mode="lines+markers", name=f"σ = {sigma:g}", line=line,
                                     legendgroup=str(sigma), showlegend=False), row=1, col=2)
    fig.update_yaxes(tickformat=".0%", row=1, col=1)
    fig.update_yaxes(type="log", row=1, col=2)
    fig.update_xaxes(title_text="Round")
    fig.update_layout(title="Server-side DP, clip norm 1: more noise, less accuracy, less ε",
                      template="plotly_white", width=1080, height=450, margin=dict(l=60, r=20, t=80, b=50))
    _png(fig, IMG / "dp_tradeoff.png")


if __name__ == "__main__":
    curves = attacks()
    dp = privacy()
    charts(curves, dp)
