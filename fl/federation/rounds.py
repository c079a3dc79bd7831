"""The round loop: sample, fit, collect, check, aggregate, evaluate, report.

It runs in the thread that calls ``run_rounds`` and talks to clients only
through the FederatedServer (its registry and inbox), so it can be tested
and reasoned about without thinking about sockets.
"""

from __future__ import annotations

import math
import queue
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from fl.wire import blobs
from fl.runs.config import RunConfig
from fl.learning.metrics import score_classifier
from fl.learning.models import NamedArrays, expected_shapes, global_estimator, init_parameters
from fl.wire import Evaluate, EvaluateResult, Fit, FitResult, PeerClosed, ProtocolError
from fl.federation.server import FederatedServer, ServerStopped
from fl.learning.privacy import PrivacyAccountant, add_gaussian_noise, clip_update, update_norm
from fl.learning.server_opt import make_server_optimizer
from fl.learning.aggregation import aggregate_parameters, stacking, voting

METRIC_KEYS = ("accuracy", "loss", "f1_macro")


@dataclass
class ServerData:
    """The server's own held-out data (raw features); never sent anywhere."""

    X_test: np.ndarray
    y_test: np.ndarray
    X_val: np.ndarray | None = None
    y_val: np.ndarray | None = None


@dataclass
class RunResult:
    status: str  # completed | stopped | failed
    rounds: list[dict] = field(default_factory=list)
    final_metrics: dict = field(default_factory=dict)
    model: Any = None  # the final global model, predicting on raw features
    error: str | None = None


def fixed_scaler(stats: dict, n_features: int) -> StandardScaler:
    """A StandardScaler holding given global statistics (no fitting on any split)."""
    scaler = StandardScaler()
    scaler.mean_ = np.asarray(stats["mean"], dtype=np.float64)
    scaler.scale_ = np.asarray(stats["scale"], dtype=np.float64)
    scaler.var_ = scaler.scale_**2
    scaler.n_features_in_ = n_features
    scaler.n_samples_seen_ = 1
    return scaler


class RoundRunner:
    """Drives the configured number of rounds on a bound FederatedServer."""

    def __init__(self, server: FederatedServer, config: RunConfig, data: ServerData | None = None):
        self.server = server
        self.config = config
        self.task = server.task
        self.classes = self.task.classes_array
        self.data = data
        self.rng = np.random.default_rng(config.seed)
        self.scaler = fixed_scaler(self.task.standardize, self.task.n_features) if self.task.standardize else None
        self.global_arrays: NamedArrays | None = None
        self.global_model: Any = None
        self.rounds: list[dict] = []
        self.optimizer = make_server_optimizer(config.server_opt, server_lr=config.server_lr,
                                               momentum=config.server_momentum)
        self.accountant = PrivacyAccountant(config.noise_multiplier, config.dp_delta) if config.dp != "none" else None
        self.noise_rng = np.random.default_rng(config.seed + 104729)
        self.epsilon: float | None = None
        self.stragglers = 0  # late results seen in the current round

    # ------------------------------------------------------------------ helpers
    def _scale(self, X: np.ndarray) -> np.ndarray:
        return self.scaler.transform(X) if self.scaler is not None else X

    def _sample(self) -> list[str]:
        active = self.server.active_ids()
        if not active:
            return []
        k = max(self.config.min_clients, math.ceil(self.config.fraction * len(active)))
        k = min(k, len(active))
        if k == len(active):
            return active
        return sorted(self.rng.choice(active, size=k, replace=False).tolist())

    def _send(self, client_ids: list[str], make_msg: Any, status: str) -> tuple[list[str], dict[str, str]]:
        """Send one message per client; those that cannot be reached fail at once."""
        sent, failed = [], {}
        for cid in client_ids:
            slot = self.server.slot(cid)
            if slot is None or slot.status == "gone":
                failed[cid] = "gone before the round"
                continue
            try:
                slot.conn.send(make_msg(cid))
                sent.append(cid)
            except (PeerClosed, OSError, ProtocolError) as exc:
                failed[cid] = f"send failed: {exc}"
        self._set_status(sent, status)
        return sent, failed

    def _set_status(self, client_ids: list[str], status: str) -> None:
        """Tell the server registry and the run's listeners (the Clients page) what clients are doing."""
        if client_ids:
            self.server.set_status(client_ids, status)
            self.server.emit("client_status", clients=list(client_ids), status=status)

    def _collect(self, round_no: int, kind: type, waiting: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
        """Results of ``kind`` for ``round_no`` until all arrived or the round timeout.

        Results of other rounds are stragglers: counted and reported, never merged.
        """
        results: dict[str, Any] = {}
        failures: dict[str, str] = {}
        pending = set(waiting)
        deadline = time.monotonic() + self.config.round_timeout
        while pending:
            if self.server.stop_requested.is_set():
                raise ServerStopped()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                for cid in pending:
                    failures[cid] = f"no answer within {self.config.round_timeout:g} s"
                break
            try:
                item_kind, cid, payload, conn = self.server.inbox.get(timeout=min(remaining, 0.1))
            except queue.Empty:
                continue
            if not self.server.is_current(cid, conn):
                continue  # from an earlier session under this id (e.g. one refused for its data)
            if item_kind == "gone":
                if cid in pending:
                    pending.discard(cid)
                    failures[cid] = f"left mid-round: {payload}"
                continue
            if payload.round != round_no or not isinstance(payload, kind) or cid not in pending:
                self.stragglers += 1
                self.server.emit("straggler", client_id=cid, round=payload.round, open_round=round_no)
                continue
            pending.discard(cid)
            results[cid] = payload
        return results, failures

    def _check_arrays(self, msg: FitResult) -> str | None:
        """Why a parameter result cannot be merged, or None when it is fine."""
        if msg.metrics.get("dropped_out"):
            return "dropped out of this round"
        if msg.params is None:
            return "sent no parameter arrays"
        expected = expected_shapes(self.task.model, self.task.model_params, self.classes, self.task.n_features)
        got = [(name, tuple(arr.shape)) for name, arr in msg.params]
        if got != [(n, tuple(s)) for n, s in expected]:
            return f"wrong arrays {got}, expected {[(n, tuple(s)) for n, s in expected]}"
        if not all(np.all(np.isfinite(arr)) for _, arr in msg.params):
            return "parameters are not finite"
        if msg.n_samples < 1:
            return "reported no samples"
        if self.config.dp == "client" and self.global_arrays is not None:
            norm = update_norm([a for _, a in self.global_arrays], [a for _, a in msg.params])
            if norm > self.config.clip_norm * (1 + 1e-6):
                return f"update norm {norm:.4g} exceeds the clip norm {self.config.clip_norm:g}"
        return None

    def _load_model(self, msg: FitResult) -> tuple[Any, str | None]:
        if msg.blob is None:
            return None, "sent no model blob"
        try:
            model = blobs.load_model(msg.blob)
        except ProtocolError as exc:
            return None, str(exc)
        classes = np.asarray(getattr(model, "classes_", []))
        if not hasattr(model, "predict") or not np.all(np.isin(classes, self.classes)):
            return None, "model blob is not a classifier over the task's classes"
        if getattr(model, "n_features_in_", self.task.n_features) != self.task.n_features:
            return None, "model blob expects a different number of features"
        return model, None

    # ------------------------------------------------------------------ the loop
    def run(self) -> RunResult:
        """Wait for clients, run every round, say bye. Never raises for client faults."""
        status, error = "completed", None
        try:
            self.server.wait_for_clients(self.config.min_clients)
            if not self.config.is_ensemble:
                self.global_arrays = init_parameters(self.task.model, self.task.model_params, self.classes,
                                                     self.task.n_features, self.config.seed)
            for round_no in range(1, self.config.effective_rounds + 1):
                self._one_round(round_no)
        except ServerStopped:
            status = "stopped"
        except Exception as exc:  # a bug or an impossible state: report it, don't hang clients
            status, error = "failed", f"{type(exc).__name__}: {exc}"
            self.server.emit("error", message=error)
        final = {k: self.rounds[-1].get(k) for k in METRIC_KEYS} if self.rounds else {}
        reason = {"completed": "run finished", "stopped": "run stopped"}.get(status, "server error")
        self.server.close(reason, final_metrics=final)
        model = self.final_model()
        self.server.emit("done", status=status, final_metrics=final, error=error)
        return RunResult(status=status, rounds=self.rounds, final_metrics=final, model=model, error=error)

    def final_model(self) -> Any:
        """The global model as one estimator on raw features (scaling included)."""
        if self.global_model is None:
            return None
        if self.scaler is None:
            return self.global_model
        return Pipeline([("standardize", self.scaler), ("model", self.global_model)])

    def _one_round(self, round_no: int) -> None:
        started = time.monotonic()
        sent0, recv0 = self.server.bytes_totals()
        self.stragglers = 0
        chosen = self._sample()
        self.server.emit("round_start", round=round_no, clients=chosen)
        config = {"local_epochs": self.config.local_epochs, "seed": self.config.seed + round_no,
                  "return": "model" if self.config.is_ensemble else "parameters"}
        if self.config.learning_rate is not None:
            config["learning_rate"] = self.config.learning_rate
        if self.config.proximal_mu > 0:
            config["proximal_mu"] = self.config.proximal_mu
        if self.config.dp == "client":
            config["dp_clip_norm"] = self.config.clip_norm
        n_available = len(self.server.active_ids())
        params = None if self.config.is_ensemble else self.global_arrays
        sent, failures = self._send(chosen, lambda cid: Fit(round=round_no, config=config, params=params), "training")
        results, late = self._collect(round_no, FitResult, sent)
        failures.update(late)
        rows, accepted = self._accept_results(results, failures)
        for cid, reason in failures.items():
            slot = self.server.slot(cid)
            rows.setdefault(cid, {"client_id": cid, "n_samples": slot.n_samples if slot else None,
                                  "status": "failed", "reason": reason})
        self._set_status(sent, "idle")
        for cid, reason in sorted(failures.items()):
            self.server.emit("failure", round=round_no, client_id=cid, reason=reason)
        if self.server.stop_requested.is_set():
            raise ServerStopped()
        if accepted:
            self._aggregate(accepted)
            if self.accountant is not None:
                self.epsilon = self.accountant.step(max(n_available, len(chosen)), len(chosen))
        elif round_no == 1 and self.config.is_ensemble:
            raise RuntimeError("no client returned a usable model")
        metrics, per_client = self._evaluate(round_no)
        for cid, scores in per_client.items():
            rows.setdefault(cid, {"client_id": cid, "n_samples": scores["n_samples"], "status": "not sampled"})
            rows[cid].update(eval_accuracy=scores.get("accuracy"), eval_loss=scores.get("loss"))
        for cid in sorted(rows):
            slot = self.server.slot(cid)
            self.server.emit("client_result", round=round_no, **rows[cid],
                             bytes_sent=slot.conn.bytes_sent if slot else None,
                             bytes_received=slot.conn.bytes_received if slot else None)
        sent1, recv1 = self.server.bytes_totals()
        record = {
            "round": round_no,
            **{k: metrics.get(k) for k in METRIC_KEYS},
            **client_spread(per_client),
            "n_fit_clients": len(accepted),
            "n_failures": len(failures),
            "n_stragglers": self.stragglers,
            "duration_s": round(time.monotonic() - started, 4),
            "bytes_sent": sent1 - sent0,
            "bytes_received": recv1 - recv0,
            "epsilon": self.epsilon,
        }
        self.rounds.append(record)
        self.server.emit("round", **record)

    def _accept_results(self, results: dict[str, FitResult],
                        failures: dict[str, str]) -> tuple[dict[str, dict], list[tuple[str, Any, int]]]:
        """Check each result; keep the good ones (sorted by id) and every client's numbers for its row."""
        accepted = []
        rows: dict[str, dict] = {}
        for cid in sorted(results):
            msg = results[cid]
            if self.config.is_ensemble:
                payload, problem = self._load_model(msg)
            else:
                problem = self._check_arrays(msg)
                payload = [a for _, a in msg.params] if problem is None else None
            status = "ok" if problem is None else "dropped out" if msg.metrics.get("dropped_out") else "rejected"
            rows[cid] = {"client_id": cid, "n_samples": msg.n_samples, "status": status, "reason": problem,
                         **{k: msg.metrics.get(k) for k in ("train_time_s", "train_loss", "train_accuracy")}}
            if problem is not None:
                failures[cid] = problem
            else:
                accepted.append((cid, payload, msg.n_samples))
        return rows, accepted

    def _aggregate(self, accepted: list[tuple[str, Any, int]]) -> None:
        if self.config.is_ensemble:
            models = [m for _, m, _ in accepted]
            counts = [n for _, _, n in accepted]
            if self.config.aggregation == "stacking" and self.data is not None and self.data.X_val is not None:
                self.global_model = stacking(models, self.classes, self._scale(self.data.X_val), self.data.y_val,
                                             seed=self.config.seed)
            else:
                self.global_model = voting(models, counts, self.classes)
            return
        names = [n for n, _ in expected_shapes(self.task.model, self.task.model_params, self.classes,
                                               self.task.n_features)]
        results = [(arrays, n) for _, arrays, n in accepted]
        current = [a for _, a in self.global_arrays] if self.global_arrays is not None else None
        dp = self.config.dp != "none" and current is not None
        if dp:  # clipped (by us or by the clients) and unweighted: see fl/privacy.py
            clip = self.config.clip_norm
            results = [(clip_update(current, arrays, clip) if self.config.dp == "server" else arrays, 1)
                       for arrays, _ in results]
        merged = aggregate_parameters(self.task.model, self.config.aggregation, results,
                                      trim_beta=self.config.trim_beta, num_malicious=self.config.num_malicious,
                                      num_to_keep=self.config.num_to_keep)
        if dp:
            std = self.config.noise_multiplier * self.config.clip_norm / len(results)
            merged = add_gaussian_noise(merged, std, self.noise_rng)
        if current is not None:
            merged = self.optimizer.step(current, merged)
        self.global_arrays = list(zip(names, merged))
        self.global_model = global_estimator(self.task.model, self.task.model_params, self.global_arrays,
                                             self.classes, self.task.n_features)

    def _evaluate(self, round_no: int) -> tuple[dict[str, float], dict[str, dict]]:
        """(global metrics, per-client scores of the global model on each client's own data).

        The global metrics come from the server's test split when it has
        one, else from the clients (sample-weighted mean): federated
        evaluation. Clients are asked only when needed or when client_eval
        is on; a client that fails to answer is reported, never fatal.
        """
        if self.global_model is None:
            return {k: math.nan for k in METRIC_KEYS}, {}
        metrics = None
        if self.data is not None:
            metrics = score_classifier(self.global_model, self._scale(self.data.X_test), self.data.y_test,
                                       self.classes)
        per_client: dict[str, dict] = {}
        if self.data is None or self.config.client_eval:
            per_client = self._evaluate_on_clients(round_no)
        if metrics is None:
            metrics = weighted_mean(per_client)
        return metrics, per_client

    def _evaluate_on_clients(self, round_no: int) -> dict[str, dict]:
        if self.config.is_ensemble:
            blob = blobs.dump_model(self.global_model)
            make = lambda cid: Evaluate(round=round_no, blob=blob)  # noqa: E731
        else:
            make = lambda cid: Evaluate(round=round_no, params=self.global_arrays)  # noqa: E731
        sent, failures = self._send(self.server.active_ids(), make, "evaluating")
        results, late = self._collect(round_no, EvaluateResult, sent)
        failures.update(late)
        self._set_status(sent, "idle")
        for cid, reason in sorted(failures.items()):
            self.server.emit("failure", round=round_no, client_id=cid, reason=f"evaluation: {reason}")
        return {cid: {**{k: r.metrics.get(k) for k in METRIC_KEYS}, "n_samples": r.n_samples}
                for cid, r in sorted(results.items())}


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def weighted_mean(per_client: dict[str, dict]) -> dict[str, float]:
    """Sample-weighted mean of each metric over the clients that reported a finite value."""
    out = {}
    for key in METRIC_KEYS:
        pairs = [(s.get(key), s["n_samples"]) for s in per_client.values()]
        pairs = [(v, n) for v, n in pairs if _finite(v) and n > 0]
        weight = sum(n for _, n in pairs)
        out[key] = sum(v * n for v, n in pairs) / weight if weight else math.nan
    return out


def client_spread(per_client: dict[str, dict]) -> dict[str, float | None]:
    """Worst client's accuracy of the global model on its own data, and the spread (std) across clients."""
    values = [s.get("accuracy") for s in per_client.values() if _finite(s.get("accuracy"))]
    if not values:
        return {"worst_client_accuracy": None, "client_accuracy_std": None}
    return {"worst_client_accuracy": float(min(values)), "client_accuracy_std": float(np.std(values))}
