"""Histogram messages fuzzed (issue 18): whatever a site or a server sends in a step of ``hist_gbdt``, the other
side refuses it with a reason or takes it and stays sound; it never raises anything else, never allocates more
than the task allows and never grows a tree from values no honest peer sends."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fl.federation.global_model import BoostedTreesModel
from fl.federation.task import Task
from fl.learning import trees as T
from fl.learning.models import get_model
from fl.learning.strategies import HistogramSum
from fl.wire import FitResult

pytestmark = pytest.mark.timeout(120)

N_FEATURES, CLASSES, PARAMS = 3, [0, 1, 2], {"max_depth": 2, "max_bins": 8}
_floats = st.floats(allow_nan=True, allow_infinity=True, width=64) | st.sampled_from([0.0, 1.0, -1.0, 1e300, 0.25])
_dtypes = st.sampled_from(["float64", "float32", "int64", "int32", "bool", "uint8"])


def _server() -> BoostedTreesModel:
    task = Task(model="hist_gbdt", model_params=dict(PARAMS), n_features=N_FEATURES, classes=list(CLASSES))
    return BoostedTreesModel(HistogramSum(), task, get_model("hist_gbdt"))


def _honest_sketch(model: BoostedTreesModel, rng: np.random.Generator) -> None:
    """Take the run through its sketch step with two honest sites, so the next step is a level."""
    model.step_config()
    model.fit_payload()
    accepted = []
    for cid in ("a", "b"):
        sketch, count = T.quantile_sketch(rng.normal(size=(40, N_FEATURES)))
        values, why = model.accept(FitResult(round=1, n_samples=40, metrics={"step": model.step},
                                             params=[("sketch", sketch), ("sketch_count", count)]))
        assert why is None
        accepted.append((cid, values, 40))
    model.update(accepted)


def _arrays(shape_of: dict[str, tuple]) -> st.SearchStrategy:
    """Arrays under the expected names, each of the expected shape or a nearby one, of any dtype and value."""
    def one(shape: tuple) -> st.SearchStrategy:
        shapes = st.sampled_from([shape, shape[:-1], (*shape[:-1], shape[-1] + 1), (0,), ()])
        elements = {"float64": _floats, "float32": st.floats(width=32)}
        return st.tuples(_dtypes, shapes).flatmap(
            lambda ds: hnp.arrays(np.dtype(ds[0]), ds[1], elements=elements.get(ds[0])))
    return st.fixed_dictionaries({name: one(shape) for name, shape in shape_of.items()})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.integers(0, 10**6))
def test_a_sites_hostile_histograms_are_refused_or_sound(data, n_samples) -> None:
    # Prepare: a server at its first level, three nodes' worth of histograms expected
    model = _server()
    _honest_sketch(model, np.random.default_rng(0))
    model.step_config()
    payload = dict(model.fit_payload()["params"])
    width = T.max_bin_count(T.edges_list(payload["edges"])) + 1
    shape = (len(payload["frontier_node"]), N_FEATURES, width)
    arrays = data.draw(_arrays({"hist_g": shape, "hist_h": shape}))
    extra = data.draw(st.sampled_from([[], [("other", np.zeros(2))]]))
    # Execute
    values, why = model.accept(FitResult(round=1, n_samples=n_samples, metrics={"step": model.step},
                                         params=[*arrays.items(), *extra]))
    # Assert: refused with a reason, or sums an honest site of n_samples rows can send, which grow a sound level
    if values is None:
        assert why
        return
    G, H = values
    assert np.isfinite(G).all() and np.isfinite(H).all() and (H >= 0).all()
    assert np.abs(G).sum(axis=2).max() <= n_samples * (1 + 1e-9)
    model.update([("mallory", values, n_samples)])
    grown = model.grower.trees() if model.grower is not None else model.forest
    assert np.isfinite(grown.value).all() and np.isfinite(grown.gain).all()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_a_servers_hostile_step_is_refused_or_answered_within_the_tasks_bounds(data) -> None:
    # Prepare: an honest server's level step, then some of its arrays replaced
    model = _server()
    _honest_sketch(model, np.random.default_rng(1))
    model.step_config()
    honest = dict(model.fit_payload()["params"])
    names = data.draw(st.lists(st.sampled_from(sorted(honest)), min_size=1, max_size=3, unique=True))
    hostile = data.draw(_arrays({n: np.shape(honest[n]) for n in names}))
    arrays = {**honest, **hostile}
    if data.draw(st.booleans()):
        arrays["frontier_node"] = np.arange(data.draw(st.integers(0, 10**5)), dtype=np.int32)
        arrays["frontier_tree"] = np.zeros_like(arrays["frontier_node"])
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(30, N_FEATURES)), rng.integers(0, 3, size=30)
    X[::7, 1] = np.nan
    # Execute
    try:
        sums = get_model("hist_gbdt").local_statistics({}, X, y, np.array(CLASSES), {"statistics": "level"}, arrays,
                                                       PARAMS)
    except ValueError:
        return  # refused: the client answers error "shape"
    # Assert: what is answered is as large as an honest frontier allows, and finite
    G, H = (a for _, a in sums)
    assert G.shape[0] <= T.n_outputs(len(CLASSES)) * 2 ** (PARAMS["max_depth"] - 1)
    assert G.shape[1:] == (N_FEATURES, PARAMS["max_bins"] + 1) or G.shape[2] <= PARAMS["max_bins"] + 1
    assert np.isfinite(G).all() and np.isfinite(H).all()
