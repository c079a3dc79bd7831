"""The engine's layers hold: cli on runs on federation on learning / data / wire, and no Streamlit in fl/;
pages reach only the run layer; no module imports itself in a loop.

The contracts live in .importlinter; these tests run import-linter's own
command on them (in a subprocess, as CI or a developer would) and fail on
any broken one, and show that a broken layer would be caught. A last test
looks for import circles between any two modules of the project (grimp's
graph, the one import-linter reads), at every depth.
"""

from __future__ import annotations

import configparser
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
    assert "7 kept, 0 broken" in done.stdout


def test_a_broken_layer_would_be_caught(tmp_path):
    # Prepare: a copy of the engine where the wire layer imports the run layer
    shutil.copytree(ROOT / "fl", tmp_path / "fl")
    shutil.copytree(ROOT / "ui", tmp_path / "ui")
    shutil.copytree(ROOT / "app_pages", tmp_path / "app_pages")
    (tmp_path / "fl" / "wire" / "cheat.py").write_text("from fl.runs.config import RunConfig\n")
    # Execute
    done = _lint(tmp_path)
    # Assert
    assert done.returncode != 0
    assert "fl.wire.cheat -> fl.runs.config" in done.stdout


def test_a_page_past_the_run_layer_and_a_circle_would_be_caught(tmp_path):
    # Prepare: a copy where a page imports the data layer, and two modules of the wire layer import each other
    for folder in ("fl", "ui", "app_pages"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    (tmp_path / "ui" / "cheat.py").write_text("from fl.data import DataError\n")
    (tmp_path / "fl" / "wire" / "loop_a.py").write_text("import fl.wire.loop_b\n")
    (tmp_path / "fl" / "wire" / "loop_b.py").write_text("import fl.wire.loop_a\n")
    # Execute
    done = _lint(tmp_path)
    # Assert
    assert done.returncode != 0
    assert "ui.cheat -> fl.data" in done.stdout
    assert "No cycles are allowed in fl.wire" in done.stdout


def _import_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def test_no_module_imports_itself_in_a_loop():
    # Prepare: every import between two modules of the project, as import-linter reads them, less the
    # imports the no-circles contract of .importlinter lets through (one list, kept there)
    grimp = pytest.importorskip("grimp")
    config = configparser.ConfigParser()
    config.read(ROOT / ".importlinter")
    let_through = {tuple(part.strip() for part in line.split("->"))
                   for line in config["importlinter:contract:no-circles"].get("ignore_imports", "").splitlines()
                   if line.strip()}
    graph = grimp.build_graph("fl", "ui", "app_pages")
    modules = set(graph.modules)
    edges = {m: {n for n in graph.find_modules_directly_imported_by(m) if n in modules and (m, n) not in let_through}
             for m in modules}
    # Execute
    cycles = _import_cycles(edges)
    # Assert
    assert cycles == [], f"modules that import each other, directly or in a loop: {cycles}"


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
