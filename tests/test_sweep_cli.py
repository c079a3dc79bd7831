"""``python -m fl sweep`` as users run it: a line per finished run, the cells table, the CSV paths, exit codes."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pandas as pd
import pytest

from fl.cli.main import build_parser, main
from fl.cli.sweep import spec_from_args
from tests.test_cli import ENV, ROOT


def test_a_sweep_prints_a_line_per_run_then_the_cells_and_their_files(tmp_path):
    # Prepare / Execute: through a pipe, not a terminal
    proc = subprocess.run(
        [sys.executable, "-m", "fl", "sweep", "--dataset", "iris", "--model", "logreg", "--clients", "3",
         "--rounds", "2", "--partition", "iid", "--grid", "aggregation=fedavg,median", "--seeds", "2",
         "--parallel", "2", "--runs-dir", str(tmp_path)],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=180)
    # Assert
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert re.match(r"sweep \S+: 2 cells x 2 seeds = 4 runs, 2 at a time$", lines[0])
    progress = [line for line in lines if line.startswith("[")]
    assert [re.search(r"\] (\d)/4 ", line).group(1) for line in progress] == ["1", "2", "3", "4"]
    assert all(": completed  accuracy " in line for line in progress)
    assert progress[-1].startswith("[" + "#" * 20 + "]")
    assert "completed: 4 of 4 runs completed" in proc.stdout
    summary_path = tmp_path / "sweeps" / lines[0].split()[1].rstrip(":") / "summary.csv"
    assert f"summary: {summary_path}" in proc.stdout
    assert f"cells:   {summary_path.with_name('cells.csv')}" in proc.stdout
    cells = pd.read_csv(summary_path.with_name("cells.csv"))
    assert list(cells["aggregation"]) == ["fedavg", "median"] and list(cells["n_seeds"]) == [2, 2]
    for aggregation, mean in zip(cells["aggregation"], cells["final_accuracy_mean"]):
        row = next(line for line in lines if line.lstrip().startswith(aggregation + " "))
        assert f"{mean:.4f} ± " in row
    assert len(pd.read_csv(summary_path)) == 4


def test_grid_flags_override_the_grid_files_keys_and_seeds(tmp_path):
    # Prepare
    grid_file = tmp_path / "grid.toml"
    grid_file.write_text('seeds = 5\n[grid]\naggregation = ["fedavg", "median"]\nalpha = [0.1, 10]\n')
    args = build_parser().parse_args(["sweep", "--dataset", "iris", "--model", "logreg", "--clients", "3",
                                      "--grid-file", str(grid_file), "--grid", "alpha=0.5", "--seeds", "2"])
    # Execute
    spec = spec_from_args(args)
    # Assert
    assert spec.grid == {"aggregation": ["fedavg", "median"], "alpha": [0.5]}
    assert spec.seeds == 2 and spec.base.dataset == "iris" and spec.base.clients == 3


@pytest.mark.parametrize("argv, needle", [
    (["--grid", "alpah=0.1"], "did you mean alpha?"),
    (["--grid", "alpha=0.1,-1"], "alpha=-1 is refused"),
    (["--grid", "rounds=many"], "rounds=many is refused"),
    (["--grid", "aggregation"], "KEY=V1,V2"),
    (["--grid", "model=logreg,random_forest"], "the grid cell model=random_forest cannot run"),
    (["--grid-file", "/nonexistent/grid.json"], "cannot read the grid file"),
    (["--seeds", "0"], "seeds must be a whole number from 1"),
    (["--parallel", "0"], "--parallel must be at least 1"),
    (["--rounds", "0"], "rounds"),
    (["--seeds", "two"], "invalid int value"),
])
def test_bad_sweep_arguments_exit_2_with_one_line(argv, needle, capsys, tmp_path):
    # Execute
    code = main(["sweep", "--dataset", "iris", "--runs-dir", str(tmp_path), *argv])
    # Assert: nothing ran, nothing was written
    assert code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], lines
    assert not (tmp_path / "sweeps").exists()


def test_a_grid_file_with_unknown_keys_or_bad_json_is_refused(tmp_path, capsys):
    # Prepare
    bad = tmp_path / "grid.json"
    bad.write_text(json.dumps({"grid": {"alpha": [0.1]}, "seed": 3}))
    # Execute
    code = main(["sweep", "--grid-file", str(bad), "--runs-dir", str(tmp_path)])
    # Assert
    assert code == 2 and "unknown keys seed" in capsys.readouterr().err
    bad.write_text("{oops")
    assert main(["sweep", "--grid-file", str(bad)]) == 2
    assert "is not valid JSON" in capsys.readouterr().err


def test_sweep_help_lists_the_grid_flags_and_every_simulate_flag(capsys):
    # Execute
    with pytest.raises(SystemExit) as done:
        main(["sweep", "--help"])
    text = capsys.readouterr().out
    # Assert
    assert done.value.code == 0
    for flag in ("--grid KEY=V1,V2,...", "--grid-file", "--seeds", "--parallel", "--runs-dir", "--aggregation",
                 "--alpha", "--malicious-clients", "--dp"):
        assert flag in text
