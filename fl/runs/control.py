"""Whether a stored run is live, and how any process of this machine asks it to stop.

Every run with a directory (the run store, or ``--out DIR``) is watched by
its own process, whatever started it (``python -m fl simulate``/``server``,
the dashboard, a sweep):

- ``live.json`` (the owner's pid, host name and run id) is written when the
  run opens its directory, its mtime touched every ``HEARTBEAT_S`` seconds
  while the run goes on, and removed once the run has recorded its end in
  summary.json. A run is **live** when summary.json says ``running``,
  live.json exists, its heartbeat is younger than ``STALE_S`` and, on this
  host, its pid is still a process. A process killed with SIGKILL, or a
  crashed machine, leaves ``running`` behind: the missing process (at once)
  or the old heartbeat (after ``STALE_S``) says "interrupted" instead.
- ``stop.request`` is how another process asks it to stop: the run's
  watcher thread looks for the file every ``POLL_S`` seconds and calls the
  run handle's own ``stop()`` (the Stop button's), so the round in flight
  is abandoned and the run ends recorded as ``stopped``. A request left
  over from a run that had already ended is removed when the run ends and
  when a resumed run starts, so it never stops a later one.

A file, not a socket: it needs no port, works for every kind of run and for
a directory on a shared disk, and costs one ``stat`` every half second.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from fl.runs.files import write_atomically

LIVE_FILE = "live.json"
STOP_FILE = "stop.request"
POLL_S = 0.5  # how often a live run looks for a stop request
HEARTBEAT_S = 2.0  # how often it touches live.json
STALE_S = 20.0  # a heartbeat older than this: its process is gone or frozen


@dataclass(frozen=True)
class Liveness:
    """What the files of a run directory say about it now."""

    live: bool
    status: str  # running (live), or how it ended: completed | stopped | failed | interrupted | unknown
    pid: int | None = None
    host: str | None = None
    why: str = ""  # for an interrupted run: why it is not live

    @property
    def where(self) -> str:
        """``pid 1234 on host`` (or "" when unknown)."""
        return f"pid {self.pid} on {self.host}" if self.pid is not None else ""


def this_host() -> str:
    return socket.gethostname()


def mark_live(directory: str | Path, run_id: str) -> None:
    """Called when a run opens its directory: live.json names this process; any old stop request goes."""
    directory = Path(directory)
    (directory / STOP_FILE).unlink(missing_ok=True)
    _write(directory / LIVE_FILE, {"run_id": run_id, "pid": os.getpid(), "host": this_host(), "since": time.time()})


def _write(path: Path, data: dict) -> None:
    """Renamed over, no fsync: these files matter only while their processes live."""
    write_atomically(path, json.dumps(data), sync=False)


def _pid_alive(pid: int) -> bool:
    """Whether a process of this machine has this pid (POSIX; elsewhere the heartbeat alone decides)."""
    if os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # somebody else's process: alive
    except OSError:
        return False
    return True


def read_status(directory: str | Path) -> str:
    """summary.json's status ("unknown" when it cannot be read)."""
    try:
        return str(json.loads((Path(directory) / "summary.json").read_text()).get("status") or "unknown")
    except (OSError, ValueError, AttributeError):
        return "unknown"


def liveness(directory: str | Path, status: str | None = None) -> Liveness:
    """Whether the run in ``directory`` is live (``status``: summary.json's, when the caller has read it)."""
    directory = Path(directory)
    status = status or read_status(directory)
    if status != "running":
        return Liveness(False, status)
    path = directory / LIVE_FILE
    try:
        owner = json.loads(path.read_text())
        beat = path.stat().st_mtime
    except FileNotFoundError:
        return Liveness(False, "interrupted", why="no process watches it (it ended without recording how)")
    except (OSError, ValueError):
        return Liveness(False, "interrupted", why=f"{LIVE_FILE} cannot be read")
    pid, host = owner.get("pid"), owner.get("host")
    pid = pid if isinstance(pid, int) else None
    if pid is not None and host == this_host() and not _pid_alive(pid):
        return Liveness(False, "interrupted", pid, host, why=f"its process {pid} is gone")
    age = time.time() - beat
    if age > STALE_S:
        return Liveness(False, "interrupted", pid, host, why=f"no heartbeat for {age:.0f} s")
    return Liveness(True, "running", pid, host)


def request_stop(directory: str | Path) -> Liveness:
    """Ask the live run in ``directory`` to stop (it does within ``POLL_S`` and its round); a run that is not
    live gets no request, and its Liveness says how it ended."""
    directory = Path(directory)
    state = liveness(directory)
    if state.live:
        _write(directory / STOP_FILE, {"pid": os.getpid(), "host": this_host(), "at": time.time()})
    return state


def wait_until_ended(directory: str | Path, timeout: float, poll_s: float = 0.2) -> Liveness:
    """Poll until the run is no longer live or ``timeout`` passes; its last Liveness."""
    deadline = time.monotonic() + timeout
    state = liveness(directory)
    while state.live and time.monotonic() < deadline:
        time.sleep(poll_s)
        state = liveness(directory)
    if not state.live:
        (Path(directory) / STOP_FILE).unlink(missing_ok=True)  # a request that came as it ended
    return state


class RunWatcher:
    """The thread of a live run that beats its heartbeat and honours a stop request.

    ``stop``: the handle's stop (called once); ``running``: whether the run's
    driver still goes (a driver that died leaves the run to look interrupted).
    """

    def __init__(self, directory: str | Path, run_id: str, stop: Callable[[], None],
                 running: Callable[[], bool] = lambda: True):
        self.dir = Path(directory)
        self._stop, self._running = stop, running
        self._closed = threading.Event()
        self.stop_requested = False
        self._thread = threading.Thread(target=self._watch, name=f"fl-watch-{run_id}", daemon=True)

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def start(self) -> None:
        self._thread.start()

    def _watch(self) -> None:
        last_beat = time.monotonic()
        while not self._closed.wait(POLL_S) and self._running():
            if not self.stop_requested and (self.dir / STOP_FILE).exists():
                self.stop_requested = True
                self._stop()
            if time.monotonic() - last_beat >= HEARTBEAT_S:
                last_beat = time.monotonic()
                try:
                    os.utime(self.dir / LIVE_FILE)
                except OSError:
                    pass  # the directory went away: the run will fail on its own next write

    def close(self) -> None:
        """The run has recorded its end: no heartbeat, no live.json, no pending request."""
        self._closed.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(POLL_S * 4)
        for name in (LIVE_FILE, STOP_FILE):
            (self.dir / name).unlink(missing_ok=True)
