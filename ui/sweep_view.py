"""The Sweep page's pieces: the grid's widgets, the sweep registry, the live table, charts and downloads.

The base settings are the Run page's sidebar (``DRAFT_CONFIG``), or the
defaults; the grid's axes and values are drawn from the knobs and read by
the engine's own parser (fl/runs/sweep_spec.py), so the page accepts exactly what
``python -m fl sweep`` accepts. A sweep goes on in worker processes; its
handle lives in a process-wide registry (``st.cache_resource``, like runs),
and the page only reads its snapshot and its files, once a second while it
goes. Worker threads never touch Streamlit.
"""

from __future__ import annotations

import os
from typing import Any

import pandas as pd
import streamlit as st

from fl.runs.config import ConfigError, RunConfig
from fl.runs.knobs import knobs_of
from fl.runs.sweep_spec import (
    DEFAULT_SEEDS, KNOBS, SET_BY_THE_SWEEP, GridError, SweepSpec, cell_label, make_grid, split_values,
)
from fl.runs.sweep_run import SweepHandle, SweepRegistry
from fl.runs.sweep_stats import accuracy_curves
from fl.runs.sweep_store import StoredSweep
from ui import privacy_charts, sweep_charts
from ui.format import duration, when, words
from ui.live import run_title
from ui.app_state import DRAFT_CONFIG, runs_root

SWEEP_SHOWN = "sweep_shown_id"  # the sweep this tab shows; absent = a new sweep being configured
URL_SWEEP = "sweep"
MAX_AXES = 3
REFRESH_SECONDS = 1.0
NO_AXIS = ""
ROW_COLUMNS = ["Cell", "Seed", "Status", "Final accuracy", "Best accuracy", "Final loss", "Rounds", "Seconds",
               "Run id"]


@st.cache_resource(show_spinner=False)
def _sweeps(root: str) -> SweepRegistry:
    return SweepRegistry(root)


def sweeps() -> SweepRegistry:
    return _sweeps(runs_root())


def live_run_ids() -> set[str]:
    """Runs of sweeps still going: the Runs page shows them as running, not interrupted."""
    return sweeps().live_run_ids()


# ---------------------------------------------------------------------- configuring
def base_config() -> tuple[RunConfig | None, str]:
    """The Run page's settings (or the defaults) and where they come from; None with the reason if invalid."""
    draft = st.session_state.get(DRAFT_CONFIG)
    if draft is None:
        return RunConfig(), "the defaults (open the Run page to change them)"
    try:
        return RunConfig.from_dict(dict(draft)).validate(), "the Run page's settings"
    except ConfigError as exc:
        return None, str(exc)


def axis_names() -> list[str]:
    """Knobs a grid can vary from a widget: those with choices or a numeric range."""
    return [name for name, k in knobs_of(RunConfig).items() if name not in SET_BY_THE_SWEEP
            and (k.choices is not None or (k.kind in (int, float) and (k.low is not None or k.high is not None)))]


def axis_label(name: str) -> str:
    if name == NO_AXIS:
        return "—"
    k = KNOBS[name]
    return f"{name}: {k.label or k.help}"


def values_widget(name: str, base: RunConfig, key: str) -> Any:
    """A multiselect of the knob's choices, or a text input of comma-separated numbers (parsed by the engine)."""
    k = KNOBS[name]
    current = getattr(base, name)
    if k.choices is not None:
        choices = list(k.choices())
        return st.multiselect(f"Values of {name}", choices, default=[current] if current in choices else [],
                              format_func=lambda c: (k.names or {}).get(c, str(c)), key=f"{key}_{name}")
    shown = "" if current is None else f"{current:g}" if isinstance(current, float) else str(current)
    return st.text_input(f"Values of {name} (comma-separated)", value=shown, key=f"{key}_{name}",
                         help=f"{k.help}; e.g. {shown or '0.1'}, ... — each value is one column of the grid")


def make_spec(base: RunConfig, axes: list[tuple[str, Any]], seeds: int, audit: bool = False) -> SweepSpec:
    """The sweep the widgets describe, validated by the engine; GridError with one sentence otherwise."""
    raw: dict[str, Any] = {}
    for position, (name, values) in enumerate(axes, start=1):
        if name in raw:
            raise GridError(f"axis {position} repeats {name}: choose another setting or none")
        if isinstance(values, str):
            values = [v for v in split_values(name, values) if str(v).strip()]
        if not values:
            raise GridError(f"give {name} (axis {position}) at least one value")
        raw[name] = list(values)
    return SweepSpec(base, make_grid(raw), int(seeds), audit=audit).validate()


def configure() -> tuple[SweepSpec | None, int]:
    """The base settings, up to three axes, seeds and parallel runs; the valid sweep or None (error shown)."""
    base, source = base_config()
    st.subheader("Base settings")
    if base is None:
        st.error(f"The Run page's settings cannot run: {words(source)}. Fix them on the Run page.")
        return None, 1
    st.caption(f"From {source}: {run_title(base.to_dict(), base.effective_rounds)} · seed {base.seed}. "
               "Every run of the sweep takes these, with its cell's values and its seed.")
    st.page_link("app_pages/run.py", label="Change the base settings on the Run page", icon=":material/tune:")
    with st.expander("All base settings"):
        st.json(base.to_dict(), expanded=False)
    st.subheader("Grid")
    axes: list[tuple[str, Any]] = []
    for i, column in enumerate(st.columns(MAX_AXES)):
        with column:
            name = st.selectbox(f"Axis {i + 1}", [NO_AXIS, *axis_names()], format_func=axis_label,
                                key=f"sweep_axis_{i}")
            if name != NO_AXIS:
                axes.append((name, values_widget(name, base, key=f"sweep_values_{i}")))
    left, right = st.columns(2)
    seeds = left.number_input("Seeds per cell", min_value=1, max_value=50, value=DEFAULT_SEEDS, step=1,
                              key="sweep_seeds", help=f"Seeds {base.seed}, {base.seed + 1}, ...: the spread over "
                                                      "them gives the bands and the error bars.")
    cores = os.cpu_count() or 1
    parallel = right.number_input("Runs at a time", min_value=1, max_value=max(64, cores), value=cores, step=1,
                                  key="sweep_parallel", help="Worker processes; each runs one run with its "
                                                             f"clients (this machine has {cores} cores).")
    audit = st.checkbox("Audit each run's privacy (membership inference)", key="sweep_audit",
                        help="After each completed run, attack its final model (python -m fl audit): its AUC and "
                             "ε go into the table and a chart of AUC against ε. A few seconds more per run.")
    try:
        spec = make_spec(base, axes, int(seeds), audit)
    except GridError as exc:
        st.error(f"Cannot sweep this grid: {words(exc)}.")
        return None, int(parallel)
    st.caption(f"{len(spec.cells())} cell{'s' if len(spec.cells()) != 1 else ''} × {spec.seeds} seeds = "
               f"{spec.n_runs} runs, {min(int(parallel), spec.n_runs)} at a time.")
    for warning in spec.warnings():
        st.warning(f"Note: {words(warning)}.")
    return spec, int(parallel)


# ---------------------------------------------------------------------- showing
def status_of(stored: StoredSweep, handle: SweepHandle | None) -> str:
    """The live status, or the stored one; 'running' on disk with no live handle here was interrupted."""
    if handle is not None:
        return handle.snapshot()["status"]
    return "interrupted" if stored.status == "running" else stored.status


def rows_frame(rows: list[dict], rounds_done: dict[str, int] | None = None) -> pd.DataFrame:
    """The live table: one row per run, as people read it; a number not known yet is blank, never "None"
    (``rounds_done``: the running runs' rounds so far, read from their summaries)."""
    live = rounds_done or {}
    out = [{"Cell": cell_label(r["cell_values"]), "Seed": r["seed"], "Status": r["status"],
            "Final accuracy": _percent(r.get("final_accuracy")), "Best accuracy": _percent(r.get("best_accuracy")),
            "Final loss": _number(r.get("final_loss"), "{:.4f}"),
            "Rounds": _number(r.get("rounds_done") if r.get("rounds_done") is not None else live.get(r["run_id"]),
                              "{:.0f}"),
            "Seconds": _number(r.get("duration_s"), "{:.1f}"), "Run id": r["run_id"],
            "ε": _epsilon(r.get("epsilon")), "Audit AUC": _number(r.get("audit_auc"), "{:.3f}"),
            "Audit AUC (calibrated)": _number(r.get("audit_auc_calibrated"), "{:.3f}")} for r in rows]
    audited = any(r.get("audit_auc") is not None or r.get("audit_error") for r in rows)
    private = any(r.get("epsilon") is not None for r in rows)
    columns = ROW_COLUMNS[:-1] + (["ε"] if private or audited else []) \
        + (["Audit AUC", "Audit AUC (calibrated)"] if audited else []) + ROW_COLUMNS[-1:]
    return pd.DataFrame(out, columns=columns)


def _epsilon(value: Any) -> str:
    """ε in the table: 2 decimals, ∞ for no noise, blank without differential privacy (or not known yet)."""
    if isinstance(value, (int, float)) and value == float("inf"):
        return "∞"
    return _number(value, "{:.2f}")


def _percent(value: Any) -> str:
    return f"{100 * value:.1f}%" if isinstance(value, (int, float)) and value == value else ""


def _number(value: Any, pattern: str) -> str:
    return pattern.format(value) if isinstance(value, (int, float)) and value == value else ""


def running_rounds(rows: list[dict]) -> dict[str, int]:
    """Rounds done so far by the sweep's running runs (their summary.json, rewritten every round)."""
    out = {}
    for row in rows:
        if row.get("status") == "running":
            try:
                out[row["run_id"]] = int(sweeps().store.run_store.load(row["run_id"]).summary.get("rounds_done") or 0)
            except (OSError, ValueError):
                continue
    return out


def stored_rows(stored: StoredSweep) -> list[dict]:
    """The rows of a sweep from its files (a past sweep, or one another process runs)."""
    summary = stored.summary()
    by_id = {r["run_id"]: r for r in summary.to_dict("records")} if len(summary) else {}
    rows = []
    for run in stored.meta.get("runs", []):
        row = {**run, **{k: v for k, v in by_id.get(run["run_id"], {}).items() if v == v}}
        rows.append({**row, "cell_values": run.get("cell_values") or {}})
    return rows


def cell_labels(stored: StoredSweep) -> list[str]:
    return [cell_label(cell) for cell in SweepSpec.from_dict(stored.meta).cells()]


def bands(stored: StoredSweep, band: str) -> dict[str, pd.DataFrame]:
    """Cell label -> accuracy per round over the cell's completed runs."""
    labels = cell_labels(stored)
    summary = stored.summary()
    done = summary[summary["status"] == "completed"] if len(summary) else summary
    metrics = stored.run_metrics(sweeps().store.run_store, list(done["run_id"]) if len(done) else [])
    out = {}
    for index, label in enumerate(labels):
        ids = list(done.loc[done["cell"] == index, "run_id"]) if len(done) else []
        out[label] = accuracy_curves({i: metrics[i] for i in ids if i in metrics}, band)
    return out


def headline(stored: StoredSweep, snap: dict | None, status: str) -> None:
    rows = snap["rows"] if snap is not None else stored_rows(stored)
    finished = sum(r["status"] in ("completed", "stopped", "failed", "cancelled") for r in rows)
    completed = sum(r["status"] == "completed" for r in rows)
    grid = ", ".join(f"{k} ∈ {{{', '.join(sweep_charts.value_text(v) for v in vs)}}}" for k, vs in stored.grid.items())
    base = stored.meta.get("base") or {}
    st.caption(f"Sweep `{stored.sweep_id}` · {grid or 'no grid'} · {stored.meta.get('seeds')} seeds · "
               f"{run_title(base)} · started {when(stored.meta.get('created_at'))}")
    if status == "running":
        st.progress(finished / max(1, len(rows)), text=f"{finished} of {len(rows)} runs finished "
                                                        f"({sum(r['status'] == 'running' for r in rows)} running)")
        return
    took = duration((stored.meta.get("finished_at") or 0) - (stored.meta.get("created_at") or 0))
    said = f"{completed} of {len(rows)} runs completed in {took}"
    if status == "completed":
        st.success(f"Sweep completed: {said}.")
    elif status == "stopped":
        st.warning(f"Sweep stopped: {said}; the runs not started were cancelled.")
    elif status == "interrupted":
        st.warning(f"This sweep was interrupted (the app that ran it stopped): {said}.")
    else:
        st.error(f"Sweep failed: {stored.meta.get('error') or 'see the table'}; {said}.")


def draw_sweep(stored: StoredSweep, snap: dict | None, status: str) -> None:
    """Table and charts of one sweep, from its snapshot (live) or its files."""
    headline(stored, snap, status)
    rows = snap["rows"] if snap is not None else stored_rows(stored)
    st.dataframe(rows_frame(rows, running_rounds(rows)), hide_index=True, height=min(400, 38 + 35 * len(rows)))
    if not any(r["status"] == "completed" for r in rows):
        st.caption("The charts appear as the first runs complete." if status == "running" else
                   "No run of this sweep completed, so there is nothing to chart.")
        return
    band = st.radio("Band over the seeds", ["std", "range"], horizontal=True, key="sweep_band",
                    format_func=lambda b: "mean ± std" if b == "std" else "min to max")
    st.plotly_chart(sweep_charts.cell_curves_figure(bands(stored, band), band), key="sweep-curves")
    keys = list(stored.grid)
    cells = stored.cells()
    left, right = st.columns(2)
    with left:
        if len(keys) >= 2:
            x = st.selectbox("Heatmap columns", keys, index=0, key="sweep_heat_x")
            y = st.selectbox("Heatmap rows", [k for k in keys if k != x], index=0, key="sweep_heat_y")
            st.plotly_chart(sweep_charts.heatmap_figure(stored.summary(), x, y), key="sweep-heatmap")
            if len(keys) > 2:
                st.caption("Averaged over the other axis.")
        else:
            st.info("The heatmap needs two axes in the grid.")
    with right:
        st.plotly_chart(sweep_charts.cell_bars_figure(cells, cell_labels(stored)), key="sweep-bars")
    audit_block(stored.summary())


def audit_block(summary: pd.DataFrame) -> None:
    """A sweep that audited its runs: audit AUC against ε, and what an audit cannot say."""
    if not privacy_charts.has_audit(summary):
        return
    from fl.runs.audit import LOWER_BOUND

    st.plotly_chart(privacy_charts.auc_vs_epsilon_figure(summary), key="sweep-audit-epsilon")
    st.caption("Each run's final model attacked by membership inference (python -m fl audit): AUC 0.5 means the "
               "attacks cannot tell the clients' training rows from held-out ones. Sweep the noise multiplier "
               "(with differential privacy on) to see what privacy buys. " + LOWER_BOUND)


def downloads(stored: StoredSweep) -> None:
    c1, c2, c3 = st.columns(3)
    for column, name in ((c1, "summary.csv"), (c2, "cells.csv")):
        path = stored.path / name
        column.download_button(name, path.read_bytes() if path.exists() else b"", mime="text/csv",
                               file_name=f"{stored.sweep_id}-{name}", key=f"sweep_dl_{name}", width="stretch",
                               on_click="ignore")
    c3.download_button("Whole sweep (zip)", lambda: stored.zip(sweeps().store.run_store), mime="application/zip",
                       file_name=f"{stored.sweep_id}.zip", key="sweep_dl_zip", width="stretch", on_click="ignore",
                       help="sweep.json, summary.csv, cells.csv and every run's files")


def show(sweep_id: str, running: bool) -> None:
    """One sweep: live (a fragment polling once a second) while it goes, static with downloads once done.

    ``running`` is what the page's Stop and New sweep buttons were drawn for: a sweep that ends between
    them and this view stays live for one more poll, whose rerun redraws the buttons, rather than showing
    "completed" beside an enabled Stop."""
    handle = sweeps().get(sweep_id)
    try:
        stored = sweeps().store.load(sweep_id)
    except (OSError, ValueError):
        st.error(f"Sweep {sweep_id} is no longer on disk (deleted?). Press New sweep.")
        return
    if handle is None or not running:
        status = status_of(stored, handle)
        draw_sweep(stored, None, status)
        downloads(stored)
        return

    @st.fragment(run_every=REFRESH_SECONDS)
    def live() -> None:
        if handle.done:
            st.rerun(scope="app")  # one full rerun: Stop off, Start and downloads on
        draw_sweep(sweeps().store.load(sweep_id), handle.snapshot(), "running")

    live()


def past_sweeps_frame(stored: list[StoredSweep]) -> pd.DataFrame:
    live = {h.sweep_id for h in sweeps().active()}
    return pd.DataFrame([{"Started": when(s.meta.get("created_at")), "Grid": ", ".join(s.grid) or "—",
                          "Runs": len(s.run_ids), "Seeds": s.meta.get("seeds"),
                          "Status": "running" if s.sweep_id in live else status_of(s, None),
                          "Sweep id": s.sweep_id} for s in stored],
                        columns=["Started", "Grid", "Runs", "Seeds", "Status", "Sweep id"])
