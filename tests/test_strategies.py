"""Aggregation rules against hand-computed vectors and their defining properties."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_iris
from sklearn.naive_bayes import GaussianNB
from sklearn.tree import DecisionTreeClassifier

from fl.learning.aggregation import fedavg, stacking, voting
from fl.learning.models import get_model
from fl.learning.strategies import ExactMerge
from fl.runs.build import make_strategy
from fl.runs.config import RunConfig

NB = get_model("gaussian_nb")


def test_fedavg_weights_by_samples():
    # Prepare
    results = [([np.array([1.0, 2.0]), np.array([[0.0]])], 1), ([np.array([3.0, 6.0]), np.array([[4.0]])], 3)]
    # Execute
    merged = fedavg(results)
    # Assert: (1*1 + 3*3)/4 = 2.5, (2 + 18)/4 = 5, (0 + 12)/4 = 3
    np.testing.assert_allclose(merged[0], [2.5, 5.0])
    np.testing.assert_allclose(merged[1], [[3.0]])


def test_fedavg_does_not_mutate_inputs():
    # Prepare
    a = np.array([1.0, 1.0])
    results = [([a], 2), ([np.array([3.0, 3.0])], 2)]
    # Execute
    fedavg(results)
    # Assert
    np.testing.assert_array_equal(a, [1.0, 1.0])


def test_fedavg_rejects_empty_and_mismatched():
    # Prepare / Execute / Assert
    with pytest.raises(ValueError):
        fedavg([])
    with pytest.raises(ValueError):
        fedavg([([np.zeros(2)], 1), ([np.zeros(3)], 1)])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.floats(-1e3, 1e3), st.integers(1, 100)), min_size=1, max_size=8), st.randoms())
def test_fedavg_is_permutation_invariant_and_within_range(items, rnd):
    # Prepare
    results = [([np.array([v])], n) for v, n in items]
    shuffled = list(results)
    rnd.shuffle(shuffled)
    # Execute
    a, b = fedavg(results)[0], fedavg(shuffled)[0]
    # Assert
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)
    values = [v for v, _ in items]
    assert min(values) - 1e-9 <= a[0] <= max(values) + 1e-9


def test_fedavg_identical_inputs_give_the_input_back():
    # Prepare
    w = [np.arange(6.0).reshape(2, 3), np.array([0.5])]
    # Execute
    merged = fedavg([(w, 5), (w, 7), (w, 1)])
    # Assert
    for got, want in zip(merged, w):
        np.testing.assert_allclose(got, want)


def test_gaussian_nb_merge_equals_pooled_fit():
    # Prepare: three clients, one of them missing class 2 entirely
    X, y = load_iris(return_X_y=True)
    classes = np.unique(y)
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(y))
    parts = [idx[:50], idx[50:100], idx[100:]]
    parts[0] = parts[0][y[parts[0]] != 2]
    results = []
    for p in parts:
        est = GaussianNB().partial_fit(X[p], y[p], classes=classes)
        results.append(([a for _, a in NB.get_parameters(est)], len(p)))
    pooled_idx = np.concatenate(parts)
    pooled = GaussianNB().fit(X[pooled_idx], y[pooled_idx])
    # Execute
    merged = NB.merge(results)
    model = NB.global_estimator({}, list(zip(["theta_", "var_", "class_count_"], merged)), classes, 4)
    # Assert: identical statistics and predictions to training on the pooled data
    np.testing.assert_allclose(model.theta_, pooled.theta_, rtol=1e-10)
    np.testing.assert_allclose(model.var_, pooled.var_, rtol=1e-8)
    np.testing.assert_allclose(model.class_count_, pooled.class_count_)
    np.testing.assert_array_equal(model.predict(X), pooled.predict(X))


def test_gaussian_nb_runs_its_exact_merge_not_an_average():
    # Prepare
    theta = np.array([[0.0], [2.0]])
    results = [([theta, np.zeros((2, 1)), np.array([1.0, 0.0])], 1),
               ([theta + 2, np.zeros((2, 1)), np.array([1.0, 3.0])], 4)]
    strategy = make_strategy(RunConfig(model="gaussian_nb", aggregation="fedavg"))
    # Execute
    merged = strategy.aggregate(results, None)
    # Assert: class 0 mean of 0 and 2 -> 1 with variance 1; class 1 only from client 2
    assert isinstance(strategy, ExactMerge)
    np.testing.assert_allclose(merged[0], [[1.0], [4.0]])
    np.testing.assert_allclose(merged[1], [[1.0], [0.0]])
    np.testing.assert_allclose(merged[2], [2.0, 3.0])


def test_voting_and_stacking_return_real_estimators_over_global_classes():
    # Prepare: two trees, each trained on data lacking one class
    X, y = load_iris(return_X_y=True)
    classes = [0, 1, 2]
    m1 = DecisionTreeClassifier(random_state=0).fit(X[y != 2], y[y != 2])
    m2 = DecisionTreeClassifier(random_state=0).fit(X[y != 0], y[y != 0])
    # Execute
    vote = voting([m1, m2], [100, 100], classes)
    stack = stacking([m1, m2], classes, X[::2], y[::2])
    # Assert
    for model in (vote, stack):
        proba = model.predict_proba(X)
        assert proba.shape == (150, 3)
        np.testing.assert_allclose(proba.sum(axis=1), 1.0)
        assert set(model.predict(X)) <= set(classes)
    assert (stack.predict(X) == y).mean() > 0.9


def test_adding_a_rule_is_one_class(tmp_path):
    # Prepare: a rule with no parameter (the coordinate-wise maximum, a bad idea but a valid rule), one class
    from fl.learning.strategies import STRATEGIES, ParameterStrategy
    from fl.runs import simulation
    from fl.cli.main import build_parser

    class CoordinateMax(ParameterStrategy):
        name = "coordinate_max_test"
        label = "Coordinate-wise maximum (test)"

        def aggregate(self, results, current):
            return [np.max(np.stack([arrays[i] for arrays, _ in results]), axis=0) for i in range(len(results[0][0]))]

    try:
        # Execute: offered by the CLI, accepted by the config, run end to end
        parser_help = build_parser()._subparsers._group_actions[0].choices["simulate"].format_help()
        config = RunConfig(dataset="iris", clients=3, rounds=2, model="logreg", aggregation="coordinate_max_test",
                           partition="iid")
        result = simulation.run(config)
        # Assert
        assert "coordinate_max_test" in parser_help
        assert result.status == "completed" and len(result.rounds) == 2
    finally:
        del STRATEGIES["coordinate_max_test"]
