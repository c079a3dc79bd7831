"""The live view's tables: drawn on request while the run goes, always once it ends (ui/live.py tables_block)."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from ui import live


def _tables_app(done: bool) -> None:
    """The tables block of a run two rounds in, with a client whose id markdown would mangle."""
    import time  # noqa: PLC0415 (AppTest.from_function runs this body alone)

    from ui import live  # noqa: PLC0415

    now = time.time()
    rounds = [{"type": "round", "round": r, "t": now + r, "accuracy": 0.5 + r / 10, "loss": 1.0 / r,
               "f1_macro": 0.5, "n_fit_clients": 2, "n_failures": 0, "duration_s": 0.1, "bytes_sent": 2048,
               "bytes_received": 1024} for r in (1, 2)]
    events = [{"type": "join", "t": now, "client_id": "site_a_1"}, rounds[0],
              {"type": "failure", "t": now + 1.5, "client_id": "site_b_2", "round": 2,
               "reason": "timed out after 60 s" + " (waiting for its answer)" * 20},
              {"type": "client_result", "t": now + 1.8, "client_id": "site_a_1", "round": 2, "status": "ok"},
              rounds[1]]
    live.tables_block({"rounds": rounds, "events": events}, key="t", done=done)


def test_while_the_run_goes_the_tables_wait_to_be_asked_for_and_the_newest_events_show_as_text():
    # Prepare
    at = AppTest.from_function(_tables_app, kwargs={"done": False})
    # Execute
    at.run()
    # Assert: no tables, the newest events as plain text (newest first), and a switch for the tables
    assert not at.exception
    assert len(at.dataframe) == 0
    lines = at.text[0].value.splitlines()
    assert len(lines) == 3 and lines[0].split("  ", 1)[1].startswith("round 2")
    assert lines[1].split("  ", 1)[1].startswith("site_a_1: round 2")  # a sentence without the id is led by it
    assert lines[2].split("  ", 1)[1].startswith("round 2: site_b_2 failed: timed out")  # the id as it is
    assert len(lines[2].split("  ", 1)[1]) == live.EVENT_LINE_CHARS and lines[2].endswith("…")  # a long one, cut
    assert at.toggle(key="t-tables").value is False


def test_the_tables_come_live_when_asked_for_and_always_once_the_run_ends():
    # Prepare
    asked = AppTest.from_function(_tables_app, kwargs={"done": False})
    asked.run()
    ended = AppTest.from_function(_tables_app, kwargs={"done": True})
    # Execute
    asked.toggle(key="t-tables").set_value(True).run()
    ended.run()
    # Assert: both tables, the metrics with both rounds; no switch once the run ended
    for at in (asked, ended):
        assert not at.exception
        assert len(at.dataframe) == 2
        assert list(at.dataframe[0].value["Round"]) == [1, 2]
        assert len(at.text) == 0
    assert len(ended.toggle) == 0
