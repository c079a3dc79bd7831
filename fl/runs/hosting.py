"""A hosted run: the server binds a real address and waits for remote clients.

The same plan, server and round loop as a simulation, without client
threads: the clients are processes on other machines (``python client_new.py
...``). The server evaluates on the held-out split of its own copy of the
dataset, or, with no data of its own, federatedly. The dashboard's Deploy
page and ``server_new.py`` both host through here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from fl.federation.server import ServerSettings
from fl.data.site_summary import report_from_data
from fl.federation.checkpoint import Checkpoint
from fl.federation.events import EventType
from fl.runs.build import RunPlan, build_run
from fl.runs.config import RunConfig
from fl.runs.live_run import RunHandle, launch_rounds, open_run
from fl.runs.store import RunStore
from fl.runs.tls_dirs import remove_tls_dir


def host(config: RunConfig, settings: ServerSettings, *, store: RunStore | None = None,
         out_dir: str | None = None, run_id: str | None = None, on_event: Callable[[dict], None] | None = None,
         classes: list | None = None, n_features: int | None = None,
         resume: Checkpoint | None = None, data_at_clients: bool = False) -> RunHandle:
    """Bind the server and wait for clients in the background.

    With ``classes`` and ``n_features`` the server has no data of its own; with
    ``data_at_clients`` neither, and the task is built from the sites' summaries.
    ``resume``: go on after that checkpoint's round, in the same directory
    under the same run id (clients with ``--reconnect`` rejoin it).
    Raises ConfigError, DataError, CheckpointError, or OSError (e.g. the
    port is in use) before any thread starts. ``settings.tls_dir`` (the
    certificates made for this server alone) is deleted when the run ends,
    and at once if it cannot start.
    """
    try:
        plan = build_run(config, classes=classes, n_features=n_features, data_at_clients=data_at_clients)
        handle = open_run(plan, settings, kind="hosted", store=store, out_dir=out_dir, run_id=run_id,
                          on_event=on_event, resume=resume)
    except BaseException:
        remove_tls_dir(settings.tls_dir)  # certificates made for a server that never started
        raise
    handle.on_end.append(lambda: remove_tls_dir(settings.tls_dir))  # its private key ends with it
    if plan.data is not None and plan.summaries is None:  # the server's own data (the sites report theirs)
        handle.server.emit(EventType.DATA_REPORT, report=report_from_data(plan.data.dataset,
                                                                          server_holds=server_holds(plan)))
    launch_rounds(handle)
    return handle


def rows_at_sites(config: RunConfig) -> bool:
    """A CSV run with no file here: every row is at the sites, whose summaries make the task."""
    return config.dataset == "csv" and not config.csv_path


def server_holds(plan: RunPlan) -> dict:
    """What a server with its own data keeps of it (the held-out rows it scores on), for its data report."""
    config, split = plan.config, plan.data.split
    name = Path(config.csv_path).name if config.dataset == "csv" and config.csv_path else config.dataset
    return {"name": name, "test_rows": int(len(split.y_test)), "validation_rows": int(len(split.y_val))}
