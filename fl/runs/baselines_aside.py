"""A simulation's baselines off the rounds' critical path: in a low-priority child process, or after the rounds.

Computed in a thread of the run's process, the baselines (a centralized fit,
up to a hundred local-only fits) share one interpreter lock with the server,
the round loop and an in-process host of clients: on a 2-core machine they
doubled the first rounds of a 10-client run (docs/performance.md, "Round
overhead"). Beside worker processes, which keep every core busy, they run
in a child process at the lowest priority, so that they wait for the
rounds instead of slowing them; the child is started as the workers are
(fl/runs/processes.py: from the warm forkserver, before the
run's server listens), with the engine already imported. When the clients
share the run's process they are computed in a thread once the rounds are
over (``compute_after_rounds``): in this interpreter they would slow every
round they overlap. The child rebuilds the run's data from its config (a
pure, seeded function of it, as worker processes do) and sends back the
same dictionaries ``compute_baselines`` returns, so the numbers are
identical.

Messages on the pipe between the run and its child: the job (parent to
child), then ``(kind, value)`` pairs; kind is "partial", "done", "error"
(the data could not be prepared, as in a thread) or "unavailable" (the child
could not rebuild the run's data: the parent computes). Pickled by
multiprocessing over a pipe only our own two processes hold, never anything
from the network.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Callable

POLL_S = 0.2  # how often the parent asks whether the run was stopped
NICE = 19  # the lowest priority: the rounds always come first


class ChildFailed(Exception):
    """The child could not start, or ended without an answer: the caller computes in its own process."""


class AsideChild:
    """The baselines' child process, started before the run's server listens; it waits for its job (``close``
    kills it if the run did not need it)."""

    def __init__(self, nice: int = NICE) -> None:
        from fl.runs.processes import context

        ctx = context()
        self.pipe, theirs = ctx.Pipe()
        self.proc = ctx.Process(target=_child_main, args=(theirs, nice), name="fl-baselines", daemon=True)
        try:
            self.proc.start()
        except OSError as exc:
            raise ChildFailed(str(exc)) from None
        finally:
            theirs.close()

    def close(self) -> None:
        """Kill the child if it is still there, and reap it."""
        self.pipe.close()
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5)


def start_aside(nice: int = NICE) -> AsideChild | None:
    """The child, or None when it cannot be started (``compute_aside`` then computes in this process)."""
    try:
        return AsideChild(nice)
    except ChildFailed:
        return None


def compute_aside(config: Any, data: Any, client_ids: list[str], should_stop: Callable[[], bool] = lambda: False,
                  on_partial: Callable[[dict[str, Any]], None] | None = None,
                  rounds_over: Callable[[], bool] = lambda: False, nice: int = NICE,
                  child: AsideChild | None = None) -> dict[str, Any]:
    """``compute_baselines`` in a child process (``child``, started earlier, or one started now); in this one
    when the child fails for a reason of its own.

    ``nice``: the child's priority while the rounds run. Once ``rounds_over`` says yes the child is given back
    a normal priority where the system allows it (nothing is left to give way to, and the run waits for it)."""
    from fl.runs.baselines import BaselinesCancelled, compute_baselines

    if should_stop():
        if child is not None:
            child.close()
        raise BaselinesCancelled()
    try:
        child = child or AsideChild(nice)
        return _run_child(child, config.to_dict(), client_ids, _sizes(data), should_stop, on_partial, rounds_over)
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


def _run_child(child: AsideChild, config: dict[str, Any], client_ids: list[str], sizes: list[int],
               should_stop: Callable[[], bool], on_partial: Callable[[dict[str, Any]], None] | None,
               rounds_over: Callable[[], bool]) -> dict[str, Any]:
    """Give the child its job, relay its partial results, return its answer; kill it when the run is stopped."""
    from fl.runs.baselines import BaselinesCancelled

    try:
        child.pipe.send({"config": config, "client_ids": client_ids, "sizes": sizes})
        watch = lambda: should_stop() or (rounds_over() and _restore_priority(child.proc.pid))  # noqa: E731
        while True:
            message = _next_message(child.pipe, watch)
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
    except (BrokenPipeError, EOFError, OSError) as exc:
        raise ChildFailed(str(exc)) from None
    finally:
        child.close()


def _next_message(pipe: Any, should_stop: Callable[[], bool]) -> tuple[str, Any] | None:
    """The child's next message; None once the run is stopped. EOFError when the child ended without one."""
    while not pipe.poll(POLL_S):
        if should_stop():
            return None
    try:
        return pipe.recv()  # our own child's pickle, never a peer's
    except EOFError:
        raise EOFError("the baselines process ended without an answer") from None


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


def _child_main(pipe: Any, nice: int) -> None:
    """The child: wait for the job, rebuild the data, compute, answer."""
    from fl.runs.processes import child_setup

    _lower_priority(nice)
    child_setup()
    try:
        request = pipe.recv()  # from the run's own process, which started this one
    except (EOFError, OSError):
        return
    from fl.runs.baselines import compute_baselines
    from fl.runs.build import load_data
    from fl.runs.config import RunConfig

    send = lambda kind, value: pipe.send((kind, value))  # noqa: E731
    try:
        config = RunConfig.from_dict(request["config"])
        data = load_data(config)
        if _sizes(data) != request["sizes"]:
            raise ValueError("the data rebuilt from the config is not the run's")
    except Exception as exc:
        send("unavailable", str(exc))
        return
    try:
        result = compute_baselines(config, data, request["client_ids"], on_partial=lambda part: send("partial", part))
    except Exception as exc:  # the data could not be prepared: the parent reports it as before
        send("error", str(exc).strip() or type(exc).__name__)
        return
    try:
        send("done", result)
    except OSError:  # the run is gone
        pass
