"""Round 1 is drawn when it ends, not at the page's next poll (issue 21).

RunState.wait_for_rounds wakes a waiting page the moment a round is
recorded or the run ends; ui.live.await_first_round waits with it, within a
bound, redrawing the progress meanwhile.
"""

import threading
import time
from types import SimpleNamespace

from fl.federation.events import EventType, make_event
from fl.runs.config import RunConfig
from fl.runs.live_run import RunState
from ui import live

IDS = ["client_000", "client_001"]


def _state() -> RunState:
    return RunState("r", RunConfig(dataset="iris", clients=2, rounds=3), IDS, {})


def test_a_waiting_page_wakes_when_round_one_is_recorded_not_when_its_wait_runs_out():
    # Prepare: round 1 ends 0.1 s into a wait of up to 10 s
    state = _state()
    timer = threading.Timer(0.1, state.apply, args=(make_event(EventType.ROUND, round=1, accuracy=0.5),))
    # Execute
    began = time.monotonic()
    timer.start()
    woke = state.wait_for_rounds(1, timeout=10.0)
    waited = time.monotonic() - began
    timer.join()
    # Assert
    assert woke is True
    assert waited < 5.0
    assert len(state.snapshot()["rounds"]) == 1


def test_a_wait_ends_false_on_time_and_true_once_the_run_is_over_without_a_round():
    # Prepare
    state = _state()
    # Execute / Assert: nothing happened
    assert state.wait_for_rounds(1, timeout=0.05) is False
    # Execute / Assert: a run that ends before round 1 (stopped, failed) does not keep a page waiting
    state.apply(make_event(EventType.DONE, status="stopped"))
    assert state.wait_for_rounds(1, timeout=10.0) is True


class _Slot:
    """Stands in for st.empty(): counts the progress redraws made into it."""

    def __init__(self) -> None:
        self.entered = 0

    def __enter__(self) -> "_Slot":
        self.entered += 1
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _handle(state: RunState) -> SimpleNamespace:
    return SimpleNamespace(state=state, done=False, snapshot=state.snapshot)


def test_the_first_draw_returns_round_one_as_soon_as_it_is_recorded(monkeypatch):
    # Prepare: a run whose round 1 ends 0.2 s after the page began to wait
    monkeypatch.setattr(live, "progress", lambda snap: None)
    state = _state()
    timer = threading.Timer(0.2, state.apply, args=(make_event(EventType.ROUND, round=1, accuracy=0.5),))
    slot = _Slot()
    # Execute
    timer.start()
    snap = live.await_first_round(_handle(state), state.snapshot(), True, slot)
    timer.join()
    # Assert: the draw that follows has round 1, and the progress was redrawn while waiting
    assert [r["round"] for r in snap["rounds"]] == [1]
    assert slot.entered >= 1


def test_the_wait_for_round_one_is_bounded(monkeypatch):
    # Prepare: round 1 never ends (clients still joining)
    monkeypatch.setattr(live, "progress", lambda snap: None)
    monkeypatch.setattr(live, "FIRST_ROUND_WAIT_S", 0.3)
    monkeypatch.setattr(live, "WAIT_TICK_S", 0.05)
    state = _state()
    slot = _Slot()
    # Execute
    began = time.monotonic()
    snap = live.await_first_round(_handle(state), state.snapshot(), True, slot)
    waited = time.monotonic() - began
    # Assert: back within the bound (plus scheduling), drawing what there is; a redraw every tick
    assert snap["rounds"] == []
    assert 0.25 <= waited < 3.0
    assert slot.entered >= 3
