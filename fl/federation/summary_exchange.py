"""Federated preprocessing: a server without data builds its task from the clients' data summaries.

The exchange (docs/protocol.md, "Data summaries") sits between ``hello`` and
``welcome``: a client that offers ``"summary"`` in ``hello.features`` gets
``summarize`` and answers ``summary``. The clients of the first cohort wait
for their ``welcome`` until the round loop has enough of them; it then merges
their summaries (``fl.data.site_summary.merge_summaries``) into the final task
(feature names, global scaler, classes) and welcomes them all before round 1.
A client joining later is checked against that task at once: columns it has
beyond the task's are ignored, a missing one is refused, naming it.
A client written before the extension cannot take part and is told why.

Every summary is checked before its client is admitted
(``fl.data.summary_checks``): a site whose counts, sums or texts could not
come from real data is refused with the reason (code ``summary``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from fl.data import DataError, local_holdout, normalize_labels
from fl.data.site_summary import MergedData, columns_problem, merge_summaries, summarize_data
from fl.data.summary_checks import clean_report, summary_problem
from fl.federation.task import Task, client_seed, make_preprocess
from fl.wire import SUMMARY_FEATURE, Hello, PeerClosed, ProtocolError, Summarize, Summary
from fl.wire.aio import AioConnection

SUMMARY_TIMEOUT_S = 60.0  # from summarize to the client's summary (reading and summing its data)
OLD_CLIENT = ("this server has no data of its own and builds the task from the clients' data summaries, which "
              "this client does not offer (hello.features lacks 'summary'): update the client")


@dataclass
class SummaryPlan:
    """What a server without data asks of the clients' summaries (from the run's settings)."""

    target: str | None
    min_category_count: int = 5
    standardize: bool = True


@dataclass
class TaskBuilder:
    """The checked summaries of the clients waiting for their welcome, and the task once they are merged.

    Used under the server's registry lock: ``keep`` and ``build`` never race;
    ``validate`` is pure and runs off the event loop. Memory: a summary is kept
    only while its client waits for the task and is connected; once the task
    is built only the merged columns and classes stay (a late joiner is
    checked against them and nothing of it is kept).
    """

    plan: SummaryPlan
    template: Task  # model, its params and local_test_size; shapes, classes and columns come from the sites
    summaries: dict[str, dict] = field(default_factory=dict)
    waiting: list[str] = field(default_factory=list)  # admitted clients whose welcome waits for the task
    merged: MergedData | None = None

    @property
    def ready(self) -> bool:
        return self.merged is not None

    def request(self) -> Summarize:
        return Summarize(min_category_count=self.plan.min_category_count, target=self.plan.target,
                         local_test_size=self.template.local_test_size)

    def validate(self, summary: Summary, n_samples: int) -> tuple[dict | None, tuple[str, str] | None]:
        """The summary as the merge may use it, or (code, why) to refuse the site: every count consistent with the
        rows it declared (``n_samples`` is its hello's), every text short and printable (fl.data.summary_checks).
        A malformed ``report`` is dropped (``report_dropped`` says why), not the site."""
        data = summary_dict(summary)
        problem = summary_problem(data, n_samples=n_samples, local_test_size=self.template.local_test_size,
                                  min_category_count=self.plan.min_category_count)
        if problem:
            return None, ("summary", f"the data summary cannot be right: {problem}")
        data["report"], dropped = clean_report(data["report"])
        if dropped:
            data["report_dropped"] = dropped
        return data, None

    def check(self, data: dict, task: Task) -> tuple[str, str] | None:
        """None for a first-cohort client; a late one is checked against ``task``: (code, why) to refuse it."""
        if self.merged is None:
            return None
        problem = columns_problem(data, self.merged.columns)
        if problem:
            return "shape", problem
        try:
            labels = normalize_labels(np.array([p[0] for p in data["labels"]], dtype=object)).tolist()
        except DataError as exc:
            return "labels", str(exc)
        if task.classes and all(isinstance(c, str) for c in task.classes):
            labels = [str(v) for v in labels]  # integer labels meet text classes as text (as normalize_labels)
        unknown = sorted(set(labels) - set(task.classes), key=str)
        if unknown:
            return "labels", f"local labels {unknown[:5]} are not among the task's classes {task.classes}"
        return None

    def keep(self, client_id: str, data: dict, active: set[str]) -> bool:
        """Record an admitted client's checked summary; True when its welcome waits for the task to be built.

        Summaries of clients no longer ``active`` (gone before the build) are
        dropped here; a late joiner's is not kept at all.
        """
        if self.merged is not None:
            return False
        self.waiting = [cid for cid in self.waiting if cid in active or cid == client_id]
        self.summaries = {cid: s for cid, s in self.summaries.items() if cid in self.waiting}
        self.summaries[client_id] = data
        if client_id not in self.waiting:
            self.waiting.append(client_id)
        return True

    def build(self, active: set[str]) -> tuple[Task, dict[str, Any], dict[str, tuple[str, str]]]:
        """Merge the summaries of the ``active`` first-cohort clients into the final task and the data report;
        also the sites the task leaves out ({client: (code, why)}), who must be refused. DataError if no task
        fits. The summaries are freed: only the merged columns and classes are kept, for late joiners."""
        waiting = [cid for cid in self.waiting if cid in active]
        merged = merge_summaries({cid: self.summaries[cid] for cid in waiting}, self.plan.min_category_count)
        stats = {"mean": merged.mean, "scale": merged.scale} if self.plan.standardize else None
        t = self.template
        task = Task(model=t.model, model_params=dict(t.model_params), n_features=len(merged.feature_names),
                    classes=list(merged.classes), feature_names=list(merged.feature_names),
                    preprocess=make_preprocess(stats, None), local_test_size=t.local_test_size)
        Task.from_dict(task.to_dict())  # the clients will check it: fail here first, in words
        try:  # welcome must be sendable before the task counts as built (the checks make this hold)
            json.dumps(task.to_dict(), allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise DataError(f"the task built from the summaries cannot be sent: {exc}") from None
        self.waiting = [cid for cid in waiting if cid not in merged.left_out]
        self.summaries = {}
        self.merged = replace(merged, report={})  # late joiners need its columns and classes, not the report
        return task, merged.report, dict(merged.left_out)


def summary_dict(summary: Summary) -> dict[str, Any]:
    return {"rows": summary.rows, "labels": summary.labels, "columns": summary.columns, "report": summary.report}


async def exchange(hello: Hello, conn: AioConnection, builder: TaskBuilder,
                   limits: Any) -> tuple[Summary | None, tuple[str, str] | None]:
    """Ask an authenticated client for its summary: (summary, None), or (None, (code, why)) to refuse it.

    The client has passed hello (token included), so the run's message
    limits apply from here; the summary must come within SUMMARY_TIMEOUT_S.
    """
    if SUMMARY_FEATURE not in (hello.features or []):
        return None, ("summary", OLD_CLIENT)
    conn.limits = limits
    try:
        conn.send(builder.request())
        reply = await conn.recv(idle_timeout=SUMMARY_TIMEOUT_S)
    except TimeoutError:
        return None, ("summary", f"no summary within {SUMMARY_TIMEOUT_S:g} s")
    except ProtocolError as exc:
        return None, (exc.code, str(exc))
    except (PeerClosed, OSError):
        return None, ("summary", "left before sending its summary")
    if not isinstance(reply, Summary):
        return None, ("message", f"expected summary, got {type(reply).__name__}")
    return reply, None


def client_summary(data: Any, client_id: str, seed: int, request: Summarize) -> Summary:
    """A client's answer to ``summarize``: its own data, the columns it would use, over its training rows.

    ``data`` is the client's LocalData. The rows it holds out of training
    (the task's local_test_size, drawn as the client will draw them) are left
    out of the column statistics, so the global scaler is a training-rows one.
    """
    import pandas as pd

    frame = data.frame if data.frame is not None else pd.DataFrame(
        data.X, columns=data.feature_names or [f"x{i}" for i in range(data.X.shape[1])])
    if request.target is not None and request.target in frame.columns:
        frame = frame.drop(columns=[request.target])
    train, _ = local_holdout(len(data.y), request.local_test_size, client_seed(seed, client_id))
    summary = summarize_data(frame, np.asarray(data.y), request.min_category_count,
                             train_rows=train if request.local_test_size > 0 else None,
                             report=getattr(data, "report", None))
    return Summary(rows=summary["rows"], labels=summary["labels"], columns=summary["columns"],
                   report=summary["report"])


async def await_task(conn: AioConnection) -> Any:
    """After sending its summary, a client waits for welcome (the first cohort waits for the others),
    answering the server's pings meanwhile; returns the welcome, or the error or bye that came instead."""
    from fl.wire import Ping, Pong

    while True:
        msg = await conn.recv(idle_timeout=None)
        if isinstance(msg, Ping):
            conn.send(Pong(t=msg.t))
            continue
        return msg

