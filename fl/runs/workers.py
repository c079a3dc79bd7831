"""Where a simulation's clients run: one host in this process, or hosts in worker processes.

A host (fl/federation/session.py) runs many clients on one event loop and
one compute thread. A short simulation has one host in a thread of the
server's own process; a longer one spreads its clients over K worker
processes (``HostProcesses``: from a warm forkserver, with the
engine already imported; fl/runs/processes.py), or, with ``--cluster``, as
long-running tasks on a Dask or Ray cluster (fl/runs/cluster.py).
Every worker rebuilds the run's data from its config (the split is a pure,
seeded function of it) and takes only its clients' partitions: no data
crosses a process boundary, and clients still reach the server over real TCP.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from threadpoolctl import threadpool_limits

from fl.federation.behaviour import Behaviour, assign_behaviours
from fl.federation.client import ClientResult, ClientSettings, FederatedClient, LocalData
from fl.federation.session import ClientHost

# When the expected training cannot be measured (a model grown from the sites' sums): below this many clients
# the worker processes' start-up and data rebuild cost more than the second core saves (bench/bench_scale.py).
AUTO_PROCESSES_FROM = 50
# Each client's share of a round beyond its fit, which worker processes also take off the server's core: its
# frames through the host's event loop and its evaluation (10 digits clients in process: 17.3 ms of the host loop's
# CPU and 6.3 ms of evaluations a round; docs/performance.md "Round overhead", where a round's CPU goes).
CLIENT_ROUND_S = 0.0025
# From this many clients, processes always: one interpreter would hold every client's connection, fit and
# heartbeat beside the server's (the 1,000- and 10,000-client runs of docs/performance.md "Scale" use processes).
PROCESSES_FROM_CLIENTS = 1000
PROBE_ROWS = 2000  # the timing fit of ``probe_fit_seconds`` uses at most this many of a client's rows


@dataclass
class HostSpec:
    """What one host needs: plain data, so that it crosses to a worker process by pickle of our own."""

    config: dict[str, Any]
    host: str
    port: int
    indices: list[int]  # partitions (= clients) this host runs
    connect_timeout_s: float = 60.0
    variates: dict[str, Any] | None = None  # a resumed SCAFFOLD run: its clients' control variates, by id
    index: int = 0  # which host of the run
    token: str | None = None  # the run's fresh secret: the server admits no client without it
    pin: str | None = None  # SHA-256 of the server's fresh certificate (a cluster run speaks TLS), or None
    # BLAS threads of the host's process while it runs (None: as they are). A local worker process gets
    # cores // processes (``HostProcesses``); a cluster host gets 1, one per worker slot, as local hosts have
    # when they fill the cores: the same matrix products in the same order, so the numbers equal a local run's.
    blas_threads: int | None = None


def worker_count(config: Any, fit_seconds: float | None = None, start_s: float | None = None) -> int:
    """How many worker processes (0: the clients run in this process): ``config.workers``, or when it is auto
    (-1), what is fastest for this run by its expected training.

    In-process clients share the server's interpreter and one core; worker processes train on every core
    but cost ``start_s`` to start (by default what fl/runs/processes.py says they would cost now: from a
    warm forkserver, a few tenths of a second). With ``fit_seconds`` (one client's local training, as
    ``probe_fit_seconds`` measured it), the clients' work is about ``(fit_seconds + CLIENT_ROUND_S) × clients × rounds``; the
    processes pay when the share of it that the other cores take off exceeds their start, and always from
    PROCESSES_FROM_CLIENTS clients. Without a measurement, the client count decides (AUTO_PROCESSES_FROM)."""
    if config.workers >= 0:
        return min(config.workers, config.clients)
    cores = os.cpu_count() or 1
    if cores < 2 or config.clients < 2:
        return 0
    if fit_seconds is None:
        processes = config.clients >= AUTO_PROCESSES_FROM
    else:
        work = (fit_seconds + CLIENT_ROUND_S) * config.clients * config.rounds
        if start_s is None:
            from fl.runs.processes import start_seconds

            start_s = start_seconds()
        processes = work * (1 - 1 / cores) > start_s or config.clients >= PROCESSES_FROM_CLIENTS
    return max(1, min(cores, config.clients)) if processes else 0


def probe_fit_seconds(plan: Any) -> float | None:
    """One client's local training, timed: the first client's model fitted once (on at most PROBE_ROWS of its
    rows, scaled to all of them) from the run's initial parameters, for ``worker_count``. A throwaway model
    with a seed of its own: nothing of it reaches the run. None for models the server grows from sums."""
    from fl.learning.models import get_model  # noqa: PLC0415 (the learning layer's registry, only when probing)
    from fl.learning.training import LocalModel  # noqa: PLC0415
    from fl.data import apply_standardization  # noqa: PLC0415

    config, task, data = plan.config, plan.task, plan.data
    adapter = get_model(config.model)
    if data is None or adapter.statistics or not data.parts:
        return None
    X, y = data.client_data(0)
    rows = len(y)
    if rows == 0:
        return None
    take = min(rows, PROBE_ROWS)
    X, y = apply_standardization(X[:take], task.standardize), y[:take]
    classes = list(task.classes)
    model = LocalModel(config.model, task.model_params, classes, task.n_features, seed=config.seed)
    initial = None if adapter.one_shot else adapter.initial_parameters(task.model_params, classes, task.n_features,
                                                                       config.seed)
    started = time.perf_counter()
    try:
        model.fit(X, y, global_arrays=initial, epochs=config.local_epochs, config={**config.fit_config(), "seed": 0})
    except Exception:  # noqa: BLE001 (a probe that cannot fit decides nothing; the run will say why itself)
        return None
    return (time.perf_counter() - started) * rows / take


def split_indices(n_clients: int, n_hosts: int) -> list[list[int]]:
    """Contiguous ranges of client indices, as even as can be."""
    n_hosts = max(1, n_hosts)
    return [list(range(i * n_clients // n_hosts, (i + 1) * n_clients // n_hosts)) for i in range(n_hosts)]


def make_clients(config: Any, data: Any, indices: list[int], host: str, port: int, stop: threading.Event | None,
                 connect_timeout_s: float, variates: dict[str, Any] | None = None, token: str | None = None,
                 pin: str | None = None) -> list[FederatedClient]:
    """The clients of ``indices``, each with its own partition, seed and (simulated) behaviour, and (a resumed
    SCAFFOLD run) the control variate it had; they present ``token`` and, with a ``pin``, accept only the
    server certificate of that fingerprint."""
    from fl.runs.build import client_ids_for
    from fl.wire.tls import client_context

    all_ids = client_ids_for(data)
    behaviours = assign_behaviours(all_ids, seed=config.seed, dropout_prob=config.dropout_prob,
                                   slow_clients=config.slow_clients, slow_delay=config.slow_delay,
                                   malicious_clients=config.malicious_clients, attack=config.attack,
                                   attack_scale=config.attack_scale)
    clients = []
    ssl_context = client_context(pin_sha256=pin) if pin else None  # one per host, shared by its clients
    for i in indices:
        X, y = data.client_data(i)
        local = LocalData(X=X, y=y, feature_names=list(data.dataset.feature_names))
        settings = ClientSettings(host=host, port=port, token=token, connect_timeout_s=connect_timeout_s,
                                  server_up=True, ssl_context=ssl_context, pin_sha256=pin)
        client = FederatedClient(all_ids[i], local, settings, stop=stop, seed=config.seed,
                                 behaviour=behaviours[all_ids[i]])
        client.variate = (variates or {}).get(all_ids[i])
        clients.append(client)
    return clients


def roles(config: Any, client_ids: list[str]) -> dict[str, str]:
    """What the user made each client (malicious, slow); the server is never told."""
    behaviours = assign_behaviours(client_ids, seed=config.seed, dropout_prob=config.dropout_prob,
                                   slow_clients=config.slow_clients, slow_delay=config.slow_delay,
                                   malicious_clients=config.malicious_clients, attack=config.attack,
                                   attack_scale=config.attack_scale)
    return {cid: role for cid, b in behaviours.items() if (role := describe_role(b))}


def describe_role(behaviour: Behaviour) -> str:
    parts = []
    if behaviour.malicious:
        parts.append(f"malicious ({behaviour.attack})")
    if behaviour.delay_s > 0:
        parts.append(f"slow (+{behaviour.delay_s:g} s)")
    return ", ".join(parts)


def run_host(spec: HostSpec, data: Any = None) -> list[dict[str, Any]]:
    """A worker process's job: rebuild the data (unless ``data``, rebuilt from the same config, is given), run
    its clients until the server says bye."""
    from fl.runs.build import load_data
    from fl.runs.config import RunConfig

    config = RunConfig.from_dict(spec.config)
    with threadpool_limits(spec.blas_threads) if spec.blas_threads else contextlib.nullcontext():
        data = data if data is not None else load_data(config)
        clients = make_clients(config, data, spec.indices, spec.host, spec.port, None, spec.connect_timeout_s,
                               spec.variates, spec.token, spec.pin)
        return [vars(result) for result in ClientHost(clients, name=f"w{spec.indices[0]}").run()]


class HostProcesses:
    """Worker processes for a run's hosts, started before its server listens (fl/runs/processes.py: from the
    warm forkserver, with the engine already imported); each waits for the HostSpec that says where to
    connect and which clients to run, then runs them and sends back their results.

    The spec goes to the child pickled over a pipe of our own (parent to child, as multiprocessing does); the
    results come back as JSON. A child that ends without its results (killed, crashed) is an error.
    """

    def __init__(self, n: int, config: dict[str, Any] | None = None) -> None:
        """``config``: the run's (``RunConfig.to_dict``), so that each child rebuilds the data while the run's
        server starts, not after."""
        from fl.runs.processes import context

        ctx = context()
        self.blas_threads = max(1, (os.cpu_count() or 1) // max(1, n))
        self.pipes, self.procs = [], []
        for i in range(n):
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(target=_host_main, args=(theirs, config), name=f"fl-host-{i}", daemon=True)
            proc.start()
            theirs.close()
            self.pipes.append(mine)
            self.procs.append(proc)

    def run(self, specs: list[HostSpec]) -> list[ClientResult]:
        """Hand each process its host, wait until every host has ended, return every client's result."""
        from multiprocessing.connection import wait

        try:
            waiting = {}
            for pipe, proc, spec in zip(self.pipes, self.procs, specs):
                spec.blas_threads = spec.blas_threads or self.blas_threads
                try:
                    pipe.send(spec)
                except OSError:  # it is gone already: said below, with its exit code
                    pass
                waiting[pipe] = proc
            outputs: list[dict[str, Any]] = []
            errors: list[str] = []  # said once every host has ended: a failed host does not end the others
            while waiting:
                for ready in wait(list(waiting)):
                    proc = waiting.pop(ready)
                    try:
                        answer = json.loads(ready.recv_bytes())
                    except (EOFError, OSError, ValueError):
                        proc.join(5)
                        errors.append(f"worker process {proc.name} ended (exit code {proc.exitcode}) without its "
                                      "clients' results")
                        continue
                    if "error" in answer:
                        errors.append(f"worker process {proc.name}: {answer['error']}")
                    else:
                        outputs.extend(answer["results"])
            if errors:
                raise RuntimeError("; ".join(errors))
            return [ClientResult(**result) for result in outputs]
        finally:
            self.close()

    def close(self, timeout_s: float = 5.0) -> None:
        """Processes given no host end now; the others are waited for (their clients have ended), then killed."""
        for pipe in self.pipes:
            try:  # a child still waiting for its spec ends (told, not left to wait for an EOF)
                pipe.send(None)
            except OSError:
                pass
            pipe.close()
        deadline = time.monotonic() + timeout_s
        for proc in self.procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(1)


def _host_main(pipe: Any, config: dict[str, Any] | None) -> None:
    """A worker process: rebuild the run's data, wait for its host's spec (None: the run did not need it), run
    it, answer in JSON."""
    from fl.runs.processes import child_setup

    child_setup()
    data, failure = None, None
    if config is not None:
        from fl.runs.build import load_data
        from fl.runs.config import RunConfig

        try:
            data = load_data(RunConfig.from_dict(config))
        except Exception as exc:  # noqa: BLE001 (said when the host is asked for)
            failure = exc
    try:
        spec = pipe.recv()  # from the run's own process, which started this one
    except (EOFError, OSError):
        return
    if spec is None:  # the run did not need this host
        return
    try:
        if failure is not None:
            raise failure
        answer: dict[str, Any] = {"results": run_host(spec, data if spec.config == config else None)}
    except Exception as exc:  # noqa: BLE001 (the run reports it; the clients' sockets are closed already)
        answer = {"error": f"{type(exc).__name__}: {exc}"}
    try:
        pipe.send_bytes(json.dumps(answer, default=_plain).encode())
    except OSError:  # the run's process is gone
        pass


def _plain(value: Any) -> Any:
    """numpy's scalars and arrays in a client's result, as JSON has them."""
    return value.tolist() if hasattr(value, "tolist") else str(value)
