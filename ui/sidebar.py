"""The run configuration widgets (Run page sidebar, Deploy page form).

Every widget has a ``cfg_`` key so its value survives page switches and can
be set from a saved config ("load into Run page"). ``read_config`` turns the
widgets into a RunConfig; validation happens in the engine.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import streamlit as st

from fl.runs.config import RunConfig
from fl.data import DataError, describe_csv, guess_target, looks_continuous, read_csv_table
from fl.learning.models import MODELS, get_spec
from ui import widgets
from ui.advanced import advanced_widgets, robust_widgets
from ui.state import runs_root

DATASET_LABELS = {
    "iris": "Iris: 150 flowers, 4 features, 3 classes",
    "wine": "Wine: 178 wines, 13 features, 3 classes",
    "breast_cancer": "Breast cancer: 569 cases, 30 features, 2 classes",
    "digits": "Digits: 1,797 images, 64 pixels, 10 classes",
    "xor": "XOR: 4 noisy points, not linearly separable",
    "synthetic": "Synthetic: any size (make_classification)",
    "csv": "Upload a CSV…",
}
PARTITION_LABELS = {
    "iid": "IID: shuffled, equal shares",
    "dirichlet": "Dirichlet label skew (non-IID)",
    "shards": "Label shards (non-IID)",
    "quantity": "Quantity skew (sizes differ)",
}
AGGREGATION_LABELS = {
    "fedavg": "FedAvg: sample-weighted average",
    "median": "Coordinate-wise median (robust)",
    "trimmed_mean": "Trimmed mean (robust)",
    "krum": "Krum (robust)",
    "stacking": "Stacking: meta-learner over client models",
    "voting": "Soft voting of client models",
}
ALPHAS = [0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0, 100.0]
TARGET_BIN_CHOICES = [0, 2, 3, 4, 5, 10]
# Widget defaults are RunConfig's own defaults: written once, in fl/config.py.
DEFAULTS: dict[str, Any] = {name: value for name, value in RunConfig().to_dict().items() if name in (
    "dataset", "clients", "partition", "alpha", "shards_per_client", "quantity_skew", "model", "aggregation",
    "rounds", "local_epochs", "fraction", "seed", "n_samples", "n_features", "n_classes", "round_timeout",
    "min_clients", "target_bins")}


def _key(name: str) -> str:
    return widgets.key(name)


def _k(name: str) -> dict[str, Any]:
    """Widget key, kept for the whole session even on pages without the widget; disabled while locked."""
    return widgets.kw(name)


def _hpk(model: str, name: str, default: Any) -> dict[str, Any]:
    return widgets.kw(f"hp_{model}_{name}", default)


def _init(name: str, value: Any) -> None:
    widgets.init(name, value)


def apply_config(config: dict[str, Any]) -> None:
    """Put a saved config into the widgets (call before they are drawn)."""
    from ui.advanced import DEFAULTS as ADVANCED

    for name in ADVANCED:
        if config.get(name) is not None:
            st.session_state[_key(name)] = _nearest_option(name, config[name])
    for name in DEFAULTS:
        if name in config and config[name] is not None:
            st.session_state[_key(name)] = config[name]
    if config.get("alpha") is not None and config["alpha"] not in ALPHAS:
        st.session_state[_key("alpha")] = min(ALPHAS, key=lambda a: abs(a - config["alpha"]))
    for name, value in (config.get("model_params") or {}).items():
        st.session_state[_key(f"hp_{config.get('model')}_{name}")] = (
            ",".join(map(str, value)) if isinstance(value, (list, tuple)) else value)
    if config.get("csv_path"):
        st.session_state[_key("csv_path")] = config["csv_path"]
        st.session_state[_key("target")] = config.get("target")


def _nearest_option(name: str, value: Any) -> Any:
    """Select sliders only take their own options: snap a saved value to the closest one."""
    from ui.advanced import SLIDER_OPTIONS

    options = SLIDER_OPTIONS.get(name)
    if options is None or value in options or not isinstance(value, (int, float)):
        return value
    return min(options, key=lambda o: abs(o - value))


def _save_upload(data: bytes, name: str) -> str:
    """Keep an uploaded CSV on disk, named by content, so the run can be repeated."""
    digest = hashlib.sha256(data).hexdigest()[:16]
    upload_dir = Path(runs_root()) / "_uploads"
    upload_dir.mkdir(parents=True, exist_ok=True)
    path = upload_dir / f"{digest}-{Path(name).name[-60:]}"
    if not path.exists():
        path.write_bytes(data)
    return str(path)


def data_widgets() -> dict[str, Any]:
    """Dataset choice; for a CSV, the upload and its target column."""
    for name in ("dataset", "n_samples", "n_features", "n_classes"):
        _init(name, DEFAULTS[name])
    out: dict[str, Any] = {}
    out["dataset"] = st.selectbox("Dataset", list(DATASET_LABELS), format_func=DATASET_LABELS.get,
                                  **_k("dataset"))
    if out["dataset"] == "synthetic":
        c1, c2, c3 = st.columns(3)
        out["n_samples"] = c1.number_input("Rows", 20, 2_000_000, step=500, **_k("n_samples"))
        out["n_features"] = c2.number_input("Features", 2, 10_000, **_k("n_features"))
        out["n_classes"] = c3.number_input("Classes", 2, 50, **_k("n_classes"))
    elif out["dataset"] == "xor":
        out["n_samples"] = st.number_input("Rows", 40, 100_000, step=100, **_k("n_samples"))
    elif out["dataset"] == "csv":
        out.update(_csv_widgets())
    return out


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
        st.error(table)
        return {"csv_path": path, "target": None}
    columns = [str(c) for c in table.frame.columns]
    if st.session_state.get(_key("target")) not in columns:
        st.session_state[_key("target")] = guess_target(table.frame) or columns[-1]
    target = st.selectbox("Target (label) column", columns, **_k("target"),
                          help="The column the model learns to predict; every other column is a feature.")
    _init("target_bins", 0)
    bins = 0
    if looks_continuous(table.frame[target]) or st.session_state[_key("target_bins")]:
        bins = st.selectbox("Turn the label into quantile classes", TARGET_BIN_CHOICES, **_k("target_bins"),
                            format_func=lambda k: "No: every value is a class" if k == 0 else f"{k} classes",
                            help="A continuous label (an age, a price) becomes k classes of equal size.")
    st.caption(f"Using `{Path(path).name.split('-', 1)[-1]}`")
    return {"csv_path": path, "target": target, "target_bins": bins}


@st.cache_data(show_spinner=False, max_entries=20)
def csv_table(path: str) -> Any:
    """The CSV as the engine reads it (a CsvTable), or the engine's sentence saying why it cannot be read."""
    try:
        return read_csv_table(path, None)
    except DataError as exc:
        return str(exc)


@st.cache_data(show_spinner=False, max_entries=20)
def csv_report(path: str, target: str | None, target_bins: int) -> Any:
    """What the run will make of the CSV: column types, cleaning, class balance (or an error sentence)."""
    table = csv_table(path)
    if isinstance(table, str):
        return table
    try:
        return describe_csv(table, target, target_bins)
    except DataError as exc:
        return str(exc)


def split_widgets(max_clients: int = 100) -> dict[str, Any]:
    for name in ("clients", "partition", "alpha", "shards_per_client", "quantity_skew"):
        _init(name, DEFAULTS[name])
    out: dict[str, Any] = {}
    out["clients"] = st.slider("Clients", 1, max_clients, **_k("clients"))
    out["partition"] = st.selectbox("How the data is split", list(PARTITION_LABELS),
                                    format_func=PARTITION_LABELS.get, **_k("partition"))
    if out["partition"] == "dirichlet":
        out["alpha"] = st.select_slider("Dirichlet α (smaller = more skew)", ALPHAS, **_k("alpha"))
    elif out["partition"] == "shards":
        out["shards_per_client"] = st.slider("Label shards per client", 1, 10, **_k("shards_per_client"))
    elif out["partition"] == "quantity":
        out["quantity_skew"] = st.slider("Size skew (power-law exponent)", 0.0, 4.0, step=0.25,
                                         **_k("quantity_skew"))
    return out


def model_widgets() -> dict[str, Any]:
    """Model, its key hyperparameters, and the aggregation methods valid for it."""
    _init("model", DEFAULTS["model"])
    _init("aggregation", DEFAULTS["aggregation"])
    model = st.selectbox("Model", list(MODELS), format_func=lambda n: MODELS[n].label, **_k("model"))
    params: dict[str, Any] = {}
    if model == "logreg":
        params["C"] = st.select_slider("Inverse regularisation C", [0.01, 0.1, 0.5, 1.0, 2.0, 10.0, 100.0],
                                       **_hpk(model, "C", 1.0))
    elif model in ("sgd", "linear_svm"):
        params["alpha"] = st.select_slider("L2 penalty α", [1e-6, 1e-5, 1e-4, 1e-3, 1e-2],
                                           **_hpk(model, "alpha", 1e-4), format_func=lambda v: f"{v:g}")
    elif model == "mlp":
        text = st.text_input("Hidden layers (units, comma-separated)", **_hpk(model, "hidden_layer_sizes", "64"))
        try:
            params["hidden_layer_sizes"] = [int(u) for u in str(text).split(",") if u.strip()]
            if not params["hidden_layer_sizes"] or min(params["hidden_layer_sizes"]) < 1:
                raise ValueError
        except ValueError:
            st.error("Hidden layers must be whole numbers above 0, e.g. 64 or 128,64.")
            params["hidden_layer_sizes"] = None
        params["learning_rate_init"] = st.select_slider("Learning rate", [0.0005, 0.001, 0.005, 0.01, 0.05],
                                                        **_hpk(model, "learning_rate_init", 0.005))
    elif model in ("random_forest", "gradient_boosting"):
        params["n_estimators"] = st.slider("Trees", 5, 300, **_hpk(model, "n_estimators", 100))
        depth_default = 3 if model == "gradient_boosting" else 0
        depth = st.slider("Max depth (0 = unlimited)", 0, 30, **_hpk(model, "max_depth", depth_default))
        params["max_depth"] = depth or None
    elif model == "decision_tree":
        depth = st.slider("Max depth (0 = unlimited)", 0, 30, **_hpk(model, "max_depth", 0))
        params["max_depth"] = depth or None
    elif model == "knn":
        params["n_neighbors"] = st.slider("Neighbours k", 1, 50, **_hpk(model, "n_neighbors", 5))
    spec = get_spec(model)
    if not spec.averageable:
        options = ["stacking", "voting"]
    elif model == "gaussian_nb":
        options = ["fedavg", "stacking", "voting"]
    else:
        options = ["fedavg", "median", "trimmed_mean", "krum", "stacking", "voting"]
    if st.session_state[_key("aggregation")] not in options:
        st.session_state[_key("aggregation")] = options[0]
    aggregation = st.radio("Aggregation", options, format_func=AGGREGATION_LABELS.get, **_k("aggregation"))
    extra = robust_widgets(aggregation)
    if not spec.averageable:
        st.caption(f"{spec.label} cannot be averaged: fitted trees or stored neighbours have no common "
                   "parameter shape, so whole models are combined instead.")
    elif model == "gaussian_nb" and aggregation == "fedavg":
        st.caption("Naive Bayes statistics are merged exactly (counts, means, variances), in one round.")
    elif model == "gaussian_nb":
        st.caption("Robust rules are not offered: naive Bayes statistics are merged exactly.")
    return {"model": model, "model_params": params, "aggregation": aggregation, **extra}


def rounds_widgets(one_shot: bool) -> dict[str, Any]:
    for name in ("rounds", "local_epochs", "fraction", "seed", "round_timeout", "min_clients"):
        _init(name, DEFAULTS[name])
    out: dict[str, Any] = {}
    if one_shot:
        st.caption("Whole-model aggregations and naive Bayes are one-shot: the run has one round.")
        out["rounds"] = st.session_state[_key("rounds")]
    else:
        out["rounds"] = st.slider("Rounds", 1, 200, **_k("rounds"))
        out["local_epochs"] = st.slider("Local epochs per round", 1, 50, **_k("local_epochs"),
                                        help="Passes over each client's own data per round.")
    out["fraction"] = st.slider("Clients per round (fraction)", 0.1, 1.0, step=0.1, **_k("fraction"))
    with st.expander("More settings"):
        out["seed"] = st.number_input("Seed", 0, 2**31 - 1, **_k("seed"))
        out["round_timeout"] = st.number_input("Round timeout (s)", 1.0, 3600.0, **_k("round_timeout"),
                                               help="Clients that answer later are dropped from the round.")
        out["min_clients"] = st.number_input("Minimum clients per round", 1, 1000, **_k("min_clients"))
    return out


def config_sidebar(locked: bool = False) -> RunConfig | None:
    """All run widgets in order; returns the RunConfig they describe (not yet validated).

    ``locked`` draws them disabled: the settings of a run that is going.
    """
    with widgets.scope("cfg_", locked):
        return _config_widgets()


def _config_widgets() -> RunConfig | None:
    st.subheader("Data")
    values = data_widgets()
    values.update(split_widgets())
    st.subheader("Model")
    values.update(model_widgets())
    st.subheader("Rounds")
    values.update(rounds_widgets(is_one_shot(values)))
    values.update(advanced_widgets(values["aggregation"], values["model"]))
    return config_from_values(values)


def is_one_shot(values: dict[str, Any]) -> bool:
    """Whole-model aggregations and round-free models run a single round."""
    return values["aggregation"] in ("stacking", "voting") or get_spec(values["model"]).round_free


def config_from_values(values: dict[str, Any]) -> RunConfig | None:
    """The RunConfig the widgets describe (not yet validated); None when a widget shows what is missing."""
    if values["model_params"].get("hidden_layer_sizes", 1) is None:
        return None  # the widget already shows what to fix
    if values.get("dataset") == "csv" and not (values.get("csv_path") and values.get("target")):
        return None  # the upload widget says what to do
    fields = set(RunConfig.__dataclass_fields__)
    return RunConfig(**{k: v for k, v in values.items() if k in fields})
