"""Learning-rate schedules: the formula's value in every round, never the last round's rate compounded."""

from __future__ import annotations

import math

import pytest

from fl.federation.client import FederatedClient
from fl.learning.schedules import Schedule, parse_schedule
from fl.runs import simulation
from fl.runs.config import ConfigError, RunConfig


@pytest.mark.parametrize(("text", "expected"), [
    ("constant", Schedule("constant")),
    ("step:0.5:5", Schedule("step", 0.5, 5)),
    ("exponential:0.9", Schedule("exponential", 0.9, 1)),
    (" Cosine ", Schedule("cosine")),
])
def test_schedules_parse(text, expected):
    # Execute / Assert
    assert parse_schedule(text) == expected


@pytest.mark.parametrize("text", ["", "linear", "step:0.5", "step:0.5:0", "step:0.5:2.5", "step:x:2",
                                  "exponential", "exponential:0", "exponential:-1", "cosine:3", "constant:1"])
def test_bad_schedules_are_refused_with_a_sentence(text):
    # Execute / Assert
    with pytest.raises(ValueError, match=r"\w+ \w+"):
        parse_schedule(text)
    with pytest.raises(ConfigError):
        RunConfig(model="mlp", lr_schedule=text).validate()


def test_each_round_gets_exactly_the_formula_value():
    # Prepare: the formulas written out by hand (docs/protocol.md, fl/learning/schedules.py)
    lr0, total = 0.2, 12
    expected = {
        "step:0.5:5": [lr0 * 0.5 ** ((r - 1) // 5) for r in range(1, total + 1)],
        "exponential:0.9": [lr0 * 0.9 ** (r - 1) for r in range(1, total + 1)],
        "cosine": [lr0 * (1 + math.cos(math.pi * (r - 1) / total)) / 2 for r in range(1, total + 1)],
        "constant": [lr0] * total,
    }
    for text, values in expected.items():
        # Execute
        got = [parse_schedule(text).rate(lr0, r, total) for r in range(1, total + 1)]
        # Assert: equal to the last bit, so no rate was derived from the previous round's
        assert got == values, text
    assert parse_schedule("step:0.5:5").rate(lr0, 11, total) == lr0 / 4  # halved twice after 10 rounds


def test_the_clients_receive_the_scheduled_rate_in_every_fit(no_thread_leaks, monkeypatch):
    # Prepare: record the learning_rate of every fit a client receives over the socket
    received: dict[int, set[float]] = {}
    original = FederatedClient.handle_fit

    def recording(self, msg):
        received.setdefault(msg.round, set()).add(msg.config.get("learning_rate"))
        return original(self, msg)

    monkeypatch.setattr(FederatedClient, "handle_fit", recording)
    config = RunConfig(dataset="iris", clients=3, model="sgd", rounds=7, learning_rate=0.08,
                       lr_schedule="step:0.5:3", partition="iid", workers=0)
    # Execute
    result = simulation.start(config).wait(timeout=120)
    # Assert: every client got lr0 * 0.5 ** floor((r - 1) / 3) in round r, and the round record says so
    assert result is not None and result.status == "completed"
    for r in range(1, 8):
        assert received[r] == {0.08 * 0.5 ** ((r - 1) // 3)}
        assert result.rounds[r - 1]["learning_rate"] == 0.08 * 0.5 ** ((r - 1) // 3)


def test_without_a_given_rate_the_schedule_starts_from_the_models_own():
    # Prepare: the MLP's default learning_rate_init is 0.005
    config = RunConfig(model="mlp", rounds=10, lr_schedule="exponential:0.5")
    # Execute / Assert
    assert config.learning_rate_at(1) == 0.005
    assert config.learning_rate_at(3) == 0.005 * 0.25
    assert RunConfig(model="mlp", lr_schedule="constant").learning_rate_at(1) is None


def test_a_schedule_for_a_model_without_a_learning_rate_is_refused():
    # Execute / Assert: L-BFGS sizes its own steps (logistic regression's gd solver takes the server's)
    with pytest.raises(ConfigError, match="learning rate"):
        RunConfig(model="logreg", model_params={"local_solver": "lbfgs"}, lr_schedule="cosine").validate()
    with pytest.raises(ConfigError, match="learning rate"):
        RunConfig(model="gaussian_nb", lr_schedule="cosine").validate()
