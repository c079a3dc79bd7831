"""Typed messages of wire protocol v1, and the pieces they share with framing.

Import these names from ``fl.wire``, which re-exports them with the codec's
(``fl.wire.codec``: frames as bytes). The errors, ``Frame``, the constants and
the field checks are in ``fl.wire.fields``, below both. ``MessageStream`` is
what every framed stream of messages shares (``send_error``, ``close``).

Every ``from_frame`` validates the header fields the contract names and
raises ``ProtocolError("message", ...)`` on anything wrong, so server and
client code can trust the dataclass it gets back. Unknown extra header fields
are ignored: the contract lets later builds add optional fields.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from fl.wire.fields import (
    CLIENT_ID_PATTERN, PROTOCOL_VERSION, Frame, NamedArrays, ProtocolError, _check_type, _counts_matrix, _dict, _fail,
    _float, _int, _payload, _str, json_safe,
)
from fl.wire.summary_messages import SUMMARY_FEATURE, Summarize, Summary  # noqa: F401 - re-exported with the others


# ----------------------------------------------------------------- messages
# An empty parameter list travels as "no arrays", so it comes back as None.


@dataclass
class Hello:
    """C→S: who the client is and what data it holds."""

    TYPE: ClassVar[str] = "hello"
    client_id: str
    n_samples: int
    n_features: int
    token: str | None = None
    protocol: int = PROTOCOL_VERSION
    # Optional v1 extension: capabilities the client offers, e.g. ["summary"] (docs/protocol.md, "Data
    # summaries"); absent (None) for a client written before it, which a server treats as offering none.
    features: list[str] | None = None

    def to_frame(self) -> tuple[dict, NamedArrays, bytes | None]:
        header = {"type": self.TYPE, "protocol": self.protocol, "client_id": self.client_id,
                  "token": self.token, "n_samples": self.n_samples, "n_features": self.n_features}
        if self.features is not None:
            header["features"] = list(self.features)
        return header, [], None

    @classmethod
    def from_frame(cls, frame: Frame) -> Hello:
        """Validate a hello. Another protocol version is parsed, not rejected.

        For a version other than ours the other fields may mean something
        else, so they are read best effort (placeholders when unusable): the
        server must be able to answer ``error`` code ``version``.
        """
        h = _check_type(frame, cls)
        protocol = _int(h, "protocol", cls.TYPE)
        if protocol != PROTOCOL_VERSION:
            def lenient(key: str) -> int:
                return h[key] if type(h.get(key)) is int else 0
            cid, tok = h.get("client_id"), h.get("token")
            return cls(client_id=cid if isinstance(cid, str) and CLIENT_ID_PATTERN.match(cid) else "unknown",
                       n_samples=lenient("n_samples"), n_features=lenient("n_features"),
                       token=tok if isinstance(tok, str) else None, protocol=protocol)
        client_id = _str(h, "client_id", cls.TYPE)
        if not CLIENT_ID_PATTERN.match(client_id):
            _fail(cls.TYPE, "client_id must be 1..64 characters of [A-Za-z0-9_.-]")
        features = h.get("features")
        if features is not None and not (isinstance(features, list) and len(features) <= 64
                                         and all(isinstance(f, str) for f in features)):
            _fail(cls.TYPE, "'features' must be a list of at most 64 strings")
        return cls(client_id=client_id, n_samples=_int(h, "n_samples", cls.TYPE, 1),
                   n_features=_int(h, "n_features", cls.TYPE, 0),
                   token=_str(h, "token", cls.TYPE, optional=True), protocol=protocol, features=features)


@dataclass
class Welcome:
    """S→C: the run id and the task every client trains on; optionally the server's heartbeat timing.

    ``heartbeat_s`` (the server's ping interval) and ``heartbeat_misses``
    (how many silent intervals make a peer gone) are optional fields added
    within v1 (docs/protocol.md, "Heartbeats"): a client that ignores them
    still works, and a server without them sends neither.
    """

    TYPE: ClassVar[str] = "welcome"
    run_id: str
    task: dict
    heartbeat_s: float | None = None
    heartbeat_misses: int | None = None

    def to_frame(self) -> tuple[dict, NamedArrays, bytes | None]:
        header = {"type": self.TYPE, "run_id": self.run_id, "task": json_safe(self.task)}
        if self.heartbeat_s is not None:
            header["heartbeat_s"] = self.heartbeat_s
        if self.heartbeat_misses is not None:
            header["heartbeat_misses"] = self.heartbeat_misses
        return header, [], None

    @classmethod
    def from_frame(cls, frame: Frame) -> Welcome:
        """Validate the task's required keys, the types of its optional ones, and the heartbeat fields if present."""
        h = _check_type(frame, cls)
        t = cls.TYPE
        heartbeat_s = _float(h, "heartbeat_s", t) if h.get("heartbeat_s") is not None else None
        if heartbeat_s is not None and not heartbeat_s > 0:
            _fail(t, "heartbeat_s must be a number > 0")
        misses = _int(h, "heartbeat_misses", t, 1) if h.get("heartbeat_misses") is not None else None
        run_id = _str(h, "run_id", t)
        task = _dict(h, "task", t)
        _str(task, "model", t + ".task")
        _dict(task, "model_params", t + ".task")
        _int(task, "n_features", t + ".task", 0)
        if not isinstance(task.get("classes"), list):
            _fail(t, "task.classes must be a list")
        names = task.get("feature_names")
        if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
            _fail(t, "task.feature_names must be a list of strings")
        _dict(task, "preprocess", t + ".task", optional=True)
        return cls(run_id=run_id, task=task, heartbeat_s=heartbeat_s, heartbeat_misses=misses)


@dataclass
class Fit:
    """S→C: train locally for this round, from these global parameters or (none sent) from scratch.

    ``config`` carries ``return`` ("parameters" or "model"), ``seed`` and,
    when set, ``local_epochs``, ``learning_rate``, ``proximal_mu`` and
    ``dp_clip_norm``: see docs/protocol.md, "The fit config".
    """

    TYPE: ClassVar[str] = "fit"
    round: int
    config: dict
    params: NamedArrays | None = None
    blob: bytes | None = None

    def to_frame(self) -> tuple[dict, NamedArrays, bytes | None]:
        header = {"type": self.TYPE, "round": self.round, "config": json_safe(self.config)}
        return header, list(self.params or []), self.blob

    @classmethod
    def from_frame(cls, frame: Frame) -> Fit:
        """Validate round >= 1 and a config object."""
        h = _check_type(frame, cls)
        params, blob = _payload(frame, cls.TYPE)
        return cls(round=_int(h, "round", cls.TYPE, 1), config=_dict(h, "config", cls.TYPE),
                   params=params, blob=blob)


@dataclass
class FitMetadata:
    """What a client says about its round of training: the optional ``metadata`` object of ``fit_result``.

    Typed JSON, checked field by field; a server reports these as the
    client's own account (it computes what it must trust, such as update
    norms, itself).
    """

    train_time_s: float
    epoch_losses: list[float | None]  # one per local epoch (one for a single solve); null for a non-finite loss
    converged: bool | None  # loss plateau over the client's last epochs; null until it has 3 of them
    samples_used: int  # rows trained on this round
    update_norm: float | None  # L2 norm of (sent parameters - global parameters); null for a fitted model

    MAX_EPOCH_LOSSES: ClassVar[int] = 10_000

    def to_json(self) -> dict:
        return json_safe({"train_time_s": self.train_time_s, "epoch_losses": list(self.epoch_losses),
                          "converged": self.converged, "samples_used": self.samples_used,
                          "update_norm": self.update_norm})

    @classmethod
    def from_json(cls, value: Any, t: str) -> FitMetadata:
        """Validate every field; ``t`` names the message in errors."""
        if not isinstance(value, dict):
            _fail(t, f"'metadata' must be a JSON object, got {type(value).__name__}")
        losses = value.get("epoch_losses")
        if not isinstance(losses, list) or len(losses) > cls.MAX_EPOCH_LOSSES:
            _fail(t, f"'metadata.epoch_losses' must be a list of at most {cls.MAX_EPOCH_LOSSES} numbers")
        if any(v is not None and (type(v) not in (int, float) or not math.isfinite(v)) for v in losses):
            _fail(t, "'metadata.epoch_losses' must hold finite numbers or null")
        converged = value.get("converged")
        if converged is not None and type(converged) is not bool:
            _fail(t, f"'metadata.converged' must be true, false or null, got {converged!r}")
        train_time = _float(value, "train_time_s", t + " metadata")
        norm = value.get("update_norm")
        if norm is not None:
            norm = _float(value, "update_norm", t + " metadata")
        if train_time < 0 or (norm is not None and norm < 0):
            _fail(t, "'metadata.train_time_s' and 'metadata.update_norm' cannot be negative")
        return cls(train_time_s=train_time, epoch_losses=[None if v is None else float(v) for v in losses],
                   converged=converged, samples_used=_int(value, "samples_used", t + " metadata", 0),
                   update_norm=norm)


@dataclass
class FitResult:
    """C→S: the locally trained parameters (arrays) or model (skops blob), and optionally its metadata."""

    TYPE: ClassVar[str] = "fit_result"
    round: int
    n_samples: int
    metrics: dict
    params: NamedArrays | None = None
    blob: bytes | None = None
    metadata: FitMetadata | None = None

    def to_frame(self) -> tuple[dict, NamedArrays, bytes | None]:
        header = {"type": self.TYPE, "round": self.round, "n_samples": self.n_samples,
                  "metrics": json_safe(self.metrics)}
        if self.metadata is not None:
            header["metadata"] = self.metadata.to_json()
        return header, list(self.params or []), self.blob

    @classmethod
    def from_frame(cls, frame: Frame) -> FitResult:
        """Validate round >= 1, n_samples >= 0, a metrics object and, when present, the metadata."""
        h = _check_type(frame, cls)
        params, blob = _payload(frame, cls.TYPE)
        metadata = FitMetadata.from_json(h["metadata"], cls.TYPE) if h.get("metadata") is not None else None
        return cls(round=_int(h, "round", cls.TYPE, 1), n_samples=_int(h, "n_samples", cls.TYPE, 0),
                   metrics=_dict(h, "metrics", cls.TYPE), params=params, blob=blob, metadata=metadata)


@dataclass
class Evaluate:
    """S→C: score the global model (arrays or a skops blob) on local rows, held out if task.local_test_size > 0."""

    TYPE: ClassVar[str] = "evaluate"
    round: int
    params: NamedArrays | None = None
    blob: bytes | None = None

    def to_frame(self) -> tuple[dict, NamedArrays, bytes | None]:
        return {"type": self.TYPE, "round": self.round}, list(self.params or []), self.blob

    @classmethod
    def from_frame(cls, frame: Frame) -> Evaluate:
        """Validate round >= 1."""
        h = _check_type(frame, cls)
        params, blob = _payload(frame, cls.TYPE)
        return cls(round=_int(h, "round", cls.TYPE, 1), params=params, blob=blob)


@dataclass
class EvaluateResult:
    """C→S: the global model's ``accuracy``, ``loss`` and ``f1_macro`` on ``n_samples`` local rows.

    ``confusion`` (optional, added within v1: docs/protocol.md, "Confusion
    counts") is the (k, k) matrix of counts over the task's classes, row the
    true class and column the predicted one, in the order of ``task.classes``;
    its counts add up to ``n_samples``. The server sums the sites' matrices
    and computes macro F1 and balanced accuracy from the sum, which equals
    those of the pooled predictions; a client without it still works (those
    metrics are then not available for the round).
    """

    TYPE: ClassVar[str] = "evaluate_result"
    round: int
    n_samples: int
    metrics: dict
    confusion: list[list[int]] | None = None

    def to_frame(self) -> tuple[dict, NamedArrays, bytes | None]:
        header = {"type": self.TYPE, "round": self.round, "n_samples": self.n_samples,
                  "metrics": json_safe(self.metrics)}
        if self.confusion is not None:
            header["confusion"] = json_safe(self.confusion)
        return header, [], None

    @classmethod
    def from_frame(cls, frame: Frame) -> EvaluateResult:
        """Validate round >= 1, n_samples >= 0, a metrics object and, when present, the confusion counts."""
        h = _check_type(frame, cls)
        n_samples = _int(h, "n_samples", cls.TYPE, 0)
        return cls(round=_int(h, "round", cls.TYPE, 1), n_samples=n_samples, metrics=_dict(h, "metrics", cls.TYPE),
                   confusion=_counts_matrix(h, "confusion", cls.TYPE, n_samples))


@dataclass
class _Probe:
    """Liveness probe body shared by ping and pong: ``t`` is the sender's clock."""

    TYPE: ClassVar[str] = ""
    t: float

    def to_frame(self) -> tuple[dict, NamedArrays, bytes | None]:
        return {"type": self.TYPE, "t": json_safe(self.t)}, [], None

    @classmethod
    def from_frame(cls, frame: Frame) -> "_Probe":
        """Validate a finite number ``t``."""
        return cls(t=_float(_check_type(frame, cls), "t", cls.TYPE))


@dataclass
class Ping(_Probe):
    """Either way: liveness probe."""

    TYPE: ClassVar[str] = "ping"


@dataclass
class Pong(_Probe):
    """Either way: answer to a ping, echoing its ``t`` (not a Ping: isinstance checks stay apart)."""

    TYPE: ClassVar[str] = "pong"


@dataclass
class Bye:
    """S→C: the run is over (finished, stopped or failed); ``final_metrics`` are the last round's."""

    TYPE: ClassVar[str] = "bye"
    reason: str
    final_metrics: dict | None = None

    def to_frame(self) -> tuple[dict, NamedArrays, bytes | None]:
        header: dict = {"type": self.TYPE, "reason": self.reason}
        if self.final_metrics is not None:
            header["final_metrics"] = json_safe(self.final_metrics)
        return header, [], None

    @classmethod
    def from_frame(cls, frame: Frame) -> Bye:
        """Validate a reason string and an optional metrics object."""
        h = _check_type(frame, cls)
        return cls(reason=_str(h, "reason", cls.TYPE),
                   final_metrics=_dict(h, "final_metrics", cls.TYPE, optional=True))


@dataclass
class Error:
    """Either way: something went wrong; the sender closes after it."""

    TYPE: ClassVar[str] = "error"
    code: str
    message: str

    def to_frame(self) -> tuple[dict, NamedArrays, bytes | None]:
        return {"type": self.TYPE, "code": self.code, "message": self.message}, [], None

    @classmethod
    def from_frame(cls, frame: Frame) -> Error:
        """Validate code and message strings."""
        h = _check_type(frame, cls)
        return cls(code=_str(h, "code", cls.TYPE), message=_str(h, "message", cls.TYPE))


Message = Hello | Welcome | Fit | FitResult | Evaluate | EvaluateResult | Ping | Pong | Bye | Error | Summarize \
    | Summary

MESSAGE_TYPES: dict[str, type] = {
    cls.TYPE: cls
    for cls in (Hello, Welcome, Fit, FitResult, Evaluate, EvaluateResult, Ping, Pong, Bye, Error, Summarize, Summary)
}


def parse_message(frame: Frame) -> Message:
    """Turn a frame into its typed message; an unknown type is a protocol error."""
    t = frame.header.get("type")
    cls = MESSAGE_TYPES.get(t) if isinstance(t, str) else None
    if cls is None:
        raise ProtocolError("message", f"unknown message type {t!r}")
    return cls.from_frame(frame)


class MessageStream:
    """What every framed stream of messages shares, whatever carries it (``fl.wire.aio.AioConnection`` on an
    event loop, ``fl.wire.reference_peer.Connection`` on a blocking socket): a subclass gives ``send`` and
    ``_release`` (free the transport once) and keeps ``_closed``."""

    _closed: bool

    def send(self, msg: Message) -> int:
        raise NotImplementedError

    def send_error(self, code: str, message: str) -> None:
        """Tell the peer why it is being dropped; best effort, never raises."""
        try:
            self.send(Error(code=code, message=message))
        except Exception:
            pass

    def close(self) -> None:
        """Close the stream; idempotent, never raises."""
        if self._closed:
            return
        self._closed = True
        self._release()

    def _release(self) -> None:
        raise NotImplementedError
