"""A hosted run: the server binds a real address and waits for remote clients.

The same server and round loop as a simulation, without client threads: the
clients are processes on other machines (``python client_new.py ...``). The
server evaluates on the held-out split of its own copy of the dataset, or,
with no data of its own, federatedly.
"""

from __future__ import annotations

from typing import Callable

from fl.runs.config import RunConfig
from fl.data import load_dataset, split_server_holdout, standardization_stats
from fl.data.resources import check_config_size
from fl.federation.rounds import ServerData
from fl.runs.store import RunStore, RunWriter, new_run_id
from fl.runs.state import RunHandle, RunState, launch_rounds
from fl.federation.server import FederatedServer, ServerSettings
from fl.federation.task import Task, make_preprocess


def server_task_and_data(config: RunConfig) -> tuple[Task, ServerData]:
    """The task and the server's own held-out data for ``config``'s dataset.

    The server keeps the test split (and, for stacking, the validation split);
    the rest of its copy serves only to compute the standardisation statistics
    that every client applies. Raises DataError on bad data, ResourceError when too big.
    """
    check_config_size(config)
    ds = load_dataset(config.dataset, csv_path=config.csv_path, target=config.target,
                      n_samples=config.n_samples, n_features=config.n_features, n_classes=config.n_classes,
                      seed=config.seed, target_bins=config.target_bins)
    split = split_server_holdout(ds, test_size=config.test_size, val_size=config.effective_val_size,
                                 seed=config.seed)
    preprocess = make_preprocess(standardization_stats(split.X_train) if config.standardize else None,
                                 ds.target_edges)
    task = Task(config.model, dict(config.model_params), int(ds.X.shape[1]), list(ds.classes),
                list(ds.feature_names), preprocess, local_test_size=config.local_test_size)
    has_val = len(split.X_val) > 0
    return task, ServerData(split.X_test, split.y_test, split.X_val if has_val else None,
                            split.y_val if has_val else None)


def host(config: RunConfig, settings: ServerSettings, *, store: RunStore | None = None,
         out_dir: str | None = None, run_id: str | None = None,
         on_event: Callable[[dict], None] | None = None) -> RunHandle:
    """Bind the server and wait for clients in the background.

    Raises ConfigError, DataError, or OSError (e.g. the port is in use)
    before any thread starts.
    """
    config.validate()
    task, data = server_task_and_data(config)
    run_id = run_id or new_run_id()
    state = RunState(run_id, config, [], {})
    state.kind = "hosted"
    state.n_classes = len(task.classes)
    early: list[dict] = []  # events before the run directory exists (binding may fail: no empty run)
    writer: RunWriter | None = None

    def sink(event: dict) -> None:
        state.apply(event)
        if writer is None:
            early.append(event)
        else:
            writer.on_event(event)
        if on_event is not None:
            on_event(event)

    server = FederatedServer(task, settings, on_event=sink, run_id=run_id)
    server.bind()
    if out_dir or store is not None:
        writer = RunWriter(out_dir, config.to_dict(), run_id) if out_dir else store.create(run_id, config.to_dict())
        for event in early:
            writer.on_event(event)
    handle = RunHandle(run_id, config, state, None, server, kind="hosted", writer=writer)
    launch_rounds(handle, data)
    return handle
