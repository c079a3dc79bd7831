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


def test_client_figure_draws_a_percentile_band_for_many_clients():
    # Prepare: 30 clients over 2 rounds, client i scoring i/30
    rows = [{"round": r, "client_id": f"c{i:02d}", "eval_accuracy": i / 30, "status": "ok"}
            for r in (1, 2) for i in range(30)]
    # Execute
    fig = charts.client_metric_figure(rows, "eval_accuracy")
    # Assert: a band (90th, 10th), the median and the worst client instead of 30 lines
    names = [t.name for t in fig.data]
    assert len(fig.data) == 4 and "median client" in names and "worst client" in names
    worst = next(t for t in fig.data if t.name == "worst client")
    assert list(worst.y) == [0.0, 0.0]


def test_few_clients_get_one_line_each_and_axes_say_what_they_mean():
    # Prepare
    rows = [{"round": 1, "client_id": f"c{i}", "eval_accuracy": 0.0, "status": "ok"} for i in range(3)]
    # Execute
    fig = charts.client_metric_figure(rows, "eval_accuracy", total_rounds=12)
    # Assert: an accuracy of 0 sits on a 0..100 % axis, round ticks are whole numbers
    assert len(fig.data) == 3
    assert list(fig.layout.yaxis.range) == [0.0, 1.02]
    assert fig.layout.xaxis.tickformat == "d" and fig.layout.xaxis.dtick == 2


def test_accuracy_axis_never_magnifies_a_one_point_change():
    # Prepare / Execute / Assert
    assert charts.accuracy_range([0.99, 1.0]) == [0.8, 1.02]
    assert charts.accuracy_range([0.36, 0.96]) == [0.3, 1.02]
    assert charts.accuracy_range([]) == [0.0, 1.02]


def test_heatmap_colours_start_at_zero():
    # Prepare / Execute
    fig = charts.label_heatmap([[40, 41], [42, 40]], ["a", "b"], [0, 1])
    # Assert
    assert fig.data[0].zmin == 0


def test_numbers_are_rounded_for_people():
    assert pct(0.93125) == "93.1%" and pct(None) == "–"
    assert size(2048) == "2.0 KB" and size(12) == "12 B"
