"""A real Dask cluster on 127.0.0.1 for the tests: ``dask scheduler`` and ``dask worker`` processes started here.

Every process is started by the test, talks on loopback only, and is ended
(SIGTERM, then SIGKILL) when the fixture ends, however the test went.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 90.0
# A worker on which fl cannot be imported, as on a node where the project was never installed.
HIDE_FL = ("import sys, importlib.abc\n"
           "class Hide(importlib.abc.MetaPathFinder):\n"
           "    def find_spec(self, name, path=None, target=None):\n"
           "        if name == 'fl' or name.startswith('fl.'):\n"
           "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
           "sys.meta_path.insert(0, Hide())\n"
           "from distributed.cli.dask_worker import main\n"
           "main()\n")


def _env() -> dict[str, str]:
    """fl importable in the cluster's processes (installed or not), one BLAS thread each: the machine has 2 cores."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


class DaskCluster:
    """A scheduler and its workers, each a process of ours."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.processes: dict[str, subprocess.Popen] = {}
        self.address = ""

    def start_scheduler(self) -> str:
        scheduler_file = self.directory / "scheduler.json"
        self._spawn("scheduler", [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                                  "--port", "0", "--no-dashboard", "--scheduler-file", str(scheduler_file)])
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                self.address = json.loads(scheduler_file.read_text())["address"]
                return self.address
            except (OSError, ValueError, KeyError):
                time.sleep(0.2)
        raise RuntimeError("the test's dask scheduler did not start")

    def add_worker(self, name: str, hide_fl: bool = False, nthreads: int = 1) -> None:
        args = [self.address, "--nthreads", str(nthreads), "--no-nanny", "--host", "127.0.0.1", "--name", name,
                "--no-dashboard", "--local-directory", str(self.directory / name)]
        command = [sys.executable, "-c", HIDE_FL, *args] if hide_fl else \
            [sys.executable, "-m", "distributed.cli.dask_worker", *args]
        self._spawn(name, command)

    def wait_for(self, names: set[str]) -> None:
        """Until exactly these workers are connected."""
        from distributed import Client

        with Client(self.address, timeout=30, set_as_default=False) as client:
            deadline = time.monotonic() + START_TIMEOUT_S
            while {w["name"] for w in client.scheduler_info(n_workers=-1)["workers"].values()} != names:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the test's dask workers {sorted(names)} did not come up")
                time.sleep(0.2)

    def stop(self, name: str) -> None:
        process = self.processes.pop(name)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    def stop_all(self) -> None:
        for name in [n for n in self.processes if n != "scheduler"] + ["scheduler"]:
            if name in self.processes:
                self.stop(name)

    def _spawn(self, name: str, command: list[str]) -> None:
        log = open(self.directory / f"{name}.log", "wb")
        self.processes[name] = subprocess.Popen(command, cwd=self.directory, env=_env(), stdout=log,
                                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()


def scheduler_tasks(address: str) -> int:
    """How many tasks the scheduler still knows (0: nothing of any run is left on the cluster)."""
    from distributed import Client

    with Client(address, timeout=30, set_as_default=False) as client:
        return client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))


def worker_names(address: str) -> dict[str, str]:
    """The cluster's workers: address -> name."""
    from distributed import Client

    with Client(address, timeout=30, set_as_default=False) as client:
        return {a: w["name"] for a, w in client.scheduler_info(n_workers=-1)["workers"].items()}


def run_threads() -> list[str]:
    """Threads of runs (fl-*) still alive in this process."""
    return [t.name for t in threading.enumerate() if t.name.startswith("fl-")]


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    """A scheduler and two single-thread workers (w0, w1) on 127.0.0.1; yields the cluster."""
    pytest.importorskip("distributed")
    cluster = DaskCluster(tmp_path_factory.mktemp("dask"))
    try:
        cluster.start_scheduler()
        cluster.add_worker("w0")
        cluster.add_worker("w1")
        cluster.wait_for({"w0", "w1"})
        yield cluster
    finally:
        cluster.stop_all()
