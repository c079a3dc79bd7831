"""Drift said in words (issue 17): a run that falls well below its best round is told so, with remedies."""

from __future__ import annotations

from fl.runs.drift import drift_sentence, find_drift, remedies


def rounds(*accuracies, worst=None):
    return [{"round": i + 1, "accuracy": a, "worst_client_accuracy": (worst or {}).get(i + 1)}
            for i, a in enumerate(accuracies)]


def test_a_fall_of_more_than_two_points_is_drift_and_less_is_not() -> None:
    assert find_drift(rounds(0.80, 0.95, 0.90)) is not None
    assert find_drift(rounds(0.80, 0.95, 0.935)) is None
    assert find_drift(rounds(0.80, 0.95)) is None
    assert find_drift(rounds(0.9)) is None


def test_the_sentence_names_the_best_round_the_fall_the_worst_client_and_the_remedies() -> None:
    # Prepare: the penguin run under the former L-BFGS local epoch
    config = {"model": "logreg", "aggregation": "fedavg", "local_epochs": 1, "model_params": {"local_solver": "lbfgs"}}
    history = rounds(0.928, 0.942, 0.971, 0.957, 0.884, 0.783, worst={3: 0.9, 6: 0.5})
    # Execute
    text = drift_sentence(history, config)
    # Assert
    assert "from 97.1 % in round 3 to 78.3 % in round 6, 18.8 points below its best" in text
    assert "worst client went from 90.0 % to 50.0 %" in text
    assert "FedProx" in text and "SCAFFOLD" in text and "gd local solver" in text
    assert "--" not in text  # page words, no flags


def test_boosted_trees_that_fall_are_told_of_overfitting_not_client_drift() -> None:
    text = drift_sentence(rounds(0.80, 0.85, 0.82), {"model": "hist_gbdt", "aggregation": "histograms"})
    assert "overfitting" in text and "fewer rounds" in text and "client drift" not in text


def test_remedies_leave_out_what_the_run_already_does() -> None:
    assert remedies({"model": "mlp", "aggregation": "scaffold", "local_epochs": 5}) == \
        ["fewer local epochs", "a smaller learning rate"]
    assert "FedProx" not in remedies({"model": "sgd", "aggregation": "fedavg", "proximal_mu": 0.1})
    assert remedies({"model": "random_forest", "aggregation": "stacking"}) == []


def test_the_cli_says_it_on_stderr_and_on_its_last_line(capsys) -> None:
    from types import SimpleNamespace

    from fl.cli.outcome import wait_and_finish as _wait_and_finish
    from fl.runs.config import RunConfig

    # Prepare: a finished run whose accuracy fell from 0.95 to 0.80
    result = SimpleNamespace(status="completed", rounds=rounds(0.7, 0.95, 0.8),
                             final_metrics={"accuracy": 0.8, "loss": 0.5, "f1_macro": 0.79}, error=None)
    handle = SimpleNamespace(wait=lambda *a: result, result=result, baselines_thread=None,
                             config=RunConfig(model="mlp"), kind="hosted")
    # Execute
    code = _wait_and_finish(handle)
    out, err = capsys.readouterr()
    # Assert
    assert code == 0
    assert out.strip().splitlines()[-1].endswith("(drift: 15.0 points below round 2's 0.9500)")
    assert "drift: Accuracy fell from 95.0 % in round 2 to 80.0 % in round 3" in err
