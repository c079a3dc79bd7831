"""The Run page before Start, for a CSV with a row number: the column is excluded, said so, and can be kept."""

from __future__ import annotations

import numpy as np

from tests.apptest_helpers import new_app, texts


def _indexed_csv(path) -> str:
    """A row number first (as pandas' to_csv(index=True) writes it), a file sorted by label, a leak-free feature."""
    rng = np.random.default_rng(0)
    rows = "".join(f"{i},{rng.normal():.4f},{'a' if i <= 30 else 'b'}\n" for i in range(1, 61))
    path.write_text("row,x,label\n" + rows)
    return str(path)


def test_an_excluded_row_number_is_shown_before_start_and_can_be_kept(app_env, tmp_path):
    # Prepare
    at = new_app()
    at.session_state["cfg_csv_path"] = _indexed_csv(tmp_path / "sorted.csv")
    at.sidebar.selectbox(key="cfg_dataset").set_value("csv").run()
    at.sidebar.selectbox(key="cfg_target").set_value("label").run()

    # Execute: the default, then keep the row number
    before = texts(at.info)
    table = at.dataframe[0].value
    at.sidebar.multiselect(key="cfg_keep_columns").set_value(["row"]).run()

    # Assert
    assert not at.exception
    assert "excluded column 'row' (a row number: 1 to 60 in steps of 1, one per row)" in before
    assert table.loc[table["Column"] == "row", "Type"].item() == "excluded"
    assert "kept on request column 'row'" in texts(at.info)
    assert "'row' alone predicts the label for 100.0% of the rows" in texts(at.warning)  # the leak, flagged
    assert "LIKELY LEAK" in at.dataframe[0].value.loc[0, "What the run does"]
    assert at.session_state["draft_config"]["keep_columns"] == "row"  # what Start would run with
