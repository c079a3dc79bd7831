"""Server optimisers against the update rules of Reddi et al. (2021), by hand."""

import numpy as np
import pytest

from fl.learning.server_opt import FedAdagrad, FedAdam, FedAvgM, FedYogi, ServerOptimizer, make_server_optimizer

X = [np.array([1.0, -2.0])]
A = [np.array([3.0, -2.0])]  # aggregate: delta = [2, 0]


def test_plain_step_returns_the_aggregate():
    np.testing.assert_allclose(ServerOptimizer().step(X, A)[0], A[0])


def test_fedavgm_accumulates_momentum():
    # Prepare
    opt = FedAvgM(server_lr=0.5, momentum=0.9)
    # Execute: two steps with the same delta [2, 0]
    x1 = opt.step(X, A)
    x2 = opt.step(x1, [x1[0] + np.array([2.0, 0.0])])
    # Assert: v1 = 2 -> x1 = 1 + 1 = 2; v2 = 0.9*2 + 2 = 3.8 -> x2 = 2 + 1.9 = 3.9
    np.testing.assert_allclose(x1[0], [2.0, -2.0])
    np.testing.assert_allclose(x2[0], [3.9, -2.0])


def test_fedadagrad_by_hand():
    # v = 4 -> x = 1 + 0.1 * 2 / (2 + tau) = 1.1
    out = FedAdagrad(eta=0.1, tau=1e-9).step(X, A)[0]
    np.testing.assert_allclose(out, [1.1, -2.0], atol=1e-8)


def test_fedadam_by_hand():
    # m = 0.1*2 = 0.2; v = 0.01*4 = 0.04; x = 1 + 0.1 * 0.2 / (0.2 + tau) = 1.1
    out = FedAdam(eta=0.1, beta1=0.9, beta2=0.99, tau=1e-9).step(X, A)[0]
    np.testing.assert_allclose(out, [1.1, -2.0], atol=1e-7)


def test_fedyogi_by_hand():
    # v0 = 0: v = 0 - 0.01*4*sign(0-4) = 0.04; m = 0.2; x = 1 + 0.01 * 0.2 / (0.2 + 0.001)
    out = FedYogi(eta=0.01, beta1=0.9, beta2=0.99, tau=1e-3).step(X, A)[0]
    np.testing.assert_allclose(out, [1.0 + 0.002 / 0.201, -2.0])


@pytest.mark.parametrize("name", ["fedavgm", "fedadagrad", "fedadam", "fedyogi"])
def test_zero_pseudo_gradient_keeps_the_weights(name):
    # Prepare
    opt = make_server_optimizer(name)
    # Execute
    out = opt.step(X, [X[0].copy()])
    # Assert
    np.testing.assert_allclose(out[0], X[0])


def test_inputs_are_not_mutated_and_unknown_names_refused():
    x = [np.array([1.0])]
    FedAdam().step(x, [np.array([2.0])])
    assert x[0][0] == 1.0
    with pytest.raises(ValueError, match="unknown server optimiser"):
        make_server_optimizer("sgd")
