"""A scripted hostile site for the data-summary exchange, and a whole run in a process of its own for memory.

``attempt`` speaks the protocol by hand over a raw socket (hello, then a
summary frame written with ``json.dumps``'s ASCII escapes, so a lone
surrogate travels as ``\\ud800`` the way a hostile peer would send it) and
returns the server's answer: an ``error``, or ``welcome`` for a summary the
server takes. Hostile connections come from 127.0.0.2 so that whatever the
server does to a misbehaving address never touches the honest sites on
127.0.0.1.

``python -m tests.summary_attack_helpers SCENARIO`` hosts three honest
breast-cancer sites and, unless SCENARIO is ``clean``, a hostile one, and
prints one JSON line with the process's peak memory (server and honest
clients share the process) and what happened (tests/test_hostile_summaries.py).
"""

from __future__ import annotations

import json
import resource
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from fl.data import load_client_frame
from fl.federation.client import LocalData
from fl.federation.summary_exchange import client_summary
from fl.wire import Hello, Ping, Pong, Summarize
from fl.wire.reference_peer import Connection
from tests.protocol_helpers import raw_frame

HOSTILE_SOURCE = "127.0.0.2"
TARGET = "diagnosis"


def honest_summary(path: Path, cid: str, request: Summarize, seed: int = 0) -> dict:
    """The summary an honest client sends for its CSV (a starting point to lie from)."""
    own = load_client_frame(str(path), TARGET)
    data = LocalData(X=own.X, y=own.y, feature_names=own.names, frame=own.frame, target_values=own.target_values)
    s = client_summary(data, cid, seed, request)
    return {"rows": s.rows, "labels": s.labels, "columns": s.columns, "report": s.report}


def attempt(port: int, summary: dict, n_samples: int, cid: str, timeout: float = 30.0,
            on_welcome: str = "close") -> Any:
    """One hostile site: hello, the (possibly lying) summary, then the server's answer (pings answered while it
    waits for the others); after a welcome it leaves at once (``on_welcome="close"``)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(HOSTILE_SOURCE, 0)) as sock:
        conn = Connection(sock)
        conn.send(Hello(client_id=cid, n_samples=n_samples, n_features=0, features=["summary"]))
        request = conn.recv(idle_timeout=10)
        if not isinstance(request, Summarize):
            return request
        sock.sendall(raw_frame({"type": "summary", **summary}))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reply = conn.recv(idle_timeout=max(0.1, deadline - time.monotonic()))
            if isinstance(reply, Ping):
                conn.send(Pong(t=reply.t))
                continue
            return reply
    raise TimeoutError("no answer to the summary")


class HostileThread(threading.Thread):
    """``attempt`` in a thread: a first-cohort site waits for the others before its answer comes."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(daemon=True)
        self.args, self.kwargs, self.reply, self.error = args, kwargs, None, None

    def run(self) -> None:
        try:
            self.reply = attempt(*self.args, **self.kwargs)
        except Exception as exc:  # reported by the test
            self.error = exc


def label_bomb(base: dict | None = None, rows: int = 2_001) -> dict:
    """2,000 short labels and one of 50,000 characters (74 KB): a fixed-width label array of it is 400 MB.
    With ``base``, its columns (so that a server without the checks would build a task with it)."""
    labels = [[f"l{i}", 1] for i in range(rows - 1)] + [["x" * 50_000, 1]]
    return {"rows": rows, "labels": labels, "columns": base["columns"] if base else [], "report": {}}


def long_labels(base: dict, n: int = 98) -> dict:
    """A summary a server must accept: ``n`` labels of 256 characters (with the honest two, a full task)."""
    out = json.loads(json.dumps(base))
    out["labels"] = [[f"{i:03d}" + "é" * 253, 1] for i in range(n)]
    out["labels"][0][1] = base["rows"] - (n - 1)
    return out


def main(scenario: str) -> None:
    """Host three honest sites (and the scenario's hostile one); print peak memory and the outcome as JSON."""
    from fl.federation.server import ServerSettings
    from fl.runs import hosting
    from fl.runs.config import RunConfig
    from tests.site_helpers import run_sites, site_client
    from tests.test_cross_silo import make_sites

    directory = Path(tempfile.mkdtemp(prefix="fl-attack-"))
    paths = make_sites(directory)
    hostile = scenario != "clean"
    accepted = scenario == "long_labels"
    config = RunConfig(dataset="csv", target=TARGET, model="logreg", rounds=5, min_clients=3, clients=3)
    handle = hosting.host(config, ServerSettings(port=0, wait_for_clients=3 + accepted, join_timeout_s=60),
                          data_at_clients=True)
    port = handle.server.address[1]
    thread = None
    if hostile:
        request = Summarize(min_category_count=5, target=TARGET, local_test_size=config.local_test_size)
        base = honest_summary(paths[0], "evil", request)
        summary = long_labels(base) if accepted else label_bomb(base)
        thread = HostileThread(port, summary, summary["rows"], "evil", 60.0)
        thread.start()
        time.sleep(0.5)  # the hostile site is first: its summary is in before any honest one
    threads, results = run_sites([site_client(p, f"site{i}", port, TARGET) for i, p in enumerate(paths, 1)])
    started = time.monotonic()
    try:
        result = handle.wait(240)
    finally:
        handle.stop()
        for t in threads:
            t.join(15)
        if thread is not None:
            thread.join(15)
    reply = None if thread is None else type(thread.reply).__name__
    message = getattr(thread.reply, "message", None) if thread is not None else None
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"scenario": scenario, "peak_mib": round(peak_mib, 1), "status": result and result.status,
                      "seconds": round(time.monotonic() - started, 1), "reply": reply,
                      "message": message[:200] if message else None,
                      "classes": len(handle.server.task.classes) if handle.server.task_ready else None,
                      "honest_ok": all(r.ok for r in results.values()) and len(results) == 3}))


if __name__ == "__main__":
    main(sys.argv[1])
