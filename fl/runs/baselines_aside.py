"""A simulation's baselines off the rounds' critical path: in a low-priority child process, or after the rounds.

Computed in a thread of the run's process, the baselines (a centralized fit,
up to a hundred local-only fits) share one interpreter lock with the server,
the round loop and an in-process host of clients: on a 2-core machine they
doubled the first rounds of a 10-client run (docs/performance.md, "Round
overhead"). Beside worker processes, which keep every core busy, they run
in ``python -m fl.runs.baselines_aside`` at the lowest priority, so that they
wait for the rounds instead of slowing them (the child's start, 2 to 4 s of
CPU, hides behind the workers'). When the clients share the run's process
they are computed in a thread once the rounds are over (``compute_after_rounds``):
no child to start, and the rounds never share the interpreter with them. The child rebuilds the run's data from its config (a pure,
seeded function of it, as worker processes do) and sends back the same
dictionaries ``compute_baselines`` returns, so the numbers are identical.

Messages on the child's stdout: a 4-byte big-endian length, then a pickle of
``(kind, value)``; kind is "partial", "done", "error" (the data could not be prepared, as
in a thread) or "unavailable" (the child could not rebuild the run's data: the parent computes). Only our own child
process writes them (never anything from the network).
"""

from __future__ import annotations

import functools
import os
import pickle
import select
import struct
import subprocess
import sys
import threading
from typing import IO, Any, Callable

POLL_S = 0.2  # how often the parent asks whether the run was stopped
NICE = 19  # the lowest priority: the rounds always come first


class ChildFailed(Exception):
    """The child could not start, or ended without an answer: the caller computes in its own process."""


def compute_aside(config: Any, data: Any, client_ids: list[str], should_stop: Callable[[], bool] = lambda: False,
                  on_partial: Callable[[dict[str, Any]], None] | None = None,
                  rounds_over: Callable[[], bool] = lambda: False, nice: int = NICE) -> dict[str, Any]:
    """``compute_baselines`` in a child process; in this one when the child fails for a reason of its own.

    ``nice``: the child's priority while the rounds run. Once ``rounds_over`` says yes the child is given back
    a normal priority where the system allows it (nothing is left to give way to, and the run waits for it)."""
    from fl.runs.baselines import BaselinesCancelled, compute_baselines

    if should_stop():
        raise BaselinesCancelled()
    try:
        return _run_child(config.to_dict(), client_ids, _sizes(data), should_stop, on_partial, rounds_over, nice)
    except ChildFailed:
        return compute_baselines(config, data, client_ids, should_stop=should_stop, on_partial=on_partial)


def compute_after_rounds(config: Any, data: Any, client_ids: list[str], should_stop: Callable[[], bool] = lambda: False,
                         on_partial: Callable[[dict[str, Any]], None] | None = None, *,
                         rounds_over: threading.Event) -> dict[str, Any]:
    """``compute_baselines`` in this thread once the rounds are over: for a run whose clients share this
    process, where a child's start (a Python with scikit-learn, 2 to 4 s of CPU) would cost more than the
    baselines, and in this interpreter they would slow every round they overlap."""
    from fl.runs.baselines import compute_baselines

    rounds_over.wait()
    return compute_baselines(config, data, client_ids, should_stop=should_stop, on_partial=on_partial)


def _sizes(data: Any) -> list[int]:
    """Each partition's size: the child checks that the data it rebuilt is the run's."""
    return [int(len(part)) for part in data.parts]


def _run_child(config: dict[str, Any], client_ids: list[str], sizes: list[int], should_stop: Callable[[], bool],
               on_partial: Callable[[dict[str, Any]], None] | None, rounds_over: Callable[[], bool],
               nice: int = NICE) -> dict[str, Any]:
    """Start the child, relay its partial results, return its answer; kill it when the run is stopped."""
    from fl.runs.baselines import BaselinesCancelled

    try:
        child = subprocess.Popen([sys.executable, "-m", "fl.runs.baselines_aside"], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=os.getcwd(),
                                 preexec_fn=functools.partial(_lower_priority, nice) if nice else None)
    except OSError as exc:
        raise ChildFailed(str(exc)) from None
    try:
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write(pickle.dumps({"config": config, "client_ids": client_ids, "sizes": sizes}))
        child.stdin.flush()  # left open: the child ends when it closes (this process gone)
        watch = lambda: should_stop() or (rounds_over() and _restore_priority(child.pid))  # noqa: E731
        while True:
            message = _next_message(child.stdout, watch)
            if message is None:
                raise BaselinesCancelled()
            kind, value = message
            if kind == "partial" and on_partial is not None:
                on_partial(value)
            elif kind == "done":
                return value
            elif kind == "error":
                raise RuntimeError(value)
            elif kind == "unavailable":  # the child could not rebuild the run's data: compute here
                raise ChildFailed(value)
    except (BrokenPipeError, EOFError) as exc:
        raise ChildFailed(str(exc)) from None
    finally:
        _end(child)


def _next_message(stream: IO[bytes], should_stop: Callable[[], bool]) -> tuple[str, Any] | None:
    """The child's next message; None once the run is stopped. EOFError when the child ended without one."""
    while not select.select([stream], [], [], POLL_S)[0]:
        if should_stop():
            return None
    header = stream.read(4)
    if len(header) < 4:
        raise EOFError("the baselines process ended without an answer")
    body = stream.read(struct.unpack(">I", header)[0])
    return pickle.loads(body)  # our own child's pickle, never a peer's


def _end(child: subprocess.Popen) -> None:
    """Kill the child if it is still there, and reap it."""
    for stream in (child.stdin, child.stdout):
        try:
            if stream is not None:
                stream.close()
        except OSError:
            pass
    if child.poll() is None:
        child.kill()
    child.wait()


def _restore_priority(pid: int) -> bool:
    """Back to normal priority (root, or an RLIMIT_NICE that allows it; else it stays low). Never says stop."""
    try:
        os.setpriority(os.PRIO_PROCESS, pid, 0)
    except OSError:
        pass
    return False


def _lower_priority(nice: int) -> None:
    try:
        os.nice(nice)
    except OSError:
        pass


def _send(out: IO[bytes], kind: str, value: Any) -> None:
    body = pickle.dumps((kind, value))
    out.write(struct.pack(">I", len(body)) + body)
    out.flush()


def _exit_when_parent_leaves(stdin: IO[bytes]) -> None:
    """The parent keeps our stdin open while it wants an answer; EOF means it is gone."""
    stdin.read()
    os._exit(0)


def main() -> None:
    """The child: read the job, rebuild the data, compute, answer."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever a library prints must not mix with the messages
    request = pickle.load(sys.stdin.buffer)
    threading.Thread(target=_exit_when_parent_leaves, args=(sys.stdin.buffer,), daemon=True).start()
    from fl.runs.baselines import compute_baselines
    from fl.runs.build import load_data
    from fl.runs.config import RunConfig

    try:
        config = RunConfig.from_dict(request["config"])
        data = load_data(config)
        if _sizes(data) != request["sizes"]:
            raise ValueError("the data rebuilt from the config is not the run's")
    except Exception as exc:
        _send(out, "unavailable", str(exc))
        return
    try:
        result = compute_baselines(config, data, request["client_ids"],
                                   on_partial=lambda part: _send(out, "partial", part))
    except Exception as exc:  # the data could not be prepared: the parent reports it as before
        _send(out, "error", str(exc).strip() or type(exc).__name__)
        return
    _send(out, "done", result)


if __name__ == "__main__":
    main()
