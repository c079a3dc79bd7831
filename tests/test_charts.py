"""Figure builders: pure functions of run data."""

from ui import charts
from ui.format import pct, size

ROUNDS = [{"round": r, "accuracy": 0.5 + r / 10, "loss": 1.0 / r, "f1_macro": 0.5, "n_fit_clients": 3,
           "n_failures": 0, "duration_s": 0.1, "bytes_sent": 2048, "bytes_received": 1024} for r in (1, 2, 3)]
BASELINES = {"centralized": {"accuracy": 0.95, "loss": 0.2}, "local_only": {"accuracy": 0.7, "loss": 40.0}}


def test_global_figure_has_curve_and_reference_lines():
    # Prepare / Execute
    fig = charts.global_metric_figure(ROUNDS, "accuracy", BASELINES, total_rounds=10)
    # Assert
    assert list(fig.data[0].y) == [0.6, 0.7, 0.8]
    assert len(fig.layout.shapes) == 2  # centralized and local-only lines
    assert fig.layout.xaxis.range == (0.5, 10.5)


def test_loss_baseline_far_above_the_curve_becomes_a_note():
    # Prepare / Execute
    fig = charts.global_metric_figure(ROUNDS, "loss", BASELINES)
    # Assert: the centralized line is drawn, the local-only one is named above the chart
    assert len(fig.layout.shapes) == 1
    assert any("above the chart" in a.text for a in fig.layout.annotations)


def test_missing_values_and_empty_inputs_do_not_break_figures():
    # Prepare
    rounds = [{"round": 1, "accuracy": None, "loss": float("nan")}]
    # Execute / Assert
    assert charts.global_metric_figure(rounds, "loss", None).data[0].y == (None,)
    assert len(charts.client_metric_figure([]).data) == 0
    assert charts.metrics_table([]).empty
    assert charts.events_table([{"type": "round", "t": 0, "round": 1, "accuracy": None}]).shape[0] == 1


def test_client_figure_hides_legend_for_many_clients():
    # Prepare
    rows = [{"round": 1, "client_id": f"c{i}", "train_accuracy": 0.5, "status": "ok"} for i in range(30)]
    # Execute
    fig = charts.client_metric_figure(rows)
    # Assert
    assert len(fig.data) == 30 and fig.layout.showlegend is False


def test_numbers_are_rounded_for_people():
    assert pct(0.93125) == "93.1%" and pct(None) == "–"
    assert size(2048) == "2.0 KB" and size(12) == "12 B"
