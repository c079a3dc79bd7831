"""The engine's layers hold: runs on federation on learning / data / wire, and no Streamlit in fl/.

The contracts live in .importlinter; these tests run import-linter's own
command on them (in a subprocess, as CI or a developer would) and fail on
any broken one, and show that a broken layer would be caught.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = [sys.executable, "-c", ("import sys; from importlinter.cli import lint_imports_command; "
                               "sys.exit(lint_imports_command())"), "--config", str(ROOT / ".importlinter"),
        "--no-cache"]


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run(LINT, check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_import_contracts_are_kept():
    # Prepare / Execute
    done = _lint(ROOT)
    # Assert
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 kept, 0 broken" in done.stdout


def test_a_broken_layer_would_be_caught(tmp_path):
    # Prepare: a copy of the engine where the wire layer imports the run layer
    shutil.copytree(ROOT / "fl", tmp_path / "fl")
    shutil.copytree(ROOT / "ui", tmp_path / "ui")
    (tmp_path / "fl" / "wire" / "cheat.py").write_text("from fl.runs.config import RunConfig\n")
    # Execute
    done = _lint(tmp_path)
    # Assert
    assert done.returncode != 0
    assert "fl.wire.cheat -> fl.runs.config" in done.stdout


def test_no_source_file_is_ignored_by_git():
    # Prepare: every Python file of the project (a clean clone has only what git tracks)
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    sources = [str(p.relative_to(ROOT)) for folder in ("fl", "ui", "app_pages", "bench", "tests")
               for p in (ROOT / folder).rglob("*.py")] + ["app.py", "server_new.py", "client_new.py"]
    # Execute: git names the ones an ignore rule would leave out of a commit
    done = subprocess.run(["git", "check-ignore", "--no-index", *sources], check=False, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    # Assert
    assert done.stdout.strip() == "", f"ignored by .gitignore, so missing from a clean clone:\n{done.stdout}"
