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
import threading
from typing import Any, Callable

from fl.data import FederatedData, label_distribution
from fl.data.summary import report_from_data
from fl.federation.checkpoint import Checkpoint
from fl.federation.session import ClientHost
from fl.federation.events import EventType, make_event
from fl.federation.rounds import RunResult
from fl.federation.server import ServerSettings
from fl.learning.strategies import Scaffold
from fl.runs.baselines_aside import compute_aside, compute_after_rounds
from fl.runs.build import build_run
from fl.runs.config import RunConfig
from fl.runs.state import RunHandle, launch_rounds, open_run
from fl.runs.store import RunStore
from fl.runs.workers import HostSpec, make_clients, roles, run_in_processes, split_indices, worker_count

JOIN_TIMEOUT_S = 60.0


def start(config: RunConfig, *, store: RunStore | None = None, out_dir: str | None = None,
          run_id: str | None = None, on_event: Callable[[dict], None] | None = None,
          with_baselines: bool = False, resume: Checkpoint | None = None) -> RunHandle:
    """Build the run, bind a loopback server, start N client threads.

    ``resume``: continue that checkpoint's run (same directory and run id)
    after its round, with fresh clients: a model whose clients keep state
    between rounds (the MLP's Adam moments, SGD's step count) then differs
    slightly from a run that never stopped; a stateless one (L-BFGS logistic
    regression) does not. Raises ConfigError / DataError / CheckpointError /
    OSError before any thread starts, so the caller can report them; after
    that, faults show up in the state.
    """
    plan = build_run(config)
    config = plan.config  # a column split says its own number of clients
    data = plan.data
    assert data is not None
    client_ids = plan.client_ids
    # Loopback, for its own clients only: every one of them may be mid-handshake at once (worker processes
    # each pace theirs, but together they come from one address), so the pending caps never refuse them.
    settings = ServerSettings(host="127.0.0.1", port=0, max_clients=config.clients,
                              wait_for_clients=config.clients, join_timeout_s=JOIN_TIMEOUT_S,
                              max_pending_handshakes=max(ServerSettings.max_pending_handshakes, config.clients),
                              max_pending_per_address=max(ServerSettings.max_pending_per_address, config.clients))
    handle = open_run(plan, settings, kind="simulation", store=store, out_dir=out_dir, run_id=run_id,
                      on_event=on_event, client_ids=client_ids,
                      n_samples={cid: int(len(part)) for cid, part in zip(client_ids, data.parts)}, resume=resume)
    handle.state.set_roles(roles(config, client_ids))
    handle.server.emit(EventType.DATA_REPORT, report=report_from_data(
        data.dataset, {cid: data.split.y_train[part] for cid, part in zip(client_ids, data.parts)}))
    if handle.writer is not None:
        handle.writer.save_json("partition.json", partition_summary(data, client_ids))
    host, port = handle.server.address
    n_workers = worker_count(config)
    variates = Scaffold.variates_in(resume.strategy) if resume is not None else {}  # clients' state, resumed
    if n_workers == 0:  # one host in this process
        clients = make_clients(config, data, list(range(len(client_ids))), host, port, handle.client_stop,
                               JOIN_TIMEOUT_S, variates)
        target: Callable[[], Any] = ClientHost(clients, stop=handle.client_stop, name=handle.run_id).run
    else:  # hosts in worker processes, each rebuilding its clients' partitions from the config
        specs = [HostSpec(config.to_dict(), host, port, indices, JOIN_TIMEOUT_S,
                          {client_ids[i]: variates[client_ids[i]] for i in indices if client_ids[i] in variates})
                 for indices in split_indices(len(client_ids), n_workers)]
        target = functools.partial(run_in_processes, specs)
    hosts = threading.Thread(target=target, name=f"fl-hosts-{handle.run_id}", daemon=True)
    hosts.start()
    handle.threads.append(hosts)
    handle.server.clients_alive = hosts.is_alive
    if with_baselines:
        handle.state.set_baselines(None, "computing")
        compute = functools.partial(compute_aside, rounds_over=handle.client_stop.is_set) if n_workers \
            else functools.partial(compute_after_rounds, rounds_over=handle.client_stop)
        handle.baselines_thread = threading.Thread(target=_baselines, args=(handle, client_ids, compute),
                                                   name=f"fl-baselines-{handle.run_id}", daemon=True)
        handle.baselines_thread.start()
    launch_rounds(handle)
    return handle


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
