"""RunConfig validation messages and JSON round-trip."""

import pytest

from fl.runs.config import ConfigError, RunConfig


def test_json_round_trip_keeps_every_field():
    # Prepare
    config = RunConfig(dataset="digits", model="mlp", model_params={"hidden_layer_sizes": [32, 16]}, rounds=7,
                       partition="dirichlet", alpha=0.3, learning_rate=0.01, seed=9)
    # Execute
    again = RunConfig.from_json(config.to_json())
    # Assert
    assert again == config
    assert again.validate() is again


@pytest.mark.parametrize("changes, message", [
    ({"model": "xgboost"}, "choose one of: logreg"),
    ({"model": "random_forest"}, "use aggregation 'stacking' or 'voting'"),
    ({"aggregation": "fedprox"}, "choose one of"),
    ({"dataset": "mnist"}, "unknown dataset"),
    ({"dataset": "csv"}, "needs a file"),
    ({"clients": 0}, "clients must be between"),
    ({"rounds": 2.5}, "whole number"),
    ({"fraction": 0.0}, "fraction must be above 0"),
    ({"fraction": 1.5}, "fraction"),
    ({"min_clients": 9, "clients": 3}, "cannot exceed"),
    ({"alpha": -1.0}, "alpha"),
    ({"test_size": 0.95}, "test_size"),
    ({"aggregation": "stacking", "model": "knn", "val_size": 0.0}, "validation split"),
    ({"model": "logreg", "model_params": {"C": -1}}, "bad parameter"),
    ({"model_params": {"n_trees": 3}, "model": "random_forest", "aggregation": "voting"}, "n_trees"),
    ({"learning_rate": float("nan")}, "learning_rate"),
])
def test_bad_settings_say_what_to_fix(changes, message):
    # Prepare
    config = RunConfig(**changes)
    # Execute / Assert
    with pytest.raises(ConfigError, match=message):
        config.validate()


def test_unknown_keys_are_listed():
    # Prepare / Execute / Assert
    with pytest.raises(ConfigError, match="unknown config keys: colour"):
        RunConfig.from_dict({"colour": "blue"})
    with pytest.raises(ConfigError, match="not valid JSON"):
        RunConfig.from_json("{")


def test_ensembles_and_round_free_models_run_one_round():
    # Prepare / Execute / Assert
    assert RunConfig(model="knn", aggregation="voting", rounds=9).effective_rounds == 1
    assert RunConfig(model="gaussian_nb", rounds=9).effective_rounds == 1
    assert RunConfig(model="logreg", rounds=9).effective_rounds == 9
    assert RunConfig(aggregation="fedavg").effective_val_size == 0.0
    assert RunConfig(model="knn", aggregation="stacking").effective_val_size == 0.15


@pytest.mark.parametrize("aggregation", ["median", "trimmed_mean", "krum"])
def test_dp_with_a_rule_that_is_not_a_mean_is_refused(aggregation):
    # The noise sigma*C/m and the epsilon shown assume a mean of clipped updates; Krum returns one update
    # (sensitivity about 2C), median and trimmed mean are no mean either: refuse rather than show a false epsilon
    config = RunConfig(model="logreg", aggregation=aggregation, dp="server", clients=10)
    with pytest.raises(ConfigError, match="is not a mean"):
        config.validate()
    RunConfig(model="logreg", aggregation="fedavg", dp="server").validate()


def test_every_default_is_the_fields_own_and_the_fit_config_comes_from_the_knobs():
    # Prepare
    from fl.runs.knobs import default_of, knobs_of

    config = RunConfig(model="logreg", proximal_mu=0.1, learning_rate=0.05, local_epochs=3)
    # Execute / Assert
    assert config.fit_config() == {"local_epochs": 3, "learning_rate": 0.05, "proximal_mu": 0.1}
    assert RunConfig().fit_config() == {"local_epochs": 1}  # unset knobs are not sent
    assert all(getattr(RunConfig(), name) == default_of(RunConfig, name) for name in knobs_of(RunConfig))
    assert set(knobs_of(RunConfig)) == set(RunConfig().to_dict())  # every field is a knob
