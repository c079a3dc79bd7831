"""The run configuration widgets (Run page sidebar, Deploy page form), drawn from the engine's knobs.

Every widget keeps its value under a key of the page's scope (ui/widgets.py)
so it survives page switches and can be set from a saved config ("load into
Run page", a reload). Labels, ranges, defaults and visibility come from
RunConfig's knobs and the model adapters; only the CSV upload, whose widgets
read the file, is written out here. Validation happens in the engine.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import streamlit as st

from ui.format import words

from fl.runs.config import RunConfig
from fl.runs.for_pages import (
    MODELS, PARTITIONERS, SPLIT_REASON, DataError, describe_csv, get_model, guess_split_column, guess_target,
    looks_continuous, parse_columns, read_csv_table, split_candidates, strategies_for, target_rows,
)
from ui import widgets
from ui.knob_widgets import KNOBS, default, hyper_value_for_widget, hyper_widget, knob_widget, shown
from ui.app_state import runs_root

TARGET_BIN_CHOICES = [0, 2, 3, 4, 5, 10]
OWN_WIDGETS = ("model", "model_params", "aggregation")  # drawn by model_widgets itself


def _key(name: str) -> str:
    return widgets.key(name)


def _k(name: str) -> dict[str, Any]:
    return widgets.kw(name)


BASE_CONFIG = "base_config"  # (scoped) the last config put into the widgets: what the knobs without a widget keep
CSV_OWN = ("csv_path", "target", "target_bins", "keep_columns", "split_column", "model_params")  # drawn here
KEPT_FROM_BASE = tuple(n for n, k in KNOBS.items() if k.widget is None and n not in CSV_OWN)


def apply_config(config: dict[str, Any]) -> None:
    """Put a saved config into the widgets (call before they are drawn).

    Settings without a widget (the test share, a sweep's seed, the worker
    count, ...) are kept too: the sidebar then describes exactly that run,
    so a run resumed or reloaded into the page is still the page's run when
    it ends, and Start repeats it as it was.
    """
    st.session_state[_key(BASE_CONFIG)] = dict(config)
    for name, k in KNOBS.items():
        value = config.get(name)
        if k.widget is None or (value is None and not k.optional):
            continue
        if k.widget == "select_slider" and value not in k.options and isinstance(value, (int, float)):
            value = min((o for o in k.options if o is not None), key=lambda o: abs(o - value))
        if k.widget == "checkbox_text":  # the switch, then the text (empty when it is the knob's const)
            st.session_state[_key(name + "_on")] = bool(value)
            value = "" if value == k.const else value
        st.session_state[_key(name)] = value
    model = MODELS.get(config.get("model", ""))
    for hyper in (model.hyperparameters if model else ()):
        if hyper.name in (config.get("model_params") or {}):
            st.session_state[_key(f"hp_{model.name}_{hyper.name}")] = hyper_value_for_widget(
                hyper, config["model_params"][hyper.name])
    if config.get("csv_path"):
        for name in ("csv_path", "target", "target_bins", "split_column"):
            st.session_state[_key(name)] = config.get(name)
        st.session_state[_key("keep_columns")] = parse_columns(config.get("keep_columns"))  # the widget's list


def _draw(names: list[str], values: dict[str, Any]) -> None:
    """The knobs' widgets, in order, each only when its knob says it is shown for the values so far."""
    for name in names:
        if shown(name, values):
            values[name] = knob_widget(name, values)


def _group(group: str, more: bool | None = None) -> list[str]:
    return [n for n, k in KNOBS.items() if k.group == group and (more is None or k.more == more)]


def data_widgets(values: dict[str, Any]) -> None:
    """Dataset choice; a generated set's size; for a CSV, the upload, its label column and binning."""
    values["dataset"] = knob_widget("dataset", values)
    _draw([n for n in _group("data") if n != "dataset"], values)
    if values["dataset"] == "csv":
        values.update(_csv_widgets())


def _save_upload(data: bytes, name: str) -> str:
    """Keep an uploaded CSV on disk, named by content, so the run can be repeated."""
    digest = hashlib.sha256(data).hexdigest()[:16]
    upload_dir = Path(runs_root()) / "_uploads"
    upload_dir.mkdir(parents=True, exist_ok=True)
    path = upload_dir / f"{digest}-{Path(name).name[-60:]}"
    if not path.exists():
        path.write_bytes(data)
    return str(path)


def _csv_widgets() -> dict[str, Any]:
    """Upload, label column (a guessed default) and, for a continuous label, quantile binning."""
    upload = st.file_uploader("CSV file", type=["csv", "txt", "tsv"], key=_key("upload"), disabled=widgets.locked(),
                              help="One row per sample, a header row with column names; pick the label column "
                                   "below. Commas, semicolons or tabs.")
    if upload is not None:
        path = _save_upload(upload.getvalue(), upload.name)
        if st.session_state.get(_key("csv_path")) != path:
            st.session_state[_key("csv_path")] = path
            st.session_state.pop(_key("target"), None)  # a new file: guess its label column afresh
    path = st.session_state.get(_key("csv_path"))
    if not path:
        st.info("Upload a CSV file to use it as the dataset.")
        return {"csv_path": None, "target": None}
    table = csv_table(path)
    if isinstance(table, str):
        st.error(words(table))
        return {"csv_path": path, "target": None}
    columns = [str(c) for c in table.frame.columns]
    if st.session_state.get(_key("target")) not in columns:
        st.session_state[_key("target")] = guess_target(table.frame) or columns[-1]
    target = st.selectbox("Target (label) column", columns, **_k("target"),
                          help="The column the model learns to predict; every other column is a feature. "
                               "Guessed from the names and values: check it.")
    widgets.init("target_bins", default("target_bins"))
    bins = 0
    if looks_continuous(table.frame[target]) or st.session_state[_key("target_bins")]:
        bins = st.selectbox("Turn the label into quantile classes", TARGET_BIN_CHOICES, **_k("target_bins"),
                            format_func=lambda k: "No: every value is a class" if k == 0 else f"{k} classes",
                            help="A continuous label (an age, a price) becomes k classes of equal size.")
        if not bins:
            st.info(f"`{target}` holds {table.frame[target].nunique()} different numbers: a measurement, not "
                    "classes. Choose a number of quantile classes above to train on it, or another label column.")
    keep = _keep_widget(path, target, int(bins))
    st.caption(f"Using `{Path(path).name.split('-', 1)[-1]}`")
    return {"csv_path": path, "target": target, "target_bins": bins, "keep_columns": keep}


def _keep_widget(path: str, target: str, target_bins: int) -> str:
    """The columns the engine excludes (row numbers, IDs, constants), to keep anyway: rarely right, so opt-in."""
    report = csv_report(path, target, target_bins)
    excluded = [] if isinstance(report, str) else [c["column"] for c in report.columns if c["kind"] == "excluded"]
    chosen = [c for c in st.session_state.get(_key("keep_columns")) or [] if c in excluded]
    st.session_state[_key("keep_columns")] = chosen  # a new file or target: only columns it excludes
    if not excluded:
        return ""
    kept = st.multiselect("Keep excluded columns", excluded, **_k("keep_columns"),
                          help="These look like row numbers, IDs or constants and are left out, because a row "
                               "number in a file sorted by label can fake the accuracy. Keep one only if it is a "
                               "real measurement.")
    return ",".join(kept)


@st.cache_data(show_spinner=False, max_entries=20)
def csv_table(path: str) -> Any:
    """The CSV as the engine reads it (a CsvTable), or the engine's sentence saying why it cannot be read."""
    try:
        return read_csv_table(path, None)
    except DataError as exc:
        return str(exc)


@st.cache_data(show_spinner=False, max_entries=20)
def csv_report(path: str, target: str | None, target_bins: int, split_column: str | None = None,
               keep_columns: str = "") -> Any:
    """What the run will make of the CSV: column types, cleaning, class balance (or an error sentence).

    ``split_column`` (a column split's) is reported as left out: its values are the clients;
    ``keep_columns`` are used although they look like row numbers, IDs or constants.
    """
    table = csv_table(path)
    if isinstance(table, str):
        return table
    try:
        return describe_csv(table, target, target_bins, exclude={split_column: SPLIT_REASON} if split_column else (),
                            keep=keep_columns)
    except DataError as exc:
        return str(exc)


@st.cache_data(show_spinner=False, max_entries=20)
def csv_split_columns(path: str, target: str | None) -> dict[str, int]:
    """The CSV's columns a run can be split by (2 to 50 values among the labelled rows) and their counts."""
    table = csv_table(path)
    if isinstance(table, str):
        return {}
    try:
        name, keep = target_rows(table.frame, target)
    except DataError:
        return {}
    return split_candidates(table.frame.loc[keep], exclude=(name,))


def split_widgets(values: dict[str, Any]) -> None:
    """Clients and how the data is split; a CSV with a column of 2 to 50 values can be split by it instead
    (one client per value: the clients slider gives way to the choice of column)."""
    csv = values.get("dataset") == "csv" and values.get("csv_path") and values.get("target")
    candidates = csv_split_columns(values["csv_path"], values["target"]) if csv else {}
    if st.session_state.get(_key("partition")) == "column" and not candidates:
        st.session_state[_key("partition")] = default("partition")  # no column to split by: back to the default
    by_column = st.session_state.get(_key("partition")) == "column"
    for name in _group("split"):
        if name == "clients" and by_column:
            continue  # the column's values say how many
        if name == "partition":
            options = [p for p in PARTITIONERS if p != "column" or candidates]
            values["partition"] = knob_widget("partition", values, options=options)
            if values["partition"] == "column":
                values.update(_column_widgets(candidates))
        elif shown(name, values):
            values[name] = knob_widget(name, values)


def _column_widgets(candidates: dict[str, int]) -> dict[str, Any]:
    """Which column the clients are the values of; their number follows from it."""
    if st.session_state.get(_key("split_column")) not in candidates:
        st.session_state[_key("split_column")] = guess_split_column(candidates)
    column = st.selectbox(KNOBS["split_column"].widget_label(), list(candidates), **_k("split_column"),
                          format_func=lambda c: f"{c} ({candidates[c]} values)",
                          help="Columns with 2 to 50 values. Each value (a hospital, a region) is one client, "
                               "named after it; missing values are one more client, 'missing'.")
    st.caption(f"{candidates[column]} clients, one per value of `{column}`; the column is not a feature. The "
               "server first holds out its test share of all rows (stratified by label).")
    return {"split_column": column, "clients": candidates[column]}


def model_widgets(values: dict[str, Any]) -> None:
    """Model, its hyperparameters, and the aggregation rules that can serve it."""
    values["model"] = knob_widget("model", values)
    adapter = get_model(values["model"])
    params = {h.name: hyper_widget(adapter.name, h) for h in adapter.hyperparameters}
    values["model_params"] = params
    values["aggregation"] = knob_widget("aggregation", values, options=strategies_for(adapter))
    _draw([n for n in _group("model") if n not in OWN_WIDGETS], values)  # the chosen rule's own knobs
    if not adapter.averageable:
        st.caption(f"{adapter.label} cannot be averaged: fitted trees or stored neighbours have no common "
                   "parameter shape, so whole models are combined instead.")
    elif adapter.exact_merge:
        st.caption(f"{adapter.label} statistics are merged exactly (counts, means, variances), in one round; "
                   "robust rules do not apply.")


def rounds_widgets(values: dict[str, Any]) -> None:
    if not shown("rounds", values):
        st.caption("Whole-model aggregations and one-shot models run a single round.")
    _draw(_group("rounds", more=False), values)
    with st.expander("More settings"):
        _draw(_group("rounds", more=True) + _group("tracking"), values)


def privacy_widgets(values: dict[str, Any]) -> None:
    """Secure aggregation and differential privacy, for the rules and models they serve."""
    names = [n for n in _group("privacy") if shown(n, values)]
    if names:
        _draw(names, values)
    else:
        st.caption("Secure aggregation and differential privacy apply to averaged parameters and boosted trees' "
                   "histograms; this model and aggregation combine each site's own.")


def advanced_widgets(values: dict[str, Any]) -> None:
    """Server optimiser, FedProx, simulated faults and attacks, differential privacy."""
    with st.expander("Advanced: optimiser, FedProx, faults, attacks, privacy, runtime"):
        for group, title in (("optimizer", "Server optimiser and FedProx"), ("faults", "Faults and attacks"),
                             ("privacy", "Privacy: secure aggregation, differential privacy"),
                             ("runtime", "Runtime")):
            names = [n for n in _group(group) if shown(n, values)]
            if names:
                st.markdown(f"**{title}**")
                _draw(names, values)


def config_sidebar(locked: bool = False) -> RunConfig | None:
    """All run widgets in order; returns the RunConfig they describe (not yet validated).

    ``locked`` draws them disabled: the settings of a run that is going.
    """
    with widgets.scope("cfg_", locked):
        values: dict[str, Any] = {}
        st.subheader("Data")
        data_widgets(values)
        split_widgets(values)
        st.subheader("Model")
        model_widgets(values)
        st.subheader("Rounds")
        rounds_widgets(values)
        advanced_widgets(values)
        return config_from_values(values)


def config_from_values(values: dict[str, Any], data_at_clients: bool = False) -> RunConfig | None:
    """The RunConfig the widgets describe (not yet validated); None when a widget shows what is missing.

    ``data_at_clients``: a coordinator without rows (Deploy), whose CSV is at the sites: no file here.
    """
    hypers = get_model(values["model"]).hyperparameters
    if any(h.layers and values["model_params"].get(h.name) is None for h in hypers):
        return None  # the widget already shows what to fix
    if values.get("dataset") == "csv" and not ((values.get("csv_path") or data_at_clients) and values.get("target")):
        return None  # the upload widget (or the label column's) says what to do
    base = {k: v for k, v in (st.session_state.get(_key(BASE_CONFIG)) or {}).items() if k in KEPT_FROM_BASE}
    return RunConfig(**{**base, **{k: v for k, v in values.items() if k in KNOBS}})
