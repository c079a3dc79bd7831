"""The round loop: sample, fit, collect, check, aggregate, evaluate, report.

A round of one fit exchange (parameter models, not secure) overlaps the next:
once round r is merged, ``evaluate`` of r and ``fit`` of r+1 go out together,
so the clients train r+1 while the server scores r, records it and writes
its checkpoint (each client answers its requests in order, as
docs/protocol.md asks; results of r+1 that come in before r's evaluation is
complete wait for their collection).

It runs in the thread that calls ``RoundRunner.run`` and talks to clients
only through the FederatedServer (its registry and inbox). It knows neither
model names nor rule names: the strategy aggregates, the global model keeper
(fl/federation/global_model.py) checks and holds what clients send, and
``RoundSettings`` carries the few numbers the loop itself needs.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from fl.data import training_row_count
from fl.federation.checkpoint import Checkpoint, CheckpointError, round_json
from fl.federation.collection import Collector
from fl.federation.events import ClientStatus, EventType, RunStatus
from fl.federation.global_model import GlobalModel, make_global_model
from fl.federation.secure_sum import SecureSum, SecureSumFailed, secure
from fl.federation.round_stats import (
    EVAL_METRIC_RANGES, FIT_METRIC_RANGES, METRIC_KEYS, client_spread, federated_metrics, finite, metadata_fields,
    metric_problem,
)
from fl.federation.scrutiny import cannot_judge, scrutinize
from fl.federation.server import FederatedServer, ServerStopped
from fl.learning.metrics import metrics_from_confusion, score_classifier
from fl.learning.strategies import Strategy
from fl.wire import Evaluate, EvaluateResult, Fit, FitResult, json_safe



@dataclass
class ServerData:
    """The server's own held-out data (raw features); never sent anywhere."""

    X_test: np.ndarray
    y_test: np.ndarray
    X_val: np.ndarray | None = None
    y_val: np.ndarray | None = None


@dataclass
class RoundSettings:
    """What the round loop needs to know of a run (built from a RunConfig by fl.runs.build)."""

    rounds: int = 10
    fraction: float = 1.0
    min_clients: int = 1
    round_timeout: float = 60.0
    seed: int = 0
    client_eval: bool = True
    fit_config: dict[str, Any] = field(default_factory=dict)  # sent in every fit (local_epochs, ...)
    learning_rate: Callable[[int], float] | None = None  # the clients' rate in round r (a server's schedule)
    secagg: bool = False  # sums through secure aggregation: the server sees only the sum of the clients' updates


@dataclass
class RunResult:
    status: RunStatus
    rounds: list[dict] = field(default_factory=list)
    final_metrics: dict = field(default_factory=dict)
    model: Any = None  # the final global model, predicting on raw features
    error: str | None = None
    best: "BestRound | None" = None  # the round whose global model scored best, and that model


@dataclass
class BestRound:
    """The best global model so far: selected on the server's validation split when it has one, else on the
    accuracy the run reports (the test split, or the clients' scores), which makes its number optimistic."""

    round: int
    score: float
    selected_on: str  # "validation" | "test" | "clients"
    metrics: dict
    model: Any
    state: dict = field(default_factory=dict)  # the global model's state() then: a checkpoint keeps it


def fixed_scaler(stats: dict, n_features: int) -> StandardScaler:
    """A StandardScaler holding given global statistics (no fitting on any split)."""
    scaler = StandardScaler()
    scaler.mean_ = np.asarray(stats["mean"], dtype=np.float64)
    scaler.scale_ = np.asarray(stats["scale"], dtype=np.float64)
    scaler.var_ = scaler.scale_**2
    scaler.n_features_in_ = n_features
    scaler.n_samples_seen_ = 1
    return scaler


@dataclass
class OpenRound:
    """A round whose fit is under way: what it chose and asked, and where its time and traffic count from."""

    number: int
    chosen: list[str]
    config: dict[str, Any]
    n_available: int
    since: float  # time.monotonic() its span starts: its opening, or the previous round's record when later
    sent0: int
    received0: int
    # The first fit exchange when it went out ahead (while the previous round was evaluated): (step config,
    # clients it reached, clients it could not reach and why)
    ahead: tuple[dict[str, Any], list[str], dict[str, str]] | None = None


class RoundRunner:
    """Drives the run's rounds on a bound FederatedServer."""

    def __init__(self, server: FederatedServer, settings: RoundSettings, strategy: Strategy,
                 data: ServerData | None = None):
        self.server = server
        self.settings = settings
        self.strategy = strategy
        self.data = data
        self.rng = np.random.default_rng(settings.seed)
        if server.task_ready:  # else the task is built from the clients' summaries once they are here (run)
            self._bind_task()
        self.rounds: list[dict] = []
        self._rounds_json: list[str] = []  # each record as the checkpoint stores it, encoded once
        # answers, departures and stragglers (counted since the last round was recorded)
        self.collector = Collector(server, settings.round_timeout, self._stop_if_asked)
        self.best: BestRound | None = None
        self.on_global: Callable[[int, list[tuple[str, np.ndarray]]], None] | None = None  # e.g. a weights archive
        self.on_checkpoint: Callable[[Checkpoint], None] | None = None  # after every round (a resumable run)
        self.start_round = 0  # the last round a resumed run had finished before
        self._test_scaled: tuple[Any, np.ndarray] | None = None  # (the scaler, the test rows it scaled)

    def _bind_task(self) -> None:
        """The server's task decides the classes, the scaler and the global model."""
        self.task = self.server.task
        self.classes = self.task.classes_array
        self.scaler = fixed_scaler(self.task.standardize, self.task.n_features) if self.task.standardize else None
        data = self.data
        validation = (self._scale(data.X_val), data.y_val) if data is not None and data.X_val is not None else None
        self.model: GlobalModel = make_global_model(self.strategy, self.task, self.settings.seed, validation)
        if self.settings.secagg:  # every sum of the run through SecAgg+ (fl/federation/secure_sum.py)
            self.model = secure(self.model, self.strategy)

    @property
    def total_rounds(self) -> int:
        return 1 if self.strategy.one_shot else self.settings.rounds

    # ------------------------------------------------------------------ helpers
    def _scale(self, X: np.ndarray) -> np.ndarray:
        return self.scaler.transform(X) if self.scaler is not None else X

    def _stop_if_asked(self) -> None:
        if self.server.stop_requested.is_set():
            raise ServerStopped()

    def _sample(self) -> list[str]:
        active = self.server.active_ids()
        if not active:
            return []
        k = max(self.settings.min_clients, math.ceil(self.settings.fraction * len(active)))
        k = min(k, len(active))
        if k == len(active):
            return active
        return sorted(self.rng.choice(active, size=k, replace=False).tolist())

    def _pool_rows(self) -> int:
        """The rows every connected client trains on (their declared rows less their held-out share): the N
        of the pooled objective (logistic regression's penalty 1/(C·N), SCAFFOLD's weights)."""
        share = self.task.local_test_size
        return sum(training_row_count(slot.n_samples, share) for cid in self.server.active_ids()
                   if (slot := self.server.slot(cid)) is not None)

    def _send(self, client_ids: list[str], msg: Any, status: ClientStatus) -> tuple[list[str], dict[str, str]]:
        """Send one message (encoded once) to every client; those that cannot be reached fail at once."""
        sent, failed = self.server.broadcast(client_ids, msg, self.collector.sessions)
        self._set_status(sent, status)
        return sent, failed

    def _send_fit(self, client_ids: list[str], fit: Fit) -> tuple[list[str], dict[str, str]]:
        """Secure aggregation: a fit with each client's own keys and arrays (its setup, its neighbours' keys,
        the shares addressed to it, what to unmask), encoded per client."""
        assert isinstance(self.model, SecureSum)
        sent, failed = [], {}
        for cid in client_ids:
            extra_config, extra_arrays = self.model.client_payload(cid)
            msg = Fit(round=fit.round, config={**fit.config, **extra_config},
                      params=[*(fit.params or []), *extra_arrays] if (fit.params or extra_arrays) else None,
                      blob=fit.blob)
            ok, bad = self.server.broadcast([cid], msg, self.collector.sessions)
            sent += ok
            failed.update(bad)
        self._set_status(sent, ClientStatus.TRAINING)
        return sent, failed

    def _rows_of(self, client_id: str) -> int:
        slot = self.server.slot(client_id)
        return int(slot.n_samples) if slot is not None and slot.n_samples else 1

    def _set_status(self, client_ids: list[str], status: ClientStatus) -> None:
        """Tell the server registry and the run's listeners (the Clients page) what clients are doing."""
        if client_ids:
            self.server.set_status(client_ids, status)
            self.server.emit(EventType.CLIENT_STATUS, clients=list(client_ids), status=status)

    # ------------------------------------------------------------------ the loop
    def run(self) -> RunResult:
        """Wait for clients, run every round, say bye. Never raises for client faults."""
        status, error = RunStatus.COMPLETED, None
        try:
            self.server.wait_for_clients(self.settings.min_clients)
            if not self.server.task_ready:  # federated preprocessing: the sites' summaries make the task
                self.server.build_task()
                self._bind_task()
            next_round = (self._announce(self._open_round(self.start_round + 1))
                          if self.start_round < self.total_rounds else None)
            while next_round is not None:
                next_round = self._play_round(next_round)
        except ServerStopped:
            status = RunStatus.STOPPED
        except Exception as exc:  # a bug or an impossible state: report it, don't hang clients
            status, error = RunStatus.FAILED, f"{type(exc).__name__}: {exc}"
            self.server.emit(EventType.ERROR, message=error)
        final = {k: self.rounds[-1].get(k) for k in METRIC_KEYS} if self.rounds else {}
        reason = {RunStatus.COMPLETED: "run finished", RunStatus.STOPPED: "run stopped"}.get(status, "server error")
        self.server.close(reason, final_metrics=final)
        model = self.final_model() if self.server.task_ready else None
        best = {"best_round": self.best.round, "best_selected_on": self.best.selected_on} if self.best else {}
        if status == RunStatus.STOPPED and self.server.stop_requested_at is not None:
            best["stop_requested_t"] = round(self.server.stop_requested_at, 3)
        self.server.emit(EventType.DONE, status=status, final_metrics=final, error=error, **best)
        return RunResult(status=status, rounds=self.rounds, final_metrics=final, model=model, error=error,
                         best=self.best)

    def final_model(self) -> Any:
        """The global model as one estimator on raw features (scaling included)."""
        if self.model.estimator is None:
            return None
        if self.scaler is None:
            return self.model.estimator
        return Pipeline([("standardize", self.scaler), ("model", self.model.estimator)])

    def _open_round(self, round_no: int) -> OpenRound:
        """Draw the round's clients and make its fit config (the fit goes out in ``_fit_steps``, or ahead). Its
        ``round_start`` event is ``_announce``'s: listeners see it after the previous round's ``round``, and a
        Stop asked before then starts no new round."""
        sent0, received0 = self.server.bytes_totals()
        chosen = self._sample()
        pool_rows = self._pool_rows()
        self.strategy.begin_round(round_no, pool_rows)
        config = {**self.settings.fit_config, "seed": self.settings.seed + round_no, "pool_rows": pool_rows,
                  **self.strategy.fit_config()}
        if self.settings.learning_rate is not None:  # from the initial rate and the round, never the last rate
            config["learning_rate"] = self.settings.learning_rate(round_no)
        return OpenRound(round_no, chosen, config, len(self.server.active_ids()), time.monotonic(), sent0, received0)

    def _announce(self, rnd: OpenRound) -> OpenRound:
        self._stop_if_asked()  # a Stop while the previous round was recorded starts no new round, even one sent
        self.server.emit(EventType.ROUND_START, round=rnd.number, clients=rnd.chosen)
        return rnd

    def _play_round(self, rnd: OpenRound) -> OpenRound | None:
        """Finish ``rnd``: its fit, its evaluation, its record. Returns the next round, opened (and its fit sent
        while this one is evaluated, when a round is one fit exchange), or None after the last."""
        round_no = rnd.number
        rows, failures, scrutiny_note = self._fit_steps(rnd)
        if self.on_global is not None and self.model.arrays_named() is not None:
            self.on_global(round_no, self.model.arrays_named())  # every round's global parameters (an archive)
        elif self.model.estimator is None and self.strategy.one_shot:
            raise RuntimeError("no client returned a usable model")
        self._stop_if_asked()
        asked = self._ask_clients_to_evaluate(round_no) if self._clients_evaluate() else None
        resume_point = (self.rng.bit_generator.state, self.strategy.state())  # before the next round draws
        upcoming = None
        if round_no < self.total_rounds and self.model.one_step_rounds:
            upcoming = self._open_round(round_no + 1)
            upcoming.ahead = self._send_step(upcoming, upcoming.chosen)
        metrics, per_client = self._evaluate(round_no, asked, upcoming)
        self._keep_if_best(round_no, metrics)
        for cid, scores in per_client.items():
            rows.setdefault(cid, {"client_id": cid, "n_samples": scores["n_samples"], "status": "not sampled"})
            rows[cid].update(eval_accuracy=scores.get("accuracy"), eval_loss=scores.get("loss"),
                             eval_f1_macro=scores.get("f1_macro"), eval_n_samples=scores["n_samples"])
            if scores.get("confusion") is not None:
                rows[cid]["eval_confusion"] = scores["confusion"].tolist()
        for cid in sorted(rows):
            slot = self.server.slot(cid)
            self.server.emit(EventType.CLIENT_RESULT, round=round_no, **rows[cid],
                             bytes_sent=slot.conn.bytes_sent if slot else None,
                             bytes_received=slot.conn.bytes_received if slot else None)
        sent1, received1 = self.server.bytes_totals()
        now = time.monotonic()
        record = {
            "round": round_no,
            **{k: metrics.get(k) for k in METRIC_KEYS},
            **client_spread(per_client),
            "n_fit_clients": sum(1 for row in rows.values() if row.get("status") == "ok"),
            "n_failures": len(failures),
            "n_stragglers": self.collector.stragglers,
            # The wall time and traffic the round added: from its opening, or from the previous round's record
            # when it opened before that (its fit went out during that round's evaluation); they add up to the run's.
            "duration_s": round(now - rnd.since, 4),
            "bytes_sent": sent1 - rnd.sent0,
            "bytes_received": received1 - rnd.received0,
            "epsilon": None,
            "learning_rate": rnd.config.get("learning_rate"),
            **self.strategy.round_metrics(),
            **(self.model.round_metrics() if isinstance(self.model, SecureSum) else {}),
        }
        if "secagg_survivors" in record:  # whose updates the sum holds (one that left after masking included)
            record["n_fit_clients"] = record["secagg_survivors"]
        if scrutiny_note:  # the Clients page says why no update of this round was judged
            record["scrutiny"] = f"not judged: {scrutiny_note}"
        if metrics.get("confusion") is not None:  # the counts every metric above comes from (confusion.csv)
            record["confusion"] = {"classes": json_safe(list(self.classes)), "counts": metrics["confusion"].tolist(),
                                   "source": "server" if self.data is not None else "sites"}
        self.rounds.append(record)
        self._rounds_json.append(round_json(record))
        self.collector.stragglers = 0
        if upcoming is not None:  # its span starts where this one's ends
            upcoming.since, upcoming.sent0, upcoming.received0 = now, sent1, received1
        if self.on_checkpoint is not None:  # before the round is reported: a reported round can be resumed
            self.on_checkpoint(self.checkpoint(*resume_point))
        self.server.emit(EventType.ROUND, **record)
        if upcoming is None and round_no < self.total_rounds:
            upcoming = self._open_round(round_no + 1)
        return self._announce(upcoming) if upcoming is not None else None

    def _fit_steps(self, rnd: OpenRound) -> tuple[dict[str, dict], dict[str, str], str | None]:
        """The round's fit exchanges: one for most models; for boosted trees, one per step (a sketch, then a
        level of the trees at a time) until the model says the round is complete. Returns every client's row,
        its failures (a client failing a step is out of the round's later steps) and the scrutiny note."""
        round_no, chosen = rnd.number, rnd.chosen
        rows: dict[str, dict] = {}
        failures: dict[str, str] = {}
        scrutiny_note = None
        secure = isinstance(self.model, SecureSum)
        while True:
            asked = [cid for cid in chosen if cid not in failures]
            if rnd.ahead is not None:  # the first exchange went out while the previous round was evaluated
                (step, sent, missed), rnd.ahead = rnd.ahead, None
            else:
                if secure:
                    try:
                        self.model.begin_step(asked, {cid: self._rows_of(cid) for cid in asked})
                    except SecureSumFailed as exc:  # too few clients left for a secure sum: the round has no update
                        if not self.model.inner.round_complete:
                            raise
                        self.model.failure = str(exc)
                        self.model.last = {"secagg_failure": str(exc)}
                        for cid in asked:
                            failures[cid] = str(exc)
                            rows.setdefault(cid, {"client_id": cid}).update(status="failed", reason=str(exc))
                            self.server.emit(EventType.FAILURE, round=round_no, client_id=cid, reason=str(exc))
                        break
                step, sent, missed = self._send_step(rnd, asked)
            results, late = self.collector.collect(round_no, FitResult, sent)
            missed.update(late)
            step_rows, accepted = self._accept_results(results, missed)
            for cid, row in step_rows.items():  # a later step's row keeps what an earlier one said (its training)
                rows[cid] = {**rows.get(cid, {}), **{k: v for k, v in row.items() if v is not None}}
            self._set_status(sent, ClientStatus.IDLE)
            for cid, reason in sorted(missed.items()):
                self.server.emit(EventType.FAILURE, round=round_no, client_id=cid, reason=reason)
            failures.update(missed)
            self._stop_if_asked()
            if not accepted and not (secure and self.model.stage is not None):  # (a secure sum says why itself)
                if step:  # a step of a model grown here cannot be skipped: the round cannot go on
                    raise RuntimeError(f"no client answered step {step.get('statistics')} of round {round_no}: "
                                       + "; ".join(f"{c}: {r}" for c, r in sorted(missed.items())[:3]))
                break
            before = self.model.parameters()
            self.model.update(accepted)
            if secure and self.model.failure:  # the sum is lost: every client of the round is told why
                for cid in asked:
                    if cid not in failures:
                        failures[cid] = self.model.failure
                        rows.setdefault(cid, {"client_id": cid}).update(status="failed", reason=self.model.failure)
                        self.server.emit(EventType.FAILURE, round=round_no, client_id=cid, reason=self.model.failure)
            if secure:  # clients the protocol left out of the sum: out of the round's later exchanges
                for cid, reason in sorted(self.model.excluded.items()):
                    rows.setdefault(cid, {"client_id": cid})
                    rows[cid].update(status="rejected", reason=reason)
                    failures[cid] = reason
                    self.server.emit(EventType.FAILURE, round=round_no, client_id=cid, reason=reason)
            if self.model.round_complete:
                self.strategy.end_round(rnd.n_available, len(chosen))
                if self.model.measurable:
                    self._scrutinize(round_no, before, accepted, rows)
                    scrutiny_note = cannot_judge(len(accepted)) if before is not None else None
                elif secure:
                    scrutiny_note = "secure aggregation shows the server only the sum of the updates"
                break
        return rows, failures, scrutiny_note

    def _send_step(self, rnd: OpenRound, asked: list[str]) -> tuple[dict[str, Any], list[str], dict[str, str]]:
        """Send the round's next fit exchange to ``asked``: (its step config, whom it reached, whom it did not)."""
        step = self.model.step_config()
        fit = Fit(round=rnd.number, config={**rnd.config, **step}, **self.model.fit_payload())
        if isinstance(self.model, SecureSum):
            return (step, *self._send_fit(asked, fit))
        return (step, *self._send(asked, fit, ClientStatus.TRAINING))

    # ------------------------------------------------------------------ checkpoints
    def checkpoint(self, rng_state: dict | None = None, strategy_state: dict | None = None) -> Checkpoint:
        """Everything the rounds after this one depend on (fl/federation/checkpoint.py); ``rng_state`` and
        ``strategy_state`` as they were when the last round ended, when the next one has begun since."""
        best = None
        if self.best is not None:
            best = {"round": self.best.round, "score": self.best.score, "selected_on": self.best.selected_on,
                    "metrics": self.best.metrics, "model": self.best.state}
        return Checkpoint(round=self.rounds[-1]["round"] if self.rounds else 0, rounds=list(self.rounds),
                          rounds_json=list(self._rounds_json),
                          rng_state=rng_state if rng_state is not None else self.rng.bit_generator.state,
                          model=self.model.state(),
                          strategy=strategy_state if strategy_state is not None else self.strategy.state(), best=best, task=json_safe(self.task.to_dict()),
                          run_id=self.server.run_id)

    def restore(self, ckpt: Checkpoint) -> None:
        """Continue after ``ckpt.round``: its records, sampling RNG, global model, strategy state and best."""
        problem = ckpt.task_problem(self.task.to_dict())
        if problem:
            raise CheckpointError(problem)
        self.rounds = [dict(r) for r in ckpt.rounds]
        self._rounds_json = [round_json(r) for r in self.rounds]
        self.start_round = ckpt.round
        self.rng.bit_generator.state = ckpt.rng_state
        self.model.load_state(ckpt.model)
        self.strategy.load_state(ckpt.strategy)
        if ckpt.best:
            b = ckpt.best
            estimator = self.model.estimator_of(b["model"])
            model = estimator if self.scaler is None else Pipeline([("standardize", self.scaler), ("model", estimator)])
            self.best = BestRound(int(b["round"]), float(b["score"]), b["selected_on"], b["metrics"], model,
                                  b["model"])

    def _accept_results(self, results: dict[str, FitResult],
                        failures: dict[str, str]) -> tuple[dict[str, dict], list[tuple[str, Any, int]]]:
        """Check each result; keep the good ones (sorted by id) and every client's numbers for its row."""
        accepted = []
        rows: dict[str, dict] = {}
        for cid in sorted(results):
            msg = results[cid]
            problem = self._claims_problem(cid, msg.n_samples, msg.metrics, FIT_METRIC_RANGES)
            try:
                payload, problem = (None, problem) if problem else self.model.accept(msg)
            except Exception as exc:  # whatever a result holds, it fails its sender's round, never the run
                payload, problem = None, f"its result could not be read ({type(exc).__name__}: {exc})"
            status = "ok" if problem is None else "dropped out" if msg.metrics.get("dropped_out") else "rejected"
            rows[cid] = {"client_id": cid, "n_samples": msg.n_samples, "status": status, "reason": problem,
                         **({} if problem else {k: msg.metrics.get(k) for k in FIT_METRIC_RANGES}),
                         **metadata_fields(msg)}
            if problem is not None:
                failures[cid] = problem
            else:
                accepted.append((cid, payload, msg.n_samples))
        for cid, reason in failures.items():
            slot = self.server.slot(cid)
            rows.setdefault(cid, {"client_id": cid, "n_samples": slot.n_samples if slot else None,
                                  "status": "failed", "reason": reason})
        return rows, accepted

    def _scrutinize(self, round_no: int, before: list[np.ndarray] | None, accepted: list[tuple[str, Any, int]],
                    rows: dict[str, dict]) -> None:
        """Norm, cosine to the aggregate step and robust z of every accepted update; flag the outliers (from this
        round's updates alone: a resumed run flags what an uninterrupted one does, fl/federation/scrutiny.py)."""
        after = self.model.parameters()
        if before is None or after is None:
            return  # whole fitted models: no update to measure
        model_part = len(before)  # a strategy's own arrays (SCAFFOLD's Δc_i) come after the model's
        updates = [(cid, arrays[:model_part]) for cid, arrays, _ in accepted]
        for cid, scores in scrutinize(before, updates, after).items():
            rows[cid].update(scores)
            if scores["flagged"]:
                self.server.emit(EventType.FLAGGED, round=round_no, client_id=cid, update_z=scores["update_z"],
                                 z_threshold=scores["z_threshold"], update_norm=scores["update_norm"],
                                 update_cosine=scores["update_cosine"])

    def _keep_if_best(self, round_no: int, metrics: dict[str, float]) -> None:
        """Keep this round's global model if it scores best so far (ties keep the earlier round)."""
        if self.model.estimator is None:
            return
        if self.data is not None and self.data.X_val is not None:
            selected_on = "validation"
            score = score_classifier(self.model.estimator, self._scale(self.data.X_val), self.data.y_val,
                                     self.classes, with_f1=False)["accuracy"]
        else:
            selected_on, score = ("test" if self.data is not None else "clients"), metrics.get("accuracy")
        if not finite(score) or (self.best is not None and score <= self.best.score):
            return
        self.best = BestRound(round_no, float(score), selected_on, {k: metrics.get(k) for k in METRIC_KEYS},
                              self.final_model(), self.model.state() if self.on_checkpoint is not None else {})

    def _clients_evaluate(self) -> bool:
        """Whether the clients score the global model this round: when the server has no test data of its own,
        or when client_eval is on and the model is cheap to send (parameter arrays, not an ensemble of whole
        models); never before there is a global model."""
        return self.model.estimator is not None and (
            self.data is None or (self.settings.client_eval and self.model.cheap_to_send))

    def _evaluate(self, round_no: int, asked: tuple[list[str], dict[str, str]] | None,
                  upcoming: OpenRound | None = None) -> tuple[dict[str, float], dict[str, dict]]:
        """(global metrics, per-client scores of the global model on each client's own held-out rows).

        The global metrics come from the server's test split when it has
        one, else from the clients (sample-weighted mean): federated
        evaluation. ``asked``: the clients sent ``evaluate`` (they score
        while the server does); a client that fails to answer is reported,
        never fatal. ``upcoming``: the next round, whose fit is out already.
        """
        if self.model.estimator is None:
            return {k: math.nan for k in METRIC_KEYS}, {}
        metrics = None
        if self.data is not None:
            metrics = score_classifier(self.model.estimator, self._scaled_test(), self.data.y_test,
                                       self.classes, with_confusion=True)
        per_client = self._evaluate_on_clients(round_no, *asked, upcoming) if asked is not None else {}
        if metrics is None:
            metrics = federated_metrics(per_client, len(self.classes))
        return metrics, per_client

    def _scaled_test(self) -> np.ndarray:
        """The server's test rows as the model sees them: scaled once for the run (the scaler is fixed)."""
        if self._test_scaled is None or self._test_scaled[0] is not self.scaler:
            self._test_scaled = (self.scaler, self._scale(self.data.X_test))
        return self._test_scaled[1]

    def _ask_clients_to_evaluate(self, round_no: int) -> tuple[list[str], dict[str, str]]:
        payload = self.model.evaluate_payload()
        return self._send(self.server.active_ids(), Evaluate(round=round_no, **payload), ClientStatus.EVALUATING)

    def _evaluate_on_clients(self, round_no: int, sent: list[str], failures: dict[str, str],
                             upcoming: OpenRound | None = None) -> dict[str, dict]:
        ahead = (upcoming.number, upcoming.ahead[1]) if upcoming is not None and upcoming.ahead is not None else None
        results, late = self.collector.collect(round_no, EvaluateResult, sent, ahead)
        failures.update(late)
        training = set(ahead[1]) if ahead is not None else set()  # those training the next round stay so
        self._set_status([cid for cid in sent if cid not in training], ClientStatus.IDLE)
        scores = {}
        for cid, result in sorted(results.items()):
            score, problem = self._client_scores(cid, result)
            if problem:
                failures[cid] = problem
            else:
                scores[cid] = score
        for cid, reason in sorted(failures.items()):
            self.server.emit(EventType.FAILURE, round=round_no, client_id=cid, reason=f"evaluation: {reason}")
        return scores

    def _claims_problem(self, cid: str, n_samples: int, metrics: dict, ranges: dict) -> str | None:
        """Why a result's claims cannot be taken: more rows than the client declared in its hello (its weight
        is bounded by what it said it holds), or a metric out of its range; None when they can."""
        slot = self.server.slot(cid)
        if slot is not None and n_samples > slot.n_samples:
            return f"reports {n_samples} samples, more than the {slot.n_samples} rows it declared"
        return metric_problem(metrics, ranges)

    def _client_scores(self, cid: str, result: EvaluateResult) -> tuple[dict[str, Any], str | None]:
        """One site's scores of the global model: from its counts when it sent them (accuracy, F1 and balanced
        accuracy then follow from the counts, whatever ratios it claims), else its metrics as sent."""
        problem = self._claims_problem(cid, result.n_samples, result.metrics, EVAL_METRIC_RANGES)
        score: dict[str, Any] = {**{k: result.metrics.get(k) for k in METRIC_KEYS}, "n_samples": result.n_samples,
                                 "confusion": None}
        if problem:
            return score, problem
        if result.confusion is not None:
            matrix = np.asarray(result.confusion, dtype=np.int64)
            k = len(self.classes)
            if matrix.shape != (k, k):
                return score, f"confusion counts over {len(matrix)} classes; the task has {k}"
            score.update(metrics_from_confusion(matrix), confusion=matrix)
        return score, None
