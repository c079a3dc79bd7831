"""One in-process run: a server thread and N client threads over loopback.

``start(config)`` builds the run (fl.runs.build: everything that can be
refused is refused there, so the caller can show a clear message), then
returns a RunHandle at once; the run goes on in background threads. The
handle's ``snapshot()`` is a consistent copy of the live state, safe to read
from any thread (a Streamlit fragment polls it); ``stop()`` ends the run.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from fl.data import FederatedData, label_distribution
from fl.federation.behaviour import Behaviour, assign_behaviours
from fl.federation.client import ClientSettings, FederatedClient, LocalData
from fl.federation.events import EventType, make_event
from fl.federation.rounds import RunResult
from fl.federation.server import ServerSettings
from fl.runs.build import build_run
from fl.runs.config import RunConfig
from fl.runs.state import RunHandle, launch_rounds, open_run
from fl.runs.store import RunStore


def start(config: RunConfig, *, store: RunStore | None = None, out_dir: str | None = None,
          run_id: str | None = None, on_event: Callable[[dict], None] | None = None,
          with_baselines: bool = False) -> RunHandle:
    """Build the run, bind a loopback server, start N client threads.

    Raises ConfigError / DataError / OSError before any thread starts, so
    the caller can report them; after that, faults show up in the state.
    """
    plan = build_run(config)
    data = plan.data
    assert data is not None
    client_ids = plan.client_ids
    behaviours = assign_behaviours(client_ids, seed=config.seed, dropout_prob=config.dropout_prob,
                                   slow_clients=config.slow_clients, slow_delay=config.slow_delay,
                                   malicious_clients=config.malicious_clients, attack=config.attack,
                                   attack_scale=config.attack_scale)
    settings = ServerSettings(host="127.0.0.1", port=0, max_clients=config.clients,
                              wait_for_clients=config.clients, join_timeout_s=60.0)
    handle = open_run(plan, settings, kind="simulation", store=store, out_dir=out_dir, run_id=run_id,
                      on_event=on_event, client_ids=client_ids,
                      n_samples={cid: int(len(part)) for cid, part in zip(client_ids, data.parts)})
    handle.state.set_roles({cid: _role(b) for cid, b in behaviours.items() if _role(b)})
    if handle.writer is not None:
        handle.writer.save_json("partition.json", partition_summary(data, client_ids))
    host, port = handle.server.address
    compute_lock = threading.Lock()  # the clients of this process take turns on the CPU
    for i, cid in enumerate(client_ids):
        X, y = data.client_data(i)
        local = LocalData(X=X, y=y, feature_names=list(data.dataset.feature_names))
        client = FederatedClient(cid, local, ClientSettings(host=host, port=port, connect_timeout_s=30.0,
                                                            compute_lock=compute_lock),
                                 stop=handle.client_stop, seed=config.seed, behaviour=behaviours[cid])
        thread = threading.Thread(target=client.run, name=f"fl-{cid}", daemon=True)
        thread.start()
        handle.threads.append(thread)
    client_threads = list(handle.threads)
    handle.server.clients_alive = lambda: any(t.is_alive() for t in client_threads)
    if with_baselines:
        handle.state.set_baselines(None, "computing")
        handle.baselines_thread = threading.Thread(target=_baselines, args=(handle, client_ids),
                                                   name=f"fl-baselines-{handle.run_id}", daemon=True)
        handle.baselines_thread.start()
    launch_rounds(handle)
    return handle


def _role(behaviour: Behaviour) -> str:
    """What the user configured this client to be (the server is never told)."""
    parts = []
    if behaviour.malicious:
        parts.append(f"malicious ({behaviour.attack})")
    if behaviour.delay_s > 0:
        parts.append(f"slow (+{behaviour.delay_s:g} s)")
    return ", ".join(parts)


def _baselines(handle: RunHandle, client_ids: list[str]) -> None:
    """Compute the reference numbers beside the run; a failure is an event, not a crash.

    A stopped run stops them too (between two fits): Stop must not wait for
    a hundred local-only fits.
    """
    from fl.runs.baselines import BaselinesCancelled, compute_baselines

    try:
        baselines = compute_baselines(handle.config, handle.data, client_ids,
                                      should_stop=handle.server.stop_requested.is_set)
    except BaselinesCancelled:
        handle.state.set_baselines(None, "skipped")
        return
    except Exception as exc:  # a model that cannot fit the pooled data, say
        handle.state.set_baselines(None, "failed")
        handle.state.apply(make_event(EventType.ERROR, message=f"baselines failed: {exc}"))
        return
    handle.state.set_baselines(baselines)
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
    return {"clients": client_ids, "classes": list(data.dataset.classes), "counts": counts.astype(int).tolist()}
