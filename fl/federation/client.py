"""The federated client: what one participant does with its own data.

The client's data never leaves this module: it checks its data against the
server's task, answers ``fit`` with parameters (or a whole fitted model as a
skops blob) and ``evaluate`` with metrics. The network side (connecting,
the handshake, serving messages, leaving on ``bye``, ``error`` or when the
server goes away) is fl/federation/session.py, which runs one client or a
host of many on an event loop. This module imports the session, never the
other way round: the session drives any client through the public methods
its ``HostedClient`` names (``prepare``, ``emit``, ``handle_fit``,
``handle_evaluate``), and ``ClientResult`` and ``ClientError`` (what a
session ends with, why a client cannot take part) are defined there and
re-exported here.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd

from fl.wire import blobs
from fl.federation.behaviour import Behaviour
from fl.data import DataError, apply_bins, apply_standardization, features_from_frame, local_holdout
from fl.data.labels import label_counts, text_labels
from fl.learning.metrics import score_classifier
from fl.learning.models import get_model
from fl.learning.privacy import clip_update
from fl.learning.strategies import CHANGE_PREFIX, CONTROL_PREFIX
from fl.learning.training import PLATEAU_EPOCHS, LocalModel, has_converged
from fl.wire import MAX_CONFUSION_CLASSES, Evaluate, EvaluateResult, Fit, FitMetadata, FitResult, Limits, ProtocolError, \
    Welcome
from fl.federation import secagg, secure_sum
from fl.federation.events import EventType, make_event
from fl.federation.session import ClientError, ClientHost, ClientResult  # ClientError, ClientResult re-exported
from fl.federation.task import Task, client_seed

log = logging.getLogger(__name__)
MAX_STEP = 2**53  # a step number is echoed to the server: a whole number the wire carries exactly


def _ids(value: Any) -> list[str]:
    """A list of client ids from a server's secure-aggregation config (else SecAggError)."""
    if not isinstance(value, list) or len(value) > secagg.MAX_NEIGHBOURS or not all(isinstance(v, str) for v in value):
        raise secagg.SecAggError("a list of client ids was expected")
    return value


def _bytes_rows(array: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Bytes arrays of secure aggregation: uint8 of exactly ``shape`` (else SecAggError)."""
    if not isinstance(array, np.ndarray) or array.dtype != np.uint8 or array.shape != shape:
        got = f"{array.dtype} {array.shape}" if isinstance(array, np.ndarray) else type(array).__name__
        raise secagg.SecAggError(f"bytes of shape {shape} were expected, got {got}")
    return array


@dataclass
class LocalData:
    """A client's own data. ``frame`` (raw columns) lets it follow the task's feature order."""

    X: np.ndarray
    y: np.ndarray
    feature_names: list[str] | None = None
    frame: pd.DataFrame | None = None
    target_values: pd.Series | None = None  # the label column as read, for a server that bins it into classes
    data_split: dict | None = None  # how a "partition i of N" client rebuilt its rows (checked against the task's)


@dataclass
class ClientSettings:
    """Network side of a client. What a person sets is declared once above this layer (fl/runs/network.py); the
    defaults here are the same (tests/test_network_settings.py), but the port: 0 for a client built in code."""

    host: str = "127.0.0.1"
    port: int = 0
    token: str | None = None
    connect_timeout_s: float = 60.0  # keep retrying (with backoff) this long while the server is not up
    # The server was listening before this client was made (a simulation's own clients): a refused connection
    # then means it has gone (the run stopped), so the client leaves at once instead of retrying for a minute.
    server_up: bool = False
    limits: Limits = field(default_factory=Limits)
    ssl_context: ssl.SSLContext | None = None
    server_hostname: str | None = None
    pin_sha256: str | None = None  # with a pin, the server certificate must have this SHA-256 fingerprint
    reconnect_s: float = 0.0  # after losing the server mid-run, keep trying to rejoin this long (0: leave)


def split_control(params: list | None) -> tuple[list | None, list | None]:
    """A SCAFFOLD ``fit``'s arrays: (the model's, the server's control variate ``c:NAME``, in the model's order)."""
    if params is None:
        return None, None
    model = [(n, a) for n, a in params if not n.startswith(CONTROL_PREFIX)]
    control = [(n, a) for n, a in params if n.startswith(CONTROL_PREFIX)]
    if [n[len(CONTROL_PREFIX):] for n, _ in control] != [n for n, _ in model]:
        raise ProtocolError("shape", "fit: the control variate's arrays must follow the model's, one per array, "
                                     f"named {CONTROL_PREFIX}NAME")
    return model, control


def task_labels(y: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, list]:
    """The local labels as the task's classes, and the (first few) local labels that are none of them.

    Text classes: each row holds the task's own string of its class (an
    object array, 8 bytes a row, one string per class), found by hashing;
    integer labels meet text classes as their decimal text, as
    ``normalize_labels`` writes them when the sites' labels mix.
    """
    y = np.asarray(y)
    if classes.dtype.kind in "iu":
        if y.dtype.kind not in "iu":
            return y, sorted(set(label_counts(y)[0]), key=str)[:5]
        unknown = sorted(set(label_counts(y)[0]) - set(classes.tolist()))
        return y.astype(classes.dtype, copy=False), unknown[:5]
    if classes.dtype.kind != "O":
        try:
            return y, sorted(set(label_counts(y)[0]) - set(classes.tolist()), key=str)[:5]
        except TypeError:
            return y, ["(incomparable label types)"]
    text = y if y.dtype.kind in "OU" else text_labels(str(v) for v in y.tolist())
    index = pd.Index(classes).get_indexer(text)
    if (index < 0).any():
        return y, sorted({str(v) for v in np.asarray(text)[index < 0].tolist()})[:5]
    return classes[index], []


def split_mismatch(server: dict | None, client: dict | None) -> str | None:
    """Why a partition this client rebuilt may hold rows the server tests on, or None.

    A client told "partition i of N" rebuilds the server's split from its own
    flags; with another test share, validation share or seed its rows would
    overlap the server's held-out rows and the run's numbers would be false.
    """
    if server is None or client is None:
        return None
    differ = {k: (client.get(k), v) for k, v in server.items() if client.get(k) != v}
    if not differ:
        return None
    listing = ", ".join(f"{k} {mine} here, {theirs} on the server" for k, (mine, theirs) in differ.items())
    hint = " (the server holds out a validation split for stacking: add --aggregation stacking)" \
        if "val_size" in differ else ""
    return (f"this partition was rebuilt with another split than the server's ({listing}); start the client with "
            f"the server's data flags{hint}")


class FederatedClient:
    """One participant. ``run()`` blocks until the client leaves."""

    def __init__(self, client_id: str, data: LocalData, settings: ClientSettings,
                 on_event: Callable[[dict], None] | None = None, stop: threading.Event | None = None,
                 seed: int = 0, behaviour: Behaviour | None = None,
                 on_attempt: Callable[[int, str, float], None] | None = None):
        self.on_attempt = on_attempt
        self.behaviour = behaviour or Behaviour()
        self.client_id = client_id
        self.data = data
        self.settings = settings
        self.on_event = on_event
        self.stop = stop or threading.Event()
        self.seed = seed
        self.conn: Any = None  # the session's connection, while it lasts
        self.joins = 0  # welcomes received: more than one means it rejoined after losing the server
        self.task_dict: dict | None = None  # the task it prepared for (a rejoin to the same one keeps its state)
        # SCAFFOLD's control variate c_i, kept between rounds (a resumed simulation hands it back: ``variate``)
        self.variate: list[np.ndarray] | None = None

    def emit(self, kind: EventType, **fields: Any) -> None:
        """Hand an event about this client to ``on_event`` (the run's state, a log); never raises."""
        if self.on_event is not None:
            try:
                self.on_event(make_event(kind, client_id=self.client_id, **fields))
            except Exception:  # pragma: no cover - defensive
                log.exception("client event sink failed")

    # ------------------------------------------------------------------ session
    def run(self) -> ClientResult:
        """Connect, take part until the server says bye; blocks. Never raises for network faults.

        One client on an event loop of its own (fl/federation/session.py);
        a ClientHost runs many on one.
        """
        return ClientHost([self], stop=self.stop).run()[0]

    def prepare(self, welcome: Welcome) -> None:
        """Check the local data against the task; build the local model (ClientError if it cannot take part).

        Rejoining the same task (a reconnect, or a resumed server) keeps
        everything: the local model with its warm start and the loss
        history, so the server sees the same client as before.
        """
        if self.task_dict is not None and welcome.task == self.task_dict:
            return
        if self.task_dict is not None:  # another task: nothing of the last one's training carries over
            self.variate = None
        try:
            task = Task.from_dict(welcome.task)
        except ValueError as exc:
            raise ClientError("message", str(exc)) from None
        problem = split_mismatch(task.data_split, self.data.data_split)
        if problem:
            raise ClientError("data", problem)
        X = self.data.X
        if task.feature_names is not None and self.data.feature_names != task.feature_names:
            if self.data.frame is None:
                if self.data.feature_names is None or not set(task.feature_names) <= set(self.data.feature_names):
                    raise ClientError("shape", "local columns do not match the task's feature_names")
                order = [self.data.feature_names.index(n) for n in task.feature_names]
                X = X[:, order]
            else:
                try:  # a numeric column with no number here takes the task's mean: neutral once standardised
                    X = features_from_frame(self.data.frame, task.feature_names,
                                            fill=(task.standardize or {}).get("mean"))
                except DataError as exc:
                    raise ClientError("shape", str(exc)) from None
        if X.shape[1] != task.n_features:
            raise ClientError("shape", f"local data has {X.shape[1]} features, the task {task.n_features}")
        classes = task.classes_array
        y, unknown = task_labels(self._labels(task), classes)
        if unknown:
            raise ClientError("labels", f"local labels {unknown[:5]} are not among the task's classes")
        self.task = task
        try:
            X = apply_standardization(X, task.standardize)
        except DataError as exc:
            raise ClientError("shape", str(exc)) from None
        seed = client_seed(self.seed, self.client_id)
        train, held = local_holdout(len(y), task.local_test_size, seed)
        self.X, self.y = X[train], y[train]
        # The global model is scored on rows this client never trains on; with no
        # held-out share asked for, on its training rows (the server's choice).
        self.X_eval, self.y_eval = (X[held], y[held]) if task.local_test_size > 0 else (self.X, self.y)
        self.model = LocalModel(task.model, task.model_params, classes, task.n_features, seed=seed)
        self.loss_history: list[float] = []  # the last epochs' losses, across rounds (the converged flag)
        self.stats_state: dict = {}  # a model grown on the server: this client's binned rows, its raw scores
        self.secagg: secagg.SecAggClient | None = None  # this round's side of secure aggregation
        self.task_dict = welcome.task

    def _labels(self, task: Task) -> np.ndarray:
        """The local labels, binned with the server's edges when its task turns a numeric label into classes."""
        edges = task.target_edges
        if edges is None or self.data.target_values is None:
            return np.asarray(self.data.y)  # already the task's classes (a simulation), or checked just below
        try:
            return apply_bins(self.data.target_values, edges)
        except DataError as exc:
            raise ClientError("labels", str(exc)) from None

    def handle_fit(self, msg: Fit) -> FitResult:
        """Train on local data only and report parameters or the fitted model.

        Fit config keys: local_epochs, learning_rate, proximal_mu (FedProx),
        dp_clip_norm (client-side DP clipping), return ("parameters"/"model").
        A host calls this on its one compute thread: one fit at a time.
        """
        if msg.config.get(secure_sum.STAGE_KEY):  # secure aggregation: one of its exchanges
            return self._secure(msg)
        if self.behaviour.drops_out():
            return FitResult(round=msg.round, n_samples=len(self.y), metrics={"dropped_out": True, "train_time_s": 0.0})
        if msg.config.get("statistics"):  # a model the server grows from sums: this step's sums
            return self._statistics(msg)
        whole = msg.config.get("return") == "model"
        y = self.behaviour.labels(self.y, self.task.classes_array)
        started = time.perf_counter()
        params, control = split_control(msg.params) if msg.config.get("control_variates") else (msg.params, None)
        self._check_params(params, "fit")
        if control is not None:
            self._check_params([(n[len(CONTROL_PREFIX):], a) for n, a in control], "fit control variate")
            if self.variate is None:
                self.variate = [np.zeros_like(a, dtype=np.float64) for _, a in control]
        correction = [c - own for (_, c), own in zip(control, self.variate)] if control is not None else None
        self.model.fit(self.X, y, global_arrays=params, epochs=int(msg.config.get("local_epochs", 1)),
                       config=msg.config, whole_model=whole, correction=correction)
        metrics = {
            "train_time_s": round(time.perf_counter() - started, 6),
            "train_loss": self.model.train_metrics_["loss"],
            "train_accuracy": self.model.train_metrics_["accuracy"],
        }
        self.emit(EventType.FIT, round=msg.round, **metrics)
        self.loss_history = (self.loss_history + list(self.model.epoch_losses_))[-PLATEAU_EPOCHS:]
        if whole:
            return FitResult(round=msg.round, n_samples=len(self.y), metrics=metrics,
                             blob=blobs.dump_model(self.model.estimator_), metadata=self._metadata(metrics, None))
        sent = self._update(params, msg.config)
        norm = None
        if params is not None:
            norm = float(np.sqrt(sum(float(np.sum((a - g) ** 2)) for (_, a), (_, g) in zip(sent, params))))
        if control is not None:  # SCAFFOLD: c_i becomes the local gradient at the global model; send its change
            new = self.model.gradient_at(self.X, self.y, params, msg.config)
            sent = sent + [(f"{CHANGE_PREFIX}{name}", a - old)
                           for (name, _), a, old in zip(params, new, self.variate)]
            self.variate = new
        return FitResult(round=msg.round, n_samples=len(self.y), metrics=metrics, params=sent,
                         metadata=self._metadata(metrics, norm))

    def _secure(self, msg: Fit) -> FitResult:
        """An exchange of secure aggregation (fl/federation/secure_sum.py; docs/protocol.md): keys, shares, the
        masked result of this client's training or sums, or the shares it holds of its neighbours' secrets.
        Anything malformed from the server is a protocol error (code ``secagg``): the client leaves."""
        config, arrays = msg.config, dict(msg.params or [])
        stage, step = config.get(secure_sum.STAGE_KEY), config.get(secure_sum.STEP_KEY)
        if type(step) is not int or not 0 <= step <= MAX_STEP:
            raise ProtocolError("secagg", "fit: a secure-aggregation exchange without a whole step number")
        mark = {secure_sum.STEP_KEY: step}
        try:
            if stage == "keys":
                self.secagg = secagg.SecAggClient(self.client_id, secagg.ClientSetup.from_dict(config.get("secagg_setup")))
                c_pk, s_pk = self.secagg.keys()
                keys = np.frombuffer(c_pk + s_pk, np.uint8).reshape(2, secagg.KEY_BYTES)
                return FitResult(round=msg.round, n_samples=len(self.y), metrics=mark, params=[("secagg_keys", keys)])
            if self.secagg is None:
                raise secagg.SecAggError(f"a {stage!r} exchange before this round's keys")
            if stage == "shares":
                peers = _ids(config.get("secagg_peers"))
                keys = _bytes_rows(arrays.pop("secagg_peer_keys", None), (len(peers), 2, secagg.KEY_BYTES))
                sealed = self.secagg.shares({v: (keys[i, 0].tobytes(), keys[i, 1].tobytes())
                                             for i, v in enumerate(peers)})
                out = np.stack([np.frombuffer(sealed[v], np.uint8) for v in peers]) if peers else \
                    np.zeros((0, secagg.CIPHERTEXT_BYTES), np.uint8)
                return FitResult(round=msg.round, n_samples=len(self.y), metrics=mark, params=[("secagg_shares", out)])
            if stage == "masked":
                return self._masked(msg, config, arrays, mark)
            if stage == "unmask":
                dropped, survived = _ids(config.get("secagg_dropped")), _ids(config.get("secagg_survived"))
                held = self.secagg.unmask(dropped, survived)
                self.secagg = None  # shares are handed out once a round
                owners = [*dropped, *survived, self.client_id]
                index = np.array([owners.index(o) for o in held], np.int32)
                shares = np.stack([np.frombuffer(held[o], np.uint8) for o in held])
                return FitResult(round=msg.round, n_samples=len(self.y), metrics=mark,
                                 params=[("secagg_unmask", shares), ("secagg_owner_index", index)])
        except secagg.SecAggError as exc:
            raise ProtocolError("secagg", f"fit: secure aggregation: {exc}") from None
        raise ProtocolError("secagg", f"fit: an unknown secure-aggregation stage {stage!r}")

    def _masked(self, msg: Fit, config: dict, arrays: dict, mark: dict) -> FitResult:
        """Train (or sum) as the plain fit would, then send only the masked vector of what it would have sent:
        its first ``secagg_delta`` arrays as a change from the global ones, times its rows (``secagg_weight``)."""
        senders = _ids(config.get("secagg_senders"))
        sealed = _bytes_rows(arrays.pop("secagg_shares_in", None), (len(senders), secagg.CIPHERTEXT_BYTES))
        received = {v: sealed[i].tobytes() for i, v in enumerate(senders)}
        plain_config = {k: v for k, v in config.items() if not str(k).startswith("secagg")}
        plain = self.handle_fit(Fit(round=msg.round, config=plain_config, params=list(arrays.items()) or None,
                                    blob=msg.blob))
        if plain.metrics.get("dropped_out") or plain.params is None:
            return plain  # a simulated dropout before its masked input: the protocol carries on without it
        delta = config.get("secagg_delta")
        if type(delta) is not int or not 0 <= delta <= len(plain.params) or delta > len(arrays):
            raise secagg.SecAggError(f"secagg_delta {delta!r} does not fit the {len(plain.params)} arrays sent")
        global_arrays = list(arrays.values())
        values = [np.asarray(a, dtype=np.float64) - (np.asarray(global_arrays[i], dtype=np.float64) if i < delta else 0)
                  for i, (_, a) in enumerate(plain.params)]
        weight = plain.n_samples if config.get("secagg_weight") == "samples" else 1
        masked = self.secagg.masked_input(values, weight, received)
        metadata = plain.metadata
        if metadata is not None:  # the norm of its own update would say what the mask hides
            metadata = FitMetadata(train_time_s=metadata.train_time_s, epoch_losses=metadata.epoch_losses,
                                   converged=metadata.converged, samples_used=metadata.samples_used, update_norm=None)
        return FitResult(round=msg.round, n_samples=plain.n_samples, metrics={**plain.metrics, **mark},
                         params=[("secagg_masked", masked)], metadata=metadata)

    def _statistics(self, msg: Fit) -> FitResult:
        """One step of a model grown on the server (boosted trees): the sums over this client's training rows
        that the step asks for (fl/learning/models/gbdt.py), and the step it answers."""
        started = time.perf_counter()
        y = self.behaviour.labels(self.y, self.task.classes_array)
        try:
            sums = get_model(self.task.model).local_statistics(self.stats_state, self.X, y, self.task.classes_array,
                                                               msg.config, dict(msg.params or []),
                                                               self.task.model_params)
        except ValueError as exc:  # arrays no honest server sends for this task: nothing computed, nothing sent
            raise ProtocolError("shape", f"fit: {exc}") from None
        step = msg.config.get("step")
        metrics = {"step": step if type(step) is int and 0 <= step <= MAX_STEP else None,  # echoed, so checked
                   "train_time_s": round(time.perf_counter() - started, 6)}
        self.emit(EventType.FIT, round=msg.round, **metrics)
        return FitResult(round=msg.round, n_samples=len(self.y), metrics=metrics, params=sums)

    def _metadata(self, metrics: dict, update_norm: float | None) -> FitMetadata:
        """This round's account of training (protocol: fit_result.metadata)."""
        return FitMetadata(train_time_s=metrics["train_time_s"], epoch_losses=list(self.model.epoch_losses_),
                           converged=has_converged(self.loss_history), samples_used=len(self.y),
                           update_norm=update_norm)

    def _check_params(self, params: list | None, where: str) -> None:
        """Parameters from the server must have the task's names and shapes (else error code ``shape``)."""
        if params is None or get_model(self.task.model).statistics:  # trees: the estimator checks its arrays
            return
        expected = get_model(self.task.model).expected_shapes(self.task.model_params, self.task.classes_array,
                                                              self.task.n_features)
        got = [(name, tuple(arr.shape)) for name, arr in params]
        if got != expected:
            raise ProtocolError("shape", f"{where} parameters {got} do not fit the task, which needs {expected}")

    def _update(self, params: list | None, config: dict) -> list[tuple[str, np.ndarray]]:
        """The arrays to send: trained, then (simulated) attacked, then DP-clipped if asked."""
        named = self.model.get_parameters()
        names = [n for n, _ in named]
        arrays = [a for _, a in named]
        global_arrays = [a for _, a in params] if params is not None else None
        arrays = self.behaviour.update(global_arrays, arrays)
        clip = config.get("dp_clip_norm")
        if clip is not None and global_arrays is not None:
            arrays = clip_update(global_arrays, arrays, float(clip))
        return list(zip(names, arrays))

    def handle_evaluate(self, msg: Evaluate) -> EvaluateResult:
        """Score the global model on the rows this client held out of training."""
        if msg.blob is not None:
            estimator = blobs.load_model(msg.blob)
        elif msg.params is not None:
            self._check_params(msg.params, "evaluate")
            estimator = get_model(self.task.model).global_estimator(
                self.task.model_params, msg.params, self.task.classes_array, self.task.n_features)
        else:
            raise ProtocolError("message", "evaluate carried neither parameters nor a model")
        scores = score_classifier(estimator, self.X_eval, self.y_eval, self.task.classes_array, with_confusion=True)
        matrix = scores.pop("confusion")
        self.emit(EventType.EVALUATE, round=msg.round, n_samples=len(self.y_eval), **scores)
        # The counts, not only the ratios: the server adds them up into the pooled rows' F1 (docs/protocol.md)
        confusion = matrix.tolist() if len(matrix) <= MAX_CONFUSION_CLASSES else None
        return EvaluateResult(round=msg.round, n_samples=len(self.y_eval), metrics=scores, confusion=confusion)
