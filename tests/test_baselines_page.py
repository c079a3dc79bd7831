"""What the Run page says about the baselines: the banner against the majority class, reasons instead of dashes."""

from __future__ import annotations

import pytest

from ui import charts, live


class Recorder:
    """Stands in for ``streamlit`` in ui.live: records what would be drawn."""

    def __init__(self):
        self.calls: list[tuple[str, str, dict]] = []

    def __getattr__(self, kind):
        def draw(text="", *args, **kwargs):
            self.calls.append((kind, str(text), kwargs))
        return draw

    def columns(self, spec):
        return [self] * (spec if isinstance(spec, int) else len(spec))

    def texts(self, kind: str) -> list[str]:
        return [text for k, text, _ in self.calls if k == kind]


@pytest.fixture
def page(monkeypatch):
    recorder = Recorder()
    monkeypatch.setattr(live, "st", recorder)
    return recorder


def _snap(accuracy: float, baselines: dict | None, status: str = "completed") -> dict:
    return {"status": status, "final_metrics": {"accuracy": accuracy, "loss": 0.4, "f1_macro": 0.45},
            "started_at": 0.0, "finished_at": 3.0, "rounds": [{"round": 1, "accuracy": accuracy}],
            "n_classes": 2, "baselines": baselines, "baselines_status": "ready", "kind": "simulation",
            "clients": {}, "config": {}}


MAJORITY = {"accuracy": 0.869, "loss": 0.39, "f1_macro": 0.465, "class": "no"}


@pytest.mark.parametrize("accuracy", [0.826, 0.869])
def test_a_model_at_or_below_the_majority_class_finishes_with_a_warning(page, accuracy):
    # Prepare: the trial CSV's run (82.6 %), and one exactly at the majority class
    snap = _snap(accuracy, {"majority": MAJORITY})
    # Execute
    live.final_summary(snap)
    # Assert: no green banner; a warning with both numbers and the class
    assert page.texts("success") == []
    (warning,) = page.texts("warning")
    assert "no better than always answering the majority class 'no'" in warning
    assert f"{100 * accuracy:.1f}%" in warning and "86.9%" in warning


def test_a_model_above_the_majority_class_finishes_in_green(page):
    # Prepare / Execute
    live.final_summary(_snap(0.90, {"majority": MAJORITY}))
    # Assert
    assert len(page.texts("success")) == 1 and page.texts("warning") == []


def test_without_a_majority_baseline_the_floor_is_one_over_the_classes(page):
    # Prepare: a hosted run (no baselines), two classes: 51 % is chance, 80 % is not
    live.final_summary(_snap(0.51, None))
    live.final_summary(_snap(0.80, None))
    # Assert
    assert len(page.texts("warning")) == 1 and "did not learn" in page.texts("warning")[0]
    assert len(page.texts("success")) == 1


def test_the_headline_shows_the_majority_class_and_why_a_baseline_is_missing(page):
    # Prepare: centralized failed, one client left out of local-only
    baselines = {"centralized": {"accuracy": None, "loss": None, "f1_macro": None, "reason": "out of memory"},
                 "local_only": {"accuracy": 0.61, "per_client": {"a": 0.61}, "left_out": {"b": "no training rows"},
                                "n_clients": 1, "clients_total": 2},
                 "majority": MAJORITY}
    # Execute
    live.headline(_snap(0.9, baselines))
    # Assert: three baseline metrics, the missing one with its reason as help and as a caption
    helps = {text: kwargs.get("help") or "" for kind, text, kwargs in page.calls if kind == "metric"}
    assert {"Centralized", "Local only (mean)", "Majority class"} <= set(helps)
    assert "out of memory" in helps["Centralized"]
    assert "1 of 2 clients" in helps["Local only (mean)"] and "class 'no'" in helps["Majority class"]
    captions = " ".join(page.texts("caption"))
    assert "Centralized: could not be computed (out of memory)" in captions
    assert "b (no training rows)" in captions
    assert not any("--" in text for _, text, _ in page.calls)  # page words, no flag names


def test_the_accuracy_chart_draws_the_majority_class_line():
    # Prepare
    rounds = [{"round": r, "accuracy": 0.8, "loss": 0.5} for r in (1, 2)]
    baselines = {"centralized": {"accuracy": 0.95}, "local_only": {"accuracy": None, "reason": "x"},
                 "majority": MAJORITY}
    # Execute
    fig = charts.global_metric_figure(rounds, "accuracy", baselines, total_rounds=2)
    # Assert: centralized and majority lines; the missing local-only one is not drawn
    assert len(fig.layout.shapes) == 2
    assert any(a.text == "Majority class 86.9%" for a in fig.layout.annotations)
