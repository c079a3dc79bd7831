"""Model adapters: global shapes from the task, local training, skops blobs."""

import numpy as np
import pytest
from sklearn.datasets import load_digits

from fl.wire import blobs
from fl.learning.models import MODELS, get_model
from fl.learning.training import LocalModel

AVERAGEABLE_MODELS = [name for name, m in MODELS.items() if m.averageable]
from fl.wire import ProtocolError

CLASSES = np.arange(10)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return (X - X.mean(0)) / (X.std(0) + 1e-9), y


@pytest.mark.parametrize("name", AVERAGEABLE_MODELS)
def test_client_missing_classes_returns_global_shapes(name, digits):
    # Prepare: a client that holds only classes 0 and 1
    X, y = digits
    mask = y < 2
    adapter = get_model(name)
    start = adapter.initial_parameters({}, CLASSES, 64, seed=0)
    # Execute
    model = LocalModel(name, {}, CLASSES, 64, seed=0).fit(X[mask], y[mask], global_arrays=start, epochs=2)
    params = model.get_parameters()
    # Assert
    assert [(n, a.shape) for n, a in params] == adapter.expected_shapes({}, CLASSES, 64)
    assert all(a.dtype == np.float64 and np.isfinite(a).all() for _, a in params)
    est = adapter.global_estimator({}, params, CLASSES, 64)
    assert est.predict(X[:5]).shape == (5,)


@pytest.mark.parametrize("name", ["logreg", "sgd", "mlp"])
def test_local_training_improves_on_the_start(name, digits):
    # Prepare
    X, y = digits
    adapter = get_model(name)
    start = adapter.initial_parameters({}, CLASSES, 64, seed=0)
    before = adapter.global_estimator({}, start, CLASSES, 64).score(X, y)
    # Execute
    model = LocalModel(name, {}, CLASSES, 64, seed=0).fit(X, y, global_arrays=start, epochs=3)
    # Assert
    assert model.train_metrics_["accuracy"] > before + 0.3


def test_binary_linear_models_use_one_row_of_weights():
    # Prepare / Execute
    shapes = dict(get_model("logreg").expected_shapes({}, [0, 1], 5))
    # Assert: scikit-learn stores (1, n_features) for two classes
    assert shapes == {"coef_": (1, 5), "intercept_": (1,)}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_fits_whole_and_round_trips_as_a_skops_blob(name, digits):
    # Prepare
    X, y = digits
    model = LocalModel(name, {"n_estimators": 5} if name in ("random_forest", "gradient_boosting") else {},
                       CLASSES, 64, seed=0).fit(X[:300], y[:300], whole_model=True)
    # Execute
    loaded = blobs.load_model(blobs.dump_model(model.estimator_))
    # Assert
    np.testing.assert_array_equal(loaded.predict(X[:50]), model.estimator_.predict(X[:50]))


def test_single_class_client_falls_back_instead_of_crashing(digits):
    # Prepare: gradient boosting cannot fit one class
    X, y = digits
    mask = y == 3
    # Execute
    model = LocalModel("gradient_boosting", {}, CLASSES, 64).fit(X[mask], y[mask], whole_model=True)
    # Assert
    assert set(model.estimator_.predict(X[:10])) == {3}


def test_knn_with_fewer_rows_than_neighbours(digits):
    # Prepare
    X, y = digits
    # Execute
    model = LocalModel("knn", {"n_neighbors": 50}, CLASSES, 64).fit(X[:10], y[:10])
    # Assert
    assert model.estimator_.n_neighbors == 10


def test_untrusted_blob_is_rejected(digits):
    # Prepare: a tree's skops file, checked against an empty allow-list
    from sklearn.tree import DecisionTreeClassifier

    X, y = digits
    blob = blobs.dump_model(DecisionTreeClassifier().fit(X[:50], y[:50]))
    # Execute / Assert
    with pytest.raises(ProtocolError) as info:
        blobs.load_model(blob, trusted=())
    assert info.value.code == "blob"


def test_garbage_blob_is_a_protocol_error():
    # Prepare / Execute / Assert
    with pytest.raises(ProtocolError):
        blobs.load_model(b"not a zip file at all")


def test_unknown_hyperparameter_is_refused_with_its_name():
    # Prepare / Execute / Assert
    with pytest.raises(ValueError, match="n_trees"):
        get_model("random_forest").check_params({"n_trees": 5})
    with pytest.raises(ValueError, match="unknown model"):
        get_model("xgboost")


def test_a_bad_hyperparameter_value_is_refused_before_any_fit():
    # Pins the one private scikit-learn call (validate_hyperparameters): a negative C must not reach a fit
    with pytest.raises(ValueError, match="bad parameter for model 'logreg'"):
        get_model("logreg").check_params({"C": -1.0})


def test_a_round_starts_from_the_global_weights_with_a_fresh_optimiser(digits):
    # Pins restart_optimizer: two clients that start a round from the same weights with the same data and
    # seed train identically, whatever their previous rounds left in the optimiser.
    X, y = digits
    adapter = get_model("mlp")
    start = adapter.initial_parameters({}, CLASSES, 64, seed=0)
    seasoned = LocalModel("mlp", {}, CLASSES, 64, seed=1).fit(X[:200], y[:200], global_arrays=start, epochs=3)
    fresh = LocalModel("mlp", {}, CLASSES, 64, seed=1)
    # Execute
    a = seasoned.fit(X[200:400], y[200:400], global_arrays=start, epochs=1).get_parameters()
    b = fresh.fit(X[200:400], y[200:400], global_arrays=start, epochs=1).get_parameters()
    # Assert
    for (name_a, arr_a), (name_b, arr_b) in zip(a, b):
        assert name_a == name_b
        np.testing.assert_allclose(arr_a, arr_b)


def test_a_fresh_network_is_a_copy_of_one_built_once_and_trains_as_a_newly_built_one(digits):
    # Pins MLPAdapter.fresh's templates: each call hands out its own copy, equal to a network built anew
    # (same weights, same random state), so training a copy changes neither the template nor a later copy.
    X, y = digits
    adapter = get_model("mlp")
    built = adapter._build_fresh({}, CLASSES, 64, 7)
    # Execute
    first = adapter.fresh({}, CLASSES, 64, 7)
    adapter.fit_local(first, {}, X[:200], y[:200], CLASSES, 64, None, 2, {}, 7)
    second = adapter.fresh({}, CLASSES, 64, 7)
    # Assert
    assert second is not first and second.coefs_[0] is not first.coefs_[0]
    for a, b in zip(built.coefs_ + built.intercepts_, second.coefs_ + second.intercepts_):
        np.testing.assert_array_equal(a, b)
    trained_new = adapter.fit_local(built, {}, X[:200], y[:200], CLASSES, 64, None, 2, {}, 7)
    trained_copy = adapter.fit_local(second, {}, X[:200], y[:200], CLASSES, 64, None, 2, {}, 7)
    for a, b in zip(trained_new.coefs_, trained_copy.coefs_):
        np.testing.assert_array_equal(a, b)


def test_adding_a_model_is_one_adapter():
    # Prepare: an adapter class that names itself is registered (then removed again)
    from sklearn.linear_model import RidgeClassifier

    from fl.learning.models import ModelAdapter

    class RidgeAdapter(ModelAdapter):
        name = "ridge_test"
        label = "Ridge (test)"

        def make(self, params, seed):
            return RidgeClassifier(**params)

    try:
        # Execute / Assert: the registry, the config's choices and the strategies that can serve it
        from fl.learning.strategies import strategies_for
        from fl.runs.config import RunConfig

        assert "ridge_test" in MODELS
        assert strategies_for(MODELS["ridge_test"]) == ["stacking", "voting"]
        RunConfig(model="ridge_test", aggregation="voting").validate()
    finally:
        del MODELS["ridge_test"]
