"""The federated client: connect, handshake, then serve fit and evaluate.

The client's data never leaves this module: it answers ``fit`` with
parameters (or a whole fitted model as a skops blob) and ``evaluate`` with
metrics. It leaves cleanly on ``bye``, on ``error``, and when the server
goes away.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd

from fl import blobs
from fl.behaviour import Behaviour
from fl.data import DataError, apply_standardization, features_from_frame
from fl.metrics import score_classifier
from fl.models import global_estimator
from fl.privacy import clip_update
from fl.training import LocalModel
from fl.connection import Connection
from fl.protocol import (
    Bye,
    Error,
    Evaluate,
    EvaluateResult,
    Fit,
    FitResult,
    Hello,
    Limits,
    PeerClosed,
    Ping,
    Pong,
    ProtocolError,
    Welcome,
)
from fl.task import Task
from fl.tls import check_pin

log = logging.getLogger(__name__)


@dataclass
class LocalData:
    """A client's own data. ``frame`` (raw columns) lets it follow the task's feature order."""

    X: np.ndarray
    y: np.ndarray
    feature_names: list[str] | None = None
    frame: pd.DataFrame | None = None


@dataclass
class ClientResult:
    client_id: str
    reason: str  # why it left: the bye reason, an error, "server gone", "stopped"
    rounds_trained: int = 0
    final_metrics: dict | None = None
    ok: bool = True


class ClientError(Exception):
    """The client cannot take part (refused, wrong labels, missing columns)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass
class ClientSettings:
    host: str = "127.0.0.1"
    port: int = 0
    token: str | None = None
    connect_timeout_s: float = 30.0  # keep retrying (with backoff) this long while the server is not up
    limits: Limits = field(default_factory=Limits)
    ssl_context: ssl.SSLContext | None = None
    server_hostname: str | None = None
    pin_sha256: str | None = None  # with a pin, the server certificate must have this SHA-256 fingerprint


def connect_with_retry(settings: ClientSettings, stop: threading.Event | None = None) -> socket.socket:
    """Connect, retrying with exponential backoff (0.05 s doubling to 2 s) until the timeout."""
    deadline = time.monotonic() + settings.connect_timeout_s
    delay = 0.05
    while True:
        try:
            sock = socket.create_connection((settings.host, settings.port), timeout=5.0)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if settings.ssl_context is not None:
                sock = settings.ssl_context.wrap_socket(sock, server_hostname=settings.server_hostname or settings.host)
                if settings.pin_sha256:
                    try:
                        check_pin(sock, settings.pin_sha256)
                    except ssl.SSLError:
                        sock.close()
                        raise
            sock.settimeout(None)
            return sock
        except ssl.SSLError:
            raise
        except OSError as exc:
            if time.monotonic() + delay > deadline or (stop is not None and stop.is_set()):
                raise ConnectionError(
                    f"could not reach the server at {settings.host}:{settings.port} ({exc})"
                ) from None
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


class FederatedClient:
    """One participant. ``run()`` blocks until the client leaves."""

    def __init__(self, client_id: str, data: LocalData, settings: ClientSettings,
                 on_event: Callable[[dict], None] | None = None, stop: threading.Event | None = None,
                 seed: int = 0, behaviour: Behaviour | None = None):
        self.behaviour = behaviour or Behaviour()
        self.client_id = client_id
        self.data = data
        self.settings = settings
        self.on_event = on_event
        self.stop = stop or threading.Event()
        self.seed = seed
        self.conn: Connection | None = None

    def _emit(self, kind: str, **fields: Any) -> None:
        if self.on_event is not None:
            try:
                self.on_event({"type": kind, "client_id": self.client_id, "t": round(time.time(), 3), **fields})
            except Exception:  # pragma: no cover - defensive
                log.exception("client event sink failed")

    # ------------------------------------------------------------------ session
    def run(self) -> ClientResult:
        """Connect, take part until the server says bye. Never raises for network faults."""
        try:
            sock = connect_with_retry(self.settings, self.stop)
        except (ConnectionError, ssl.SSLError) as exc:
            return ClientResult(self.client_id, str(exc), ok=False)
        self.conn = Connection(sock, self.settings.limits)
        try:
            return self._session(self.conn)
        finally:
            self.conn.close()

    def _session(self, conn: Connection) -> ClientResult:
        try:
            conn.send(Hello(client_id=self.client_id, n_samples=len(self.data.y),
                            n_features=int(self.data.X.shape[1]), token=self.settings.token))
            reply = conn.recv(idle_timeout=self.settings.connect_timeout_s)
        except (PeerClosed, OSError, TimeoutError, ProtocolError) as exc:
            return ClientResult(self.client_id, f"handshake failed: {exc}", ok=False)
        if isinstance(reply, Error):
            return ClientResult(self.client_id, f"refused by server ({reply.code}): {reply.message}", ok=False)
        if not isinstance(reply, Welcome):
            conn.send_error("message", "expected welcome")
            return ClientResult(self.client_id, "server did not send welcome", ok=False)
        try:
            self._prepare(reply)
        except ClientError as exc:
            conn.send_error(exc.code, str(exc))
            self._emit("client_error", code=exc.code, message=str(exc))
            return ClientResult(self.client_id, f"cannot take part ({exc.code}): {exc}", ok=False)
        return self._serve(conn)

    def _prepare(self, welcome: Welcome) -> None:
        """Check the local data against the task; build the local model."""
        try:
            task = Task.from_dict(welcome.task)
        except ValueError as exc:
            raise ClientError("message", str(exc)) from None
        X = self.data.X
        if task.feature_names is not None and self.data.feature_names != task.feature_names:
            if self.data.frame is None:
                if self.data.feature_names is None or not set(task.feature_names) <= set(self.data.feature_names):
                    raise ClientError("shape", "local columns do not match the task's feature_names")
                order = [self.data.feature_names.index(n) for n in task.feature_names]
                X = X[:, order]
            else:
                try:
                    X = features_from_frame(self.data.frame, task.feature_names)
                except DataError as exc:
                    raise ClientError("shape", str(exc)) from None
        if X.shape[1] != task.n_features:
            raise ClientError("shape", f"local data has {X.shape[1]} features, the task {task.n_features}")
        classes = task.classes_array
        y = np.asarray(self.data.y)
        try:
            unknown = sorted(set(np.unique(y).tolist()) - set(classes.tolist()))
        except TypeError:
            unknown = ["(incomparable label types)"]
        if unknown:
            raise ClientError("labels", f"local labels {unknown[:5]} are not among the task's classes")
        self.task = task
        self.X = apply_standardization(X, task.standardize)
        self.y = y.astype(classes.dtype, copy=False) if classes.dtype.kind in "iu" else y
        seed = (self.seed + zlib.crc32(self.client_id.encode())) % (2**31)
        self.model = LocalModel(task.model, task.model_params, classes, task.n_features, seed=seed)

    def _serve(self, conn: Connection) -> ClientResult:
        rounds = 0
        while True:
            if self.stop.is_set():
                return ClientResult(self.client_id, "stopped", rounds)
            try:
                msg = conn.recv(idle_timeout=0.5)
            except TimeoutError:
                continue
            except ProtocolError as exc:
                conn.send_error(exc.code, str(exc))
                return ClientResult(self.client_id, f"protocol error: {exc}", rounds, ok=False)
            except (PeerClosed, OSError):
                return ClientResult(self.client_id, "server gone", rounds, ok=False)
            try:
                if isinstance(msg, Fit):
                    conn.send(self.handle_fit(msg))
                    rounds += 1
                elif isinstance(msg, Evaluate):
                    conn.send(self.handle_evaluate(msg))
                elif isinstance(msg, Ping):
                    conn.send(Pong(t=msg.t))
                elif isinstance(msg, Bye):
                    return ClientResult(self.client_id, msg.reason, rounds, msg.final_metrics)
                elif isinstance(msg, Error):
                    return ClientResult(self.client_id, f"server error ({msg.code}): {msg.message}", rounds, ok=False)
            except ProtocolError as exc:
                conn.send_error(exc.code, str(exc))
                return ClientResult(self.client_id, f"protocol error: {exc}", rounds, ok=False)
            except (PeerClosed, OSError):
                return ClientResult(self.client_id, "server gone", rounds, ok=False)
            except Exception as exc:  # local training failed: tell the server, leave cleanly
                conn.send_error("internal", f"{type(exc).__name__}: {exc}")
                return ClientResult(self.client_id, f"local failure: {exc}", rounds, ok=False)

    # ------------------------------------------------------------------ handlers
    def handle_fit(self, msg: Fit) -> FitResult:
        """Train on local data only and report parameters or the fitted model.

        Fit config keys: local_epochs, learning_rate, proximal_mu (FedProx),
        dp_clip_norm (client-side DP clipping), return ("parameters"/"model").
        """
        started = time.perf_counter()
        if self.behaviour.drops_out():
            return FitResult(round=msg.round, n_samples=len(self.y), metrics={"dropped_out": True, "train_time_s": 0.0})
        whole = msg.config.get("return") == "model"
        y = self.behaviour.labels(self.y, self.task.classes_array)
        try:
            self.model.fit(self.X, y, global_arrays=msg.params, epochs=int(msg.config.get("local_epochs", 1)),
                           config=msg.config, whole_model=whole)
        except (KeyError, ValueError) as exc:
            if msg.params is None:
                raise
            raise ProtocolError("shape", f"fit parameters do not fit the task: {exc}") from None
        metrics = {
            "train_time_s": round(time.perf_counter() - started, 6),
            "train_loss": self.model.train_metrics_["loss"],
            "train_accuracy": self.model.train_metrics_["accuracy"],
        }
        if self.behaviour.delay_s > 0 and self.stop.wait(self.behaviour.delay_s):
            raise PeerClosed("stopped while delaying")
        self._emit("fit", round=msg.round, **metrics)
        if whole:
            return FitResult(round=msg.round, n_samples=len(self.y), metrics=metrics,
                             blob=blobs.dump_model(self.model.estimator_))
        return FitResult(round=msg.round, n_samples=len(self.y), metrics=metrics, params=self._update(msg))

    def _update(self, msg: Fit) -> list[tuple[str, np.ndarray]]:
        """The arrays to send: trained, then (simulated) attacked, then DP-clipped if asked."""
        named = self.model.get_parameters()
        names = [n for n, _ in named]
        arrays = [a for _, a in named]
        global_arrays = [a for _, a in msg.params] if msg.params is not None else None
        arrays = self.behaviour.update(global_arrays, arrays)
        clip = msg.config.get("dp_clip_norm")
        if clip is not None and global_arrays is not None:
            arrays = clip_update(global_arrays, arrays, float(clip))
        return list(zip(names, arrays))

    def handle_evaluate(self, msg: Evaluate) -> EvaluateResult:
        """Score the global model on local data (federated evaluation)."""
        if msg.blob is not None:
            estimator = blobs.load_model(msg.blob)
        elif msg.params is not None:
            try:
                estimator = global_estimator(self.task.model, self.task.model_params, msg.params,
                                             self.task.classes_array, self.task.n_features)
            except (KeyError, ValueError) as exc:
                raise ProtocolError("shape", f"evaluate parameters do not fit the task: {exc}") from None
        else:
            raise ProtocolError("message", "evaluate carried neither parameters nor a model")
        metrics = score_classifier(estimator, self.X, self.y, self.task.classes_array)
        return EvaluateResult(round=msg.round, n_samples=len(self.y), metrics=metrics)
