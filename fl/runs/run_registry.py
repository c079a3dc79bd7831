"""Every run of this process, simulated or hosted, in one place.

The dashboard keeps exactly one RunRegistry per process (Streamlit's
``st.cache_resource``), so a rerun, a page switch, a second tab or a reload
finds the same runs instead of starting them again.
"""

from __future__ import annotations

import threading

from fl.runs import hosting
from fl.runs import simulation
from fl.runs.config import RunConfig
from fl.runs.store import RunStore
from fl.runs.live_run import RunHandle
from fl.federation.server import ServerSettings


class RunRegistry:
    """Thread-safe map of run id -> RunHandle, backed by a RunStore on disk."""

    def __init__(self, store: RunStore):
        self.store = store
        self._lock = threading.Lock()
        self._handles: dict[str, RunHandle] = {}

    def start(self, config: RunConfig) -> RunHandle:
        """A simulated run with baselines; raises ConfigError/DataError/OSError up front."""
        handle = simulation.start(config, store=self.store, with_baselines=True)
        with self._lock:
            self._handles[handle.run_id] = handle
        return handle

    def host(self, config: RunConfig, settings: ServerSettings) -> RunHandle:
        """A hosted run for remote clients (a CSV run without a file here: a coordinator that builds its task
        from the sites' summaries); raises ConfigError/DataError/OSError up front."""
        handle = hosting.host(config, settings, store=self.store, data_at_clients=hosting.rows_at_sites(config))
        with self._lock:
            self._handles[handle.run_id] = handle
        return handle

    def resume(self, run_id: str, settings: ServerSettings | None = None) -> RunHandle:
        """Continue a stored run after its checkpoint's round, under its id: a simulation with fresh clients
        and baselines, or (with ``settings``) a hosted run whose clients rejoin (``--reconnect``).

        Raises CheckpointError (why it cannot be resumed), ConfigError, DataError or OSError up front; a run
        this process is still running is refused.
        """
        from fl.federation.checkpoint import CheckpointError
        from fl.runs.resume import open_resume

        live = self.get(run_id)
        if live is not None and not live.done:
            raise CheckpointError(f"run {run_id} is still running")
        resumable = open_resume(self.store.root / run_id)
        if settings is not None:
            handle = hosting.host(resumable.config, settings, store=self.store, run_id=resumable.run_id,
                                  resume=resumable.checkpoint, data_at_clients=hosting.rows_at_sites(resumable.config))
        else:
            handle = simulation.start(resumable.config, store=self.store, run_id=resumable.run_id,
                                      resume=resumable.checkpoint, with_baselines=True)
        with self._lock:
            self._handles[handle.run_id] = handle
        return handle

    def get(self, run_id: str | None) -> RunHandle | None:
        with self._lock:
            return self._handles.get(run_id) if run_id else None

    def handles(self) -> list[RunHandle]:
        """Newest first."""
        with self._lock:
            return sorted(self._handles.values(), key=lambda h: h.state.started_at, reverse=True)

    def active(self, kind: str | None = None) -> list[RunHandle]:
        return [h for h in self.handles() if not h.done and (kind is None or h.kind == kind)]

    def stop(self, run_id: str) -> None:
        handle = self.get(run_id)
        if handle is not None:
            handle.stop()

    def stop_all(self, timeout: float = 5.0) -> None:
        for handle in self.handles():
            handle.stop()
        for handle in self.handles():
            handle.wait(timeout)

    def forget(self, run_id: str) -> None:
        """Drop a finished run from memory (its files stay in the store)."""
        with self._lock:
            handle = self._handles.get(run_id)
            if handle is not None and handle.done:
                del self._handles[run_id]
