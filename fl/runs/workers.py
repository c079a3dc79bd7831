"""Where a simulation's clients run: one host in this process, or hosts in worker processes.

A host (fl/federation/session.py) runs many clients on one event loop and
one compute thread. A small simulation has one host in a thread of the
server's own process; a large one spreads its clients over K worker
processes launched through joblib (loky), or, with ``--cluster``, as
long-running tasks on a Dask or Ray cluster (fl/runs/cluster.py).
Every worker rebuilds the run's data from its config (the split is a pure,
seeded function of it) and takes only its clients' partitions: no data
crosses a process boundary, and clients still reach the server over real TCP.
"""

from __future__ import annotations

import contextlib
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
# What worker processes cost a run beyond an in-process host: spawning, importing the engine and rebuilding the
# data in each, shutting them down (quiet 2 cores, 10 digits clients: 17.0 s against 7.6 s for the whole run, of
# which 0.65 s the rounds saved; bench/bench_overhead.py, docs/performance.md "Round overhead").
PROCESS_START_S = 8.0
# Each client's share of a round beyond its fit, which worker processes also take off the server's core: its
# frames through the host's event loop and its evaluation (10 digits clients in process: 17.3 ms of the host loop's
# CPU and 6.3 ms of evaluations a round; docs/performance.md "Round overhead", where a round's CPU goes).
CLIENT_ROUND_S = 0.0025
# From this many clients, processes always: one interpreter would hold every client's connection, fit and
# heartbeat beside the server's (the 1,000- and 10,000-client runs of docs/performance.md "Scale" use processes).
PROCESSES_FROM_CLIENTS = 1000
PROBE_ROWS = 2000  # the timing fit of ``probe_fit_seconds`` uses at most this many of a client's rows

_loky_runs = 0
_loky_lock = threading.Lock()


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
    # BLAS threads of the host's process while it runs (None: as they are). Loky gives each worker process
    # cores // processes; a cluster host gets 1, one per worker slot, as loky's hosts have when they fill the
    # cores: the same matrix products in the same order, so the numbers equal a local run's on one machine.
    blas_threads: int | None = None


def worker_count(config: Any, fit_seconds: float | None = None) -> int:
    """How many worker processes (0: the clients run in this process): ``config.workers``, or when it is auto
    (-1), what is fastest for this run by its expected training.

    In-process clients share the server's interpreter and one core; worker processes train on every core
    but cost PROCESS_START_S. With ``fit_seconds`` (one client's local training, as ``probe_fit_seconds``
    measured it), the clients' work is about ``(fit_seconds + CLIENT_ROUND_S) × clients × rounds``; the
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
        processes = work * (1 - 1 / cores) > PROCESS_START_S or config.clients >= PROCESSES_FROM_CLIENTS
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


def run_host(spec: HostSpec) -> list[dict[str, Any]]:
    """A worker process's job: rebuild the data, run its clients until the server says bye."""
    from fl.runs.build import load_data
    from fl.runs.config import RunConfig

    config = RunConfig.from_dict(spec.config)
    with threadpool_limits(spec.blas_threads) if spec.blas_threads else contextlib.nullcontext():
        data = load_data(config)
        clients = make_clients(config, data, spec.indices, spec.host, spec.port, None, spec.connect_timeout_s,
                               spec.variates, spec.token, spec.pin)
        return [vars(result) for result in ClientHost(clients, name=f"w{spec.indices[0]}").run()]


def run_in_processes(specs: list[HostSpec]) -> list[ClientResult]:
    """Run the hosts in worker processes through joblib; blocks until every host has ended.

    With joblib's default backend (loky) its worker processes are shut down
    when no simulation uses them any more, so a finished run leaves no
    process behind. A cluster's hosts are placed by fl/runs/cluster.py instead.
    """
    global _loky_runs
    from joblib import Parallel, delayed
    from joblib._parallel_backends import LokyBackend
    from joblib.parallel import get_active_backend

    loky = isinstance(get_active_backend()[0], LokyBackend)
    with _loky_lock:
        _loky_runs += loky
    try:
        outputs = Parallel(n_jobs=len(specs))(delayed(run_host)(spec) for spec in specs)
    finally:
        with _loky_lock:
            _loky_runs -= loky
            if loky and _loky_runs == 0:
                from joblib.externals.loky import get_reusable_executor

                get_reusable_executor().shutdown(wait=True, kill_workers=True)
    return [ClientResult(**result) for output in outputs for result in output]
