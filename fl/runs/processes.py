"""How a run starts its worker processes (hosts of clients, the baselines' child): warm, not from scratch.

A process started from scratch (a fresh Python importing scikit-learn and the
engine, as loky's or ``subprocess``'s are) costs 2 to 4 s of CPU before it
does anything; at 10 clients that was more than the second core saved, so
small runs kept their clients in the server's process, where they share one
interpreter lock with it (docs/performance.md, "Round overhead").

Instead, a **forkserver** from the standard library's multiprocessing: a
single-threaded process, started once per process with the engine imported
(``warm_up``), forks each child, which starts with everything imported. The
app starts it when it starts, and ``python -m fl simulate`` before it imports
the engine itself (fl/__main__.py), so that runs find it warm. It holds no
data and no socket, and ends with its process. Its children never run the
parent's main script (fl/runs/forkserver_preload.py): the dashboard's is
app.py.

Not fork from the run's own process: tried, and a forked host hung in a
test run (it inherited a lock held by a thread that ``threading`` does not
list); scikit-learn's OpenMP pool is not fork-safe either, and the command
line has one by the time it starts a run. The forkserver never runs those
threads, so its children inherit no such lock.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from multiprocessing.context import BaseContext

# What a host of clients and the baselines' child import: the forkserver imports them once, so that every child
# it forks starts with them (measured: a host's run imports nothing more but two of scikit-learn's data modules).
PRELOAD = ["fl.runs.forkserver_preload", "fl.runs.workers", "fl.runs.build", "fl.runs.baselines",
           "fl.runs.baselines_aside"]

# What starting a run's worker processes costs, by how they start (quiet 2 cores, 2 hosts of 10 digits clients,
# from ``start`` to the first client joined; docs/performance.md "Round overhead"): from the warm forkserver
# 0.14-0.23 s (0.05 s of it the server's own start); from a forkserver still importing the engine 2.5 s; a fresh
# Python each (spawn, as loky's were) about 8 s of a whole run beside the baselines' child.
WARM_START_S = 0.3
COLD_START_S = 2.5
SPAWN_START_S = 8.0

_lock = threading.Lock()
_warm = False


def context() -> BaseContext:
    """The warm forkserver, or (a platform without one) spawn."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        warm_up()
        return multiprocessing.get_context("forkserver")
    return multiprocessing.get_context("spawn")


def start_seconds() -> float:
    """What a run's worker processes would cost to start now, by the way ``context`` would start them."""
    if _warm:
        return WARM_START_S
    return COLD_START_S if "forkserver" in multiprocessing.get_all_start_methods() else SPAWN_START_S


def warm_up() -> None:
    """Start this process's forkserver with the engine imported, once; it imports in its own process, so this
    returns at once. The dashboard calls it when it starts, so that its first run does not wait for it."""
    global _warm
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return
    with _lock:
        if _warm:
            return
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        from multiprocessing import forkserver  # noqa: PLC0415 (POSIX only)

        # The forkserver is a fresh `python -c` that does not take this process's sys.path (Python 3.11 passes
        # it and ignores it): it finds the engine from its working directory or an install. An app started
        # from elsewhere (`streamlit run /path/to/app.py`) would preload nothing, and its children would run
        # app.py again; the engine's own folder goes first on its PYTHONPATH, for its start only.
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        before = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = os.pathsep.join([root] + ([before] if before else []))
        try:
            forkserver.ensure_running()
        finally:
            if before is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = before
        _warm = True


def child_setup() -> None:
    """In a child, first: Ctrl-C is the run's to handle (a terminal sends it to the whole process group; the run
    stops, says bye, and the children end with their clients), and the child ends as soon as the process that
    started it is gone (killed, or ended without stopping it), instead of running on as an orphan."""
    import signal  # noqa: PLC0415

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = multiprocessing.parent_process()
    if parent is None or parent.sentinel is None:
        return

    def watch() -> None:
        from multiprocessing.connection import wait  # noqa: PLC0415

        wait([parent.sentinel])
        os._exit(0)

    threading.Thread(target=watch, name="fl-parent-watch", daemon=True).start()
