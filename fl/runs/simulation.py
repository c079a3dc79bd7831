"""One simulated run: a server and N clients over loopback TCP.

``start(config)`` builds the run (fl.runs.build: everything that can be
refused is refused there, so the caller can show a clear message), then
returns a RunHandle at once; the run goes on in the background: the
server's event loop and round loop in threads of this process, the clients
in one host here or in worker processes (fl/runs/workers.py). The
handle's ``snapshot()`` is a consistent copy of the live state, safe to read
from any thread (a Streamlit fragment polls it); ``stop()`` ends the run.
"""

from __future__ import annotations

import functools
import secrets
import tempfile
import threading
from typing import Any, Callable

from fl.data import FederatedData, label_distribution
from fl.data.site_summary import report_from_data
from fl.federation.checkpoint import Checkpoint
from fl.federation.session import ClientHost
from fl.federation.events import EventType, make_event
from fl.federation.liveness import DEFAULT_INTERVAL_S
from fl.federation.rounds import RunResult
from fl.federation.server import ServerSettings
from fl.learning.strategies import Scaffold
from fl.runs.baselines_aside import compute_aside, compute_after_rounds, start_aside
from fl.runs.build import build_run
from fl.runs.cluster_spec import ClusterSpec, is_loopback, parse_cluster, route_address
from fl.runs.config import ConfigError, RunConfig
from fl.runs.live_run import RunHandle, launch_rounds, open_run
from fl.runs.store import RunStore, new_run_id
from fl.runs.workers import HostProcesses, HostSpec, make_clients, probe_fit_seconds, roles, split_indices
from fl.runs.workers import worker_count as local_worker_count
from fl.wire.tls import make_certificates, server_context

JOIN_TIMEOUT_S = 60.0
JOIN_S_PER_CLIENT = 0.02  # measured: 10,000 clients in 2 worker processes joined at ~100 a second on a busy machine
PINGS_PER_S = 200  # a simulation's clients together ping its server about this often at most (heartbeat_interval)
HOSTS_GRACE_S = 15.0  # after bye, a cluster's hosts end by themselves within this, or they are cancelled


def start(config: RunConfig, *, store: RunStore | None = None, out_dir: str | None = None,
          run_id: str | None = None, on_event: Callable[[dict], None] | None = None,
          with_baselines: bool = False, resume: Checkpoint | None = None, host: str | None = None,
          advertise_host: str | None = None) -> RunHandle:
    """Build the run, bind its server, start its clients: in this process, in worker processes, or in hosts
    placed on the cluster that ``config.cluster`` names.

    The server binds ``host`` (127.0.0.1 for a local run, which may not
    listen beyond loopback; for a cluster, by default the address of this
    machine that reaches the cluster) and tells the hosts ``advertise_host``
    (default: ``host``). It admits only clients with the run's fresh random
    token, and on a cluster it speaks TLS with a fresh certificate whose pin
    travels with the hosts' tasks. Every client must join within the join
    timeout, unless ``config.min_clients`` (above 1) allows fewer.

    ``resume``: continue that checkpoint's run (same directory and run id)
    after its round, with fresh clients: a model whose clients keep state
    between rounds (the MLP's Adam moments, SGD's step count) then differs
    slightly from a run that never stopped; a stateless one (L-BFGS logistic
    regression) does not. Raises ConfigError (ClusterError: the cluster
    cannot take the run) / DataError / CheckpointError / OSError before any
    thread starts, so the caller can report them; after that, faults show
    up in the state.
    """
    plan = build_run(config)
    config = plan.config  # a column split says its own number of clients
    data = plan.data
    assert data is not None
    client_ids = plan.client_ids
    run_id = run_id or new_run_id()
    cluster = parse_cluster(config.cluster)
    bind, advertise = network(cluster, host, advertise_host)
    placement = None
    if cluster.is_local:
        n_workers = local_worker_count(config, probe_fit_seconds(plan) if config.workers < 0 else None)
    else:  # refused here, before anything listens, if the cluster cannot take the hosts
        from fl.runs.cluster import open_placement

        placement = open_placement(cluster, run_id, config.csv_path if config.dataset == "csv" else None,
                                   min(config.workers, len(client_ids)) if config.workers > 0 else None,
                                   len(client_ids), allow_fewer=allows_fewer(config))
        n_workers = placement.n_hosts
    # Worker processes start before the server listens, so that they rebuild the data meanwhile
    # (fl/runs/processes.py)
    processes = HostProcesses(n_workers, config.to_dict()) if placement is None and n_workers else None
    aside = start_aside() if with_baselines and processes is not None else None
    try:
        handle = _open(plan, config, placement, n_workers, bind, store=store, out_dir=out_dir, run_id=run_id,
                       on_event=on_event, resume=resume)
    except BaseException:
        for opened in (placement, processes, aside):
            if opened is not None:
                opened.close()
        raise
    host_name, port = handle.server.address
    variates = Scaffold.variates_in(resume.strategy) if resume is not None else {}  # clients' state, resumed
    token, pin = handle.server.settings.token, handle.server.settings.tls_pin
    if n_workers == 0:  # one host in this process
        clients = make_clients(config, data, list(range(len(client_ids))), host_name, port, handle.client_stop,
                               join_timeout(config), variates, token)
        target: Callable[[], Any] = ClientHost(clients, stop=handle.client_stop, name=handle.run_id).run
    else:  # hosts in worker processes or on the cluster, each rebuilding its clients' partitions from the config
        hosts = split_indices(len(client_ids), n_workers)
        if placement is not None:
            hosts = hosts[:len(placement.slots)]  # a partial run that the user allowed: the hosts that found a slot
        specs = [HostSpec(config.to_dict(), advertise or host_name, port, indices, join_timeout(config),
                          {client_ids[i]: variates[client_ids[i]] for i in indices if client_ids[i] in variates},
                          index=n, token=token, pin=pin, blas_threads=1 if placement is not None else None)
                 for n, indices in enumerate(hosts)]
        target = functools.partial((placement or processes).run, specs)
    hosts_thread = threading.Thread(target=target, name=f"fl-hosts-{handle.run_id}", daemon=True)
    if placement is not None:
        handle.server.join_note = placement.note
        handle.on_end.insert(0, functools.partial(_end_placement, handle, placement, hosts_thread))
    hosts_thread.start()
    handle.threads.append(hosts_thread)
    handle.server.clients_alive = hosts_thread.is_alive
    if with_baselines:
        handle.state.set_baselines(None, "computing")
        compute = functools.partial(compute_aside, rounds_over=handle.client_stop.is_set, child=aside) if n_workers \
            else functools.partial(compute_after_rounds, rounds_over=handle.client_stop)
        handle.baselines_thread = threading.Thread(target=_baselines, args=(handle, client_ids, compute),
                                                   name=f"fl-baselines-{handle.run_id}", daemon=True)
        handle.baselines_thread.start()
    launch_rounds(handle)
    return handle


def _open(plan: Any, config: RunConfig, placement: Any, n_workers: int, bind: str, **kwargs: Any) -> RunHandle:
    """The server's settings (token, TLS, who must join), then the run opened and its data reported."""
    data, client_ids = plan.data, plan.client_ids
    expected = len(client_ids)
    if placement is not None:  # only the clients of placed hosts can join
        expected = sum(len(ix) for ix in split_indices(len(client_ids), n_workers)[:len(placement.slots)])
    # For its own clients only: every one of them may be mid-handshake at once (worker processes each pace
    # theirs, but together they come from one address), so the pending caps never refuse them.
    settings = ServerSettings(host=bind, port=0, token=secrets.token_urlsafe(24), max_clients=config.clients,
                              wait_for_clients=expected, join_timeout_s=join_timeout(config),
                              fewest_to_start=config.min_clients if allows_fewer(config) else config.clients,
                              max_pending_handshakes=max(ServerSettings.max_pending_handshakes, config.clients),
                              max_pending_per_address=max(ServerSettings.max_pending_per_address, config.clients),
                              heartbeat_interval_s=heartbeat_interval(config.clients))
    if placement is not None:  # the hosts may be on other machines: TLS, the certificate pinned by its hash
        with tempfile.TemporaryDirectory(prefix="fl-tls-") as directory:  # the key lives on in the context only
            made = make_certificates(directory, [bind if bind not in ("0.0.0.0", "::") else "127.0.0.1"])
            settings.ssl_context = server_context(made["cert"], made["key"])
            settings.tls_pin = made["pin"]
    if expected < settings.fewest_to_start:
        raise ConfigError(f"only {expected} of the {config.clients} clients can join (their hosts found a worker "
                          f"slot), fewer than «min_clients» {config.min_clients}: add workers or lower it")
    handle = open_run(plan, settings, kind="simulation", client_ids=client_ids,
                      n_samples={cid: int(len(part)) for cid, part in zip(client_ids, data.parts)}, **kwargs)
    handle.state.set_roles(roles(config, client_ids))
    handle.server.emit(EventType.DATA_REPORT, report=report_from_data(
        data.dataset, {cid: data.split.y_train[part] for cid, part in zip(client_ids, data.parts)}))
    if handle.writer is not None:
        handle.writer.save_json("partition.json", partition_summary(data, client_ids))
        handle.on_end.append(functools.partial(_record_took_part, handle))
    return handle


def join_timeout(config: RunConfig) -> float:
    """Seconds every client has to join: the setting, else 60, or 20 ms per client for many (the hosts rebuild
    the data and their clients join one after the other)."""
    return config.join_timeout or max(JOIN_TIMEOUT_S, JOIN_S_PER_CLIENT * config.clients)


def heartbeat_interval(clients: int) -> float:
    """A simulation's heartbeat interval: the default, or longer with many clients, so that together they ping
    about PINGS_PER_S times a second. 10,000 clients pinging every 5 s are 2,000 pings and 2,000 pongs a second
    on the cores that train; while the last thousands joined, that traffic stalled the joins (docs/performance.md,
    "Simulations on a cluster"). A simulation's hosts are processes the run started: one that dies closes its
    sockets and is seen at once; heartbeats only catch a stalled or unplugged one, a little later."""
    return max(DEFAULT_INTERVAL_S, clients / PINGS_PER_S)


def allows_fewer(config: RunConfig) -> bool:
    """Whether the user let the run start with fewer clients than it has: ``min_clients`` set above 1 (and below
    the number of clients). By default every client must join, or the run fails."""
    return 1 < config.min_clients < config.clients


def network(cluster: ClusterSpec, host: str | None, advertise_host: str | None) -> tuple[str, str | None]:
    """The address the server binds and the one the hosts are told; a local run stays on loopback."""
    if cluster.is_local:
        if host is not None and not is_loopback(host):
            raise ConfigError(f"a local run listens on loopback only, not {host}: name a cluster («cluster») to "
                              "serve hosts on other machines")
        return host or "127.0.0.1", advertise_host
    try:
        bind = host or route_address(cluster.host)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if advertise_host is None and bind in ("0.0.0.0", "::"):
        raise ConfigError(f"the server binds {bind} (every interface): tell the hosts an address of this machine "
                          "that the cluster's workers reach, with --advertise-host")
    return bind, advertise_host


def _end_placement(handle: RunHandle, placement: Any, hosts: threading.Thread) -> None:
    """At the run's end: no task of it left on the cluster, where its hosts ran in summary.json.

    Hosts that never started are cancelled at once; the others have been
    told bye and end by themselves within moments, and are cancelled only if
    they do not.
    """
    placement.cancel_unstarted()
    hosts.join(HOSTS_GRACE_S)
    placement.close()
    hosts.join(HOSTS_GRACE_S)  # a cancelled host's task returns at once: its outcome is in the summary
    if handle.writer is not None:
        handle.writer.update_summary(**placement.summary())


def _record_took_part(handle: RunHandle) -> None:
    """summary.json says how many clients took part, of how many the run had."""
    handle.writer.update_summary(**took_part(handle.state.snapshot(client_rows=False)))


def took_part(snapshot: dict) -> dict[str, int]:
    """Clients that joined (took part) and clients the run had, from a snapshot."""
    return {"clients_took_part": int(snapshot.get("clients_joined") or 0),
            "clients_planned": int(snapshot["config"]["clients"])}


def _baselines(handle: RunHandle, client_ids: list[str], compute: Callable[..., dict] | None = None) -> None:
    """Compute the reference numbers beside the run; a failure is a reason in them, not a crash.

    ``compute``: ``compute_baselines`` by default (in this thread); a run passes ``compute_aside``, which
    computes them in a low-priority child process, so they never slow the rounds (fl/runs/baselines_aside.py).

    Each baseline fails on its own (fl/runs/baselines.py); only data that
    cannot be prepared at all fails the three, each with that reason. The
    quick ones show as soon as they are known. A stopped run stops them too
    (between two fits; those known stay): Stop must not wait for a hundred
    local-only fits.
    """
    from fl.runs.baselines import BaselinesCancelled, all_missing, compute_baselines, missing

    known: dict = {}

    def partial(part: dict) -> None:
        known.update(part)
        handle.state.set_baselines(dict(known), "computing")

    status = "ready"
    try:
        baselines = (compute or compute_baselines)(handle.config, handle.data, client_ids,
                                      should_stop=handle.server.stop_requested.is_set, on_partial=partial)
    except BaselinesCancelled:
        stopped = missing("the run was stopped before it was computed", per_client={})
        handle.state.set_baselines({**known, "local_only": stopped} if known else None, "skipped")
        return
    except Exception as exc:  # the data could not be prepared for any of them
        baselines, status = all_missing(f"the baselines could not be computed: {exc}"), "failed"
        handle.state.apply(make_event(EventType.ERROR, message=f"baselines failed: {exc}"))
    handle.state.set_baselines(baselines, status)
    if handle.writer is not None:
        handle.writer.save_json("baselines.json", baselines)
        handle.writer.update_summary(baselines=baselines)


def run(config: RunConfig, **kwargs: Any) -> RunResult:
    """Start and wait: the blocking form, for scripts and tests."""
    handle = start(config, **kwargs)
    handle.wait()
    assert handle.result is not None
    return handle.result


def partition_summary(data: FederatedData, client_ids: list[str]) -> dict[str, Any]:
    """Who holds how many rows of which class: the clients x classes heatmap."""
    counts = label_distribution(data.split.y_train, data.parts, data.dataset.classes)
    summary = {"clients": client_ids, "classes": list(data.dataset.classes), "counts": counts.astype(int).tolist()}
    groups = data.dataset.groups
    if data.site_names and groups is not None:  # a column split: which column, and each client's value
        summary["split_column"] = {"column": groups.column, "values": list(groups.values)}
    return summary
