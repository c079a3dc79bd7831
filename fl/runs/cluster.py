"""Placing a simulation's client hosts on a Dask or Ray cluster (``--cluster``), and taking them off again.

Why the engines' own APIs and not ``joblib.parallel_config``: joblib keeps
that setting per thread, and a simulation launches its hosts from a thread
of its own, so the documented recipe silently ran on loky; made joblib's
global default, Dask's backend failed on joblib 1.6 (``Batch.__call__() got
an unexpected keyword argument 'nesting_level'``). A ``distributed.Client``
or ``ray`` works from whatever thread calls it.

Before any host is placed the cluster is checked, so that a run fails in
one sentence instead of hanging: every worker must import ``fl`` with the
same code as this machine (a tiny task per worker, ``code_identity``), and
a CSV must be at the same path on every worker with the same bytes. Then
each host gets a free worker slot (Dask: a thread of a named worker, pinned;
Ray: one CPU); a host that finds none is not placed, and the run is refused
unless the user allowed fewer clients (``min_clients``). Each host reports
where it started (Dask: a worker event; Ray: a small actor), so a run that
waits in vain says which hosts run where. The functions sent to the cluster
are pickled by value (defined inside factories): a Dask scheduler unpickles
task graphs, and needs no ``fl`` of its own this way.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import Counter
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from fl.federation.client import ClientResult
from fl.runs.cluster_spec import ClusterSpec
from fl.runs.config import ConfigError
from fl.runs.workers import HostSpec

CONNECT_TIMEOUT_S = 10.0
PROBE_TIMEOUT_S = 60.0
HOST_FIELDS = ("worker", "name", "hostname", "pid", "error", "cancelled", "left")  # what summary.json says of each host
INSTALL = "install this project there (pip install -e . in a checkout of the same commit)"


class ClusterError(ConfigError):
    """The cluster cannot take the run's hosts; str(e) is one sentence naming the worker and what to do."""


@lru_cache(maxsize=1)
def code_identity() -> dict[str, str]:
    """fl's version and a digest of its source files: two processes with the same digest run the same engine."""
    import fl

    root = Path(fl.__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return {"version": fl.__version__, "digest": digest.hexdigest()[:16], "path": str(root)}


def file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _probe_factory() -> Callable[[str | None], dict]:
    """The check each worker runs, made here so that it is pickled by value (a worker without fl can run it)."""
    def probe(csv_path: str | None) -> dict:
        import hashlib
        import os
        import socket

        out: dict = {"hostname": socket.gethostname(), "pid": os.getpid()}
        try:
            from fl.runs.cluster import code_identity

            out.update(code_identity())
        except Exception as exc:  # ImportError above all: fl is not installed there
            out["error"] = f"{type(exc).__name__}: {exc}"
        if csv_path:
            try:
                digest = hashlib.sha256()
                with open(csv_path, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        digest.update(chunk)
                out["csv"] = digest.hexdigest()
            except OSError as exc:
                out["csv_error"] = exc.strerror or str(exc)
        return out
    return probe


def _host_task_factory() -> Callable[..., dict]:
    """A host's task, pickled by value: says where it started, then runs the host (fl/runs/workers.py)."""
    def host_task(spec: dict, engine: str, beacon: Any) -> dict:
        import os
        import socket

        where = {"host": spec["index"], "pid": os.getpid(), "hostname": socket.gethostname()}
        if engine == "dask":
            from distributed import get_worker

            worker = get_worker()
            where.update(worker=worker.address, name=str(worker.name))
            worker.log_event(beacon, where)
        else:
            import ray

            where.update(worker=ray.get_runtime_context().get_node_id()[:12], name=ray.util.get_node_ip_address())
            ray.get(beacon.started.remote(where))
        from fl.runs.workers import HostSpec, run_host

        return {**where, "results": run_host(HostSpec(**spec))}
    return host_task


class Placement:
    """The hosts of one run on a cluster: checked, planned, placed, watched, cancelled, closed (thread-safe)."""

    engine = ""

    def __init__(self, spec: ClusterSpec, run_id: str):
        self.spec = spec
        self.run_id = run_id
        self.topic = f"fl-hosts-{run_id}"
        self.slots: list[str] = []  # the worker of each placed host
        self.n_hosts = 0  # hosts the run wanted
        self.specs: list[HostSpec] = []
        self.outcomes: list[dict] = []  # each finished host's: where it ran, its clients' results or its error
        self._lock = threading.Lock()
        self._cancelled = False
        self._closed = False
        self._seen: list[dict] = []

    # ------------------------------------------------------------------ before the run
    def check(self, csv_path: str | None) -> None:
        """Every worker imports fl with this machine's code (and sees the CSV); ClusterError naming one that does
        not."""
        ours = code_identity()
        wanted = file_digest(csv_path) if csv_path else None
        answers = self._probe(csv_path)
        if not answers:
            raise ClusterError(f"the {self.engine} cluster at {self.spec} has no workers: start some and try again")
        for worker, answer in sorted(answers.items()):
            if isinstance(answer, BaseException) or not isinstance(answer, dict):
                raise ClusterError(f"worker {worker} of {self.spec} could not run a check task ({answer}): "
                                   "is it healthy, with the same Python as this machine?")
            if answer.get("error"):
                raise ClusterError(f"worker {worker} ({answer.get('hostname')}) of {self.spec} cannot import fl "
                                   f"({answer['error']}): {INSTALL}")
            if answer.get("digest") != ours["digest"]:
                raise ClusterError(f"worker {worker} ({answer.get('hostname')}) runs fl {answer.get('version')} "
                                   f"from {answer.get('path')} with other code than this machine's "
                                   f"(digest {answer.get('digest')}, here {ours['digest']}): {INSTALL}")
            if wanted and answer.get("csv") != wanted:
                why = answer.get("csv_error") or "its bytes differ from this machine's"
                raise ClusterError(f"worker {worker} ({answer.get('hostname')}) cannot use the CSV {csv_path} "
                                   f"({why}): a CSV must be at the same path, with the same contents, on every "
                                   "worker")

    def plan(self, n_hosts: int | None, n_clients: int, allow_fewer: bool) -> int:
        """A free worker slot for each host, as far as there are; returns how many hosts are placed.

        ``n_hosts`` None (``workers`` auto): one host per free slot, at most
        one per client. Raises ClusterError when some hosts find no slot and
        the run may not have fewer clients.
        """
        free = self._free_slots()
        self.n_hosts = min(len(free), n_clients) if n_hosts is None else n_hosts
        self.slots = free[:self.n_hosts]
        if not self.slots:
            raise ClusterError(f"the {self.engine} cluster at {self.spec} has no free worker slot: every worker "
                               "is busy; try again when it is free, or add workers")
        if len(self.slots) < self.n_hosts and not allow_fewer:
            raise ClusterError(f"the {self.engine} cluster at {self.spec} has {len(free)} free worker slot"
                               f"{'' if len(free) == 1 else 's'}, fewer than the run's {self.n_hosts} hosts (one per "
                               "slot): add workers, lower «workers», or allow fewer clients with «min_clients»")
        return len(self.slots)

    # ------------------------------------------------------------------ the run
    def run(self, specs: list[HostSpec]) -> list[ClientResult]:
        """Place the hosts and block until every one has ended (or was cancelled); their clients' results."""
        with self._lock:
            if self._cancelled:
                return []
            self.specs = specs
            try:
                self._submit(specs)
            except Exception as exc:  # the cluster went away since the check: the join fails and says so
                self.outcomes = [{"host": i, "error": f"not placed ({type(exc).__name__}: {exc})"}
                                 for i in range(len(specs))]
                return []
        outcomes = self._gather()
        with self._lock:
            self.outcomes = outcomes
        return [ClientResult(**r) for outcome in outcomes for r in outcome.get("results") or []]

    def started(self) -> list[dict]:
        """Where each host that started runs (host index, worker, name, pid, hostname), by host index; once closed,
        what was last seen (asking a closed Ray would start a new one)."""
        if self._closed:
            return list(self._seen)
        try:
            seen = sorted(self._started(), key=lambda w: w["host"])
        except Exception:  # the cluster is gone: what was seen before stands
            return list(self._seen)
        self._seen = seen
        return list(seen)

    def note(self) -> str:
        """Placed K of N hosts, which started on which workers, which did not: for a run whose clients did not all
        join."""
        started = {w["host"]: w for w in self.started()}
        with self._lock:
            specs, slots = list(self.specs), list(self.slots)
        parts = [f"placed {len(slots)} of {self.n_hosts} hosts on {self.spec}"]
        if self.n_hosts > len(slots):
            parts.append(f"{self.n_hosts - len(slots)} found no free worker slot")
        running = [f"host {i} ({_clients(specs, i)}) on {_where(started[i])}" for i in sorted(started)]
        waiting = [f"host {i} ({_clients(specs, i)}) for {slots[i]}" for i in range(len(slots)) if i not in started]
        if running:
            parts.append("started: " + ", ".join(running))
        if waiting:
            parts.append("not started: " + ", ".join(waiting))
        failed = [f"host {o['host']}: {o['error']}" for o in self.outcomes if o.get("error")]
        if failed:
            parts.append("failed: " + "; ".join(failed))
        return "; ".join(parts)

    def summary(self) -> dict[str, Any]:
        """For summary.json: the cluster and where each host ran."""
        by_host = {w["host"]: dict(w) for w in self.started()}
        for outcome in self.outcomes:
            by_host.setdefault(outcome.get("host"), {}).update({k: v for k, v in outcome.items() if k != "results"})
            if outcome.get("results"):  # why its clients left: "run finished" for all, unless some were lost
                reasons = Counter(str(r.get("reason")) for r in outcome["results"])
                by_host[outcome.get("host")]["left"] = dict(reasons.most_common(5))
        with self._lock:
            specs = list(self.specs)
        hosts = [{"host": i, "clients": _clients(specs, i),
                  **{k: v for k, v in by_host.get(i, {}).items() if k in HOST_FIELDS}} for i in range(len(specs))]
        return {"cluster": str(self.spec), "hosts_wanted": self.n_hosts, "hosts_placed": len(specs), "hosts": hosts}

    def cancel(self) -> None:
        """Take every task of the run off the cluster (a host still running is ended, a queued one never starts)."""
        with self._lock:
            self._cancelled = True
        try:
            self._cancel()
        except Exception:  # the cluster went away: nothing is left to cancel there
            pass

    def cancel_unstarted(self) -> None:
        """Take off the cluster the hosts that have not started (the run is over: they would find no server)."""
        started = {w["host"] for w in self.started()}
        try:
            self._cancel(keep=started)
        except Exception:  # the cluster went away
            pass

    def close(self) -> None:
        """Cancel what is left and let go of the cluster (its connection, or a local Ray started for the run)."""
        if self._closed:
            return
        self.started()  # the last word on where the hosts ran
        self.cancel()
        self._closed = True
        self._close()

    # ------------------------------------------------------------------ per engine
    def _probe(self, csv_path: str | None) -> dict[str, Any]:
        raise NotImplementedError

    def _free_slots(self) -> list[str]:
        raise NotImplementedError

    def _submit(self, specs: list[HostSpec]) -> None:
        raise NotImplementedError

    def _gather(self) -> list[dict]:
        raise NotImplementedError

    def _started(self) -> list[dict]:
        raise NotImplementedError

    def _cancel(self, keep: set[int] = frozenset()) -> None:  # type: ignore[assignment]
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError


def _failed(i: int, exc: BaseException) -> dict:
    """A host's outcome when its task did not return: cancelled (the run ended first) or an error."""
    if "Cancel" in type(exc).__name__:
        return {"host": i, "cancelled": True}
    return {"host": i, "error": f"{type(exc).__name__}: {exc}"}


def _clients(specs: list[HostSpec], i: int) -> str:
    """``clients 0-99`` of host i."""
    if i >= len(specs) or not specs[i].indices:
        return "no clients"
    first, last = specs[i].indices[0], specs[i].indices[-1]
    return f"clients {first}-{last}" if last != first else f"client {first}"


def _where(started: dict) -> str:
    name = started.get("name")
    return f"{started.get('worker')}" + (f" ({name})" if name and name != started.get("worker") else "")


class DaskPlacement(Placement):
    """Hosts as tasks of a ``distributed.Client``, each pinned to a thread of a named worker."""

    engine = "Dask"

    def __init__(self, spec: ClusterSpec, run_id: str):
        super().__init__(spec, run_id)
        try:
            from distributed import Client
        except ImportError:
            raise ClusterError("a Dask cluster needs dask and distributed on this machine: "
                               "pip install -e '.[cluster]'") from None
        try:
            self.client = Client(spec.address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise ClusterError(f"cannot reach the Dask scheduler at {spec.address} within {CONNECT_TIMEOUT_S:g} s "
                               f"({type(exc).__name__}): start one (dask scheduler) or check «cluster»") from None
        self.futures: list[Any] = []

    def _probe(self, csv_path: str | None) -> dict[str, Any]:
        return self.client.run(_probe_factory(), csv_path, on_error="return")

    def _free_slots(self) -> list[str]:
        """One entry per free thread, taking the workers in turn (hosts spread over them)."""
        workers = self.client.scheduler_info(n_workers=-1)["workers"]
        busy = self.client.processing()
        free = {addr: max(0, int(w.get("nthreads", 1)) - len(busy.get(addr, ())))
                for addr, w in sorted(workers.items())}
        slots: list[str] = []
        while any(free.values()):
            for addr in free:
                if free[addr]:
                    slots.append(addr)
                    free[addr] -= 1
        return slots

    def _submit(self, specs: list[HostSpec]) -> None:
        task = _host_task_factory()
        self.futures = [self.client.submit(task, asdict(spec), "dask", self.topic, key=f"fl-host-{self.run_id}-{i}",
                                           pure=False, workers=[slot], allow_other_workers=False, retries=0)
                        for i, (spec, slot) in enumerate(zip(specs, self.slots))]

    def _gather(self) -> list[dict]:
        outcomes = []
        for i, future in enumerate(self.futures):
            try:
                outcomes.append(future.result())
            except Exception as exc:  # cancelled, the worker died, or the host itself failed
                outcomes.append(_failed(i, exc))
        return outcomes

    def _started(self) -> list[dict]:
        return [dict(msg) for _, msg in self.client.get_events(self.topic)]

    def _cancel(self, keep: set[int] = frozenset()) -> None:  # type: ignore[assignment]
        left = [f for i, f in enumerate(self.futures) if not f.done() and i not in keep]
        if left:
            self.client.cancel(left, force=True)

    def _close(self) -> None:
        self.client.close()


class RayPlacement(Placement):
    """Hosts as Ray tasks of one CPU each; ``ray`` joins this machine's cluster or starts a local one for the run
    (shut down when the last run of this process using it ends)."""

    engine = "Ray"
    _users = 0
    _started_here = False
    _users_lock = threading.Lock()

    def __init__(self, spec: ClusterSpec, run_id: str):
        super().__init__(spec, run_id)
        try:
            import ray
        except ImportError:
            raise ClusterError("a Ray cluster needs ray on this machine: pip install -e '.[cluster]'") from None
        self.ray = ray
        with RayPlacement._users_lock:
            if not ray.is_initialized():
                address = spec.address or os.environ.get("RAY_ADDRESS")
                try:
                    ray.init(address=address, log_to_driver=False, logging_level="ERROR",
                             **({} if address else {"include_dashboard": False}))
                except Exception as exc:
                    raise ClusterError(f"cannot connect to Ray at {address or 'this machine'} "
                                       f"({type(exc).__name__}: {exc})") from None
                RayPlacement._started_here = True
            RayPlacement._users += 1
        self.refs: list[Any] = []
        self.beacon: Any = None

    def _probe(self, csv_path: str | None) -> dict[str, Any]:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        probe = self.ray.remote(num_cpus=0, max_retries=0)(_probe_factory())
        nodes = [n for n in self.ray.nodes() if n.get("Alive")]
        refs = {f"{n['NodeManagerAddress']} ({n['NodeID'][:12]})": probe.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(csv_path)
            for n in nodes}
        answers: dict[str, Any] = {}
        for name, ref in refs.items():
            try:
                answers[name] = self.ray.get(ref, timeout=PROBE_TIMEOUT_S)
            except Exception as exc:
                answers[name] = exc
        return answers

    def _free_slots(self) -> list[str]:
        return ["a free CPU"] * int(self.ray.available_resources().get("CPU", 0))

    def _submit(self, specs: list[HostSpec]) -> None:
        self.beacon = self.ray.remote(num_cpus=0)(_beacon_factory()).remote()
        task = self.ray.remote(num_cpus=1, max_retries=0)(_host_task_factory())
        self.refs = [task.remote(asdict(spec), "ray", self.beacon) for spec in specs]

    def _gather(self) -> list[dict]:
        outcomes = []
        for i, ref in enumerate(self.refs):
            try:
                outcomes.append(self.ray.get(ref))
            except Exception as exc:
                outcomes.append(_failed(i, exc))
        return outcomes

    def _started(self) -> list[dict]:
        return self.ray.get(self.beacon.seen.remote(), timeout=10) if self.beacon is not None else []

    def _cancel(self, keep: set[int] = frozenset()) -> None:  # type: ignore[assignment]
        ready, _ = self.ray.wait(self.refs, num_returns=len(self.refs), timeout=0) if self.refs else ([], [])
        for i, ref in enumerate(self.refs):
            if ref not in ready and i not in keep:
                self.ray.cancel(ref, force=True)

    def _close(self) -> None:
        if self.beacon is not None:
            self.ray.kill(self.beacon)
        with RayPlacement._users_lock:
            RayPlacement._users -= 1
            if RayPlacement._users == 0 and RayPlacement._started_here:
                self.ray.shutdown()
                RayPlacement._started_here = False


def _beacon_factory() -> type:
    """A tiny actor the Ray hosts tell where they started (pickled by value)."""
    class Beacon:
        def __init__(self) -> None:
            self.where: list[dict] = []

        def started(self, where: dict) -> None:
            self.where.append(where)

        def seen(self) -> list[dict]:
            return list(self.where)
    return Beacon


def open_placement(spec: ClusterSpec, run_id: str, csv_path: str | None, n_hosts: int | None, n_clients: int,
                   allow_fewer: bool) -> Placement:
    """Connect to the cluster, check its workers, and plan a slot per host; ClusterError (one sentence) otherwise,
    with nothing left connected."""
    placement: Placement = DaskPlacement(spec, run_id) if spec.engine == "dask" else RayPlacement(spec, run_id)
    try:
        placement.check(csv_path)
        placement.plan(n_hosts, n_clients, allow_fewer)
    except BaseException:
        placement.close()
        raise
    return placement
