"""Typed messages of wire protocol v1, and the pieces they share with framing.

Import these names from ``fl.wire``; this module exists only to keep the
framing code and the message table in files of readable size. It sits *below*
``fl.wire.frames`` (which imports and re-exports everything here, as
``fl.wire`` does in turn), so the errors, ``Frame`` and the constants live
here to avoid an import cycle.

Every ``from_frame`` validates the header fields the contract names and
raises ``ProtocolError("message", ...)`` on anything wrong, so server and
client code can trust the dataclass it gets back. Unknown extra header fields
are ignored: the contract lets later builds add optional fields.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, ClassVar, NoReturn

import numpy as np

PROTOCOL_VERSION = 1
# \A...\Z so that .match(), .search() and .fullmatch() all reject "ok\n".
CLIENT_ID_PATTERN = re.compile(r"\A[A-Za-z0-9_.-]{1,64}\Z")
BLOB_FORMAT_SKOPS = "skops"

NamedArrays = list[tuple[str, np.ndarray]]
"""Ordered (name, array) pairs: the order is the order on the wire."""


class ProtocolError(Exception):
    """A frame or message broke the contract.

    ``.code`` is a short machine string (``magic``, ``header_too_large``,
    ``body_too_large``, ``json``, ``dtype``, ``shape``, ``length``, ``message``,
    ``blob``, ``timeout``); ``str(e)`` is for people.
    """

    def __init__(self, code: str, message: str):
        super().__init__(code, message)  # both in args, so copies keep the code
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message


class PeerClosed(ConnectionError):
    """The peer closed the connection (at a frame boundary or mid-frame)."""


@dataclass
class Frame:
    """One decoded frame: the header as received, the arrays, the blob."""

    header: dict
    arrays: NamedArrays
    blob: bytes | None = None


def json_safe(obj: Any) -> Any:
    """Return ``obj`` ready for ``json.dumps(allow_nan=False)``.

    Non-finite floats become ``None`` (a NaN metric travels as ``null``, the
    only spelling standard JSON has), numpy scalars and arrays become plain
    Python values, tuples become lists. Other values are left for json to
    accept or reject.
    """
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if obj is None or isinstance(obj, (str, int)):
        return obj
    if isinstance(obj, dict):
        return {(k.item() if isinstance(k, np.generic) else k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    return obj


# --------------------------------------------------------------- validation


def _fail(msg_type: str, text: str) -> NoReturn:
    raise ProtocolError("message", f"{msg_type}: {text}")


def _int(h: dict, key: str, t: str, minimum: int | None = None) -> int:
    value = h.get(key)
    if type(value) is not int:  # bool is an int subclass; it is not a count
        _fail(t, f"{key!r} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        _fail(t, f"{key!r} must be >= {minimum}, got {value}")
    return value


def _float(h: dict, key: str, t: str) -> float:
    value = h.get(key)
    if type(value) not in (int, float) or not math.isfinite(value):
        _fail(t, f"{key!r} must be a finite number, got {value!r}")
    return float(value)


def _str(h: dict, key: str, t: str, optional: bool = False) -> str | None:
    value = h.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        _fail(t, f"{key!r} must be a string, got {value!r}")
    return value


def _dict(h: dict, key: str, t: str, optional: bool = False) -> dict | None:
    value = h.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, dict):
        _fail(t, f"{key!r} must be a JSON object, got {type(value).__name__}")
    return value


def _check_type(frame: Frame, cls: type) -> dict:
    h = frame.header
    if h.get("type") != cls.TYPE:
        _fail(cls.TYPE, f"frame has type {h.get('type')!r}")
    return h


def _payload(frame: Frame, t: str) -> tuple[NamedArrays | None, bytes | None]:
    """Parameters of fit/fit_result/evaluate: arrays, a skops blob, or nothing."""
    if frame.blob is not None:
        desc = frame.header.get("blob")
        fmt = desc.get("format") if isinstance(desc, dict) else BLOB_FORMAT_SKOPS
        if fmt != BLOB_FORMAT_SKOPS:
            raise ProtocolError("blob", f"{t}: blob format {fmt!r} is not 'skops'")
    return (list(frame.arrays) if frame.arrays else None), frame.blob


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

    def to_frame(self) -> tuple[dict, NamedArrays, bytes | None]:
        header = {"type": self.TYPE, "protocol": self.protocol, "client_id": self.client_id,
                  "token": self.token, "n_samples": self.n_samples, "n_features": self.n_features}
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
        return cls(client_id=client_id, n_samples=_int(h, "n_samples", cls.TYPE, 1),
                   n_features=_int(h, "n_features", cls.TYPE, 0),
                   token=_str(h, "token", cls.TYPE, optional=True), protocol=protocol)


@dataclass
class Welcome:
    """S→C: the run id and the task every client trains on."""

    TYPE: ClassVar[str] = "welcome"
    run_id: str
    task: dict

    def to_frame(self) -> tuple[dict, NamedArrays, bytes | None]:
        return {"type": self.TYPE, "run_id": self.run_id, "task": json_safe(self.task)}, [], None

    @classmethod
    def from_frame(cls, frame: Frame) -> Welcome:
        """Validate the task's required keys and the types of its optional ones."""
        h = _check_type(frame, cls)
        t = cls.TYPE
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
        return cls(run_id=run_id, task=task)


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
class FitResult:
    """C→S: the locally trained parameters (arrays) or model (skops blob)."""

    TYPE: ClassVar[str] = "fit_result"
    round: int
    n_samples: int
    metrics: dict
    params: NamedArrays | None = None
    blob: bytes | None = None

    def to_frame(self) -> tuple[dict, NamedArrays, bytes | None]:
        header = {"type": self.TYPE, "round": self.round, "n_samples": self.n_samples,
                  "metrics": json_safe(self.metrics)}
        return header, list(self.params or []), self.blob

    @classmethod
    def from_frame(cls, frame: Frame) -> FitResult:
        """Validate round >= 1, n_samples >= 0 and a metrics object."""
        h = _check_type(frame, cls)
        params, blob = _payload(frame, cls.TYPE)
        return cls(round=_int(h, "round", cls.TYPE, 1), n_samples=_int(h, "n_samples", cls.TYPE, 0),
                   metrics=_dict(h, "metrics", cls.TYPE), params=params, blob=blob)


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
    """C→S: the global model's ``accuracy``, ``loss`` and ``f1_macro`` on ``n_samples`` local rows."""

    TYPE: ClassVar[str] = "evaluate_result"
    round: int
    n_samples: int
    metrics: dict

    def to_frame(self) -> tuple[dict, NamedArrays, bytes | None]:
        header = {"type": self.TYPE, "round": self.round, "n_samples": self.n_samples,
                  "metrics": json_safe(self.metrics)}
        return header, [], None

    @classmethod
    def from_frame(cls, frame: Frame) -> EvaluateResult:
        """Validate round >= 1, n_samples >= 0 and a metrics object."""
        h = _check_type(frame, cls)
        return cls(round=_int(h, "round", cls.TYPE, 1), n_samples=_int(h, "n_samples", cls.TYPE, 0),
                   metrics=_dict(h, "metrics", cls.TYPE))


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


Message = Hello | Welcome | Fit | FitResult | Evaluate | EvaluateResult | Ping | Pong | Bye | Error

MESSAGE_TYPES: dict[str, type] = {
    cls.TYPE: cls
    for cls in (Hello, Welcome, Fit, FitResult, Evaluate, EvaluateResult, Ping, Pong, Bye, Error)
}


def parse_message(frame: Frame) -> Message:
    """Turn a frame into its typed message; an unknown type is a protocol error."""
    t = frame.header.get("type")
    cls = MESSAGE_TYPES.get(t) if isinstance(t, str) else None
    if cls is None:
        raise ProtocolError("message", f"unknown message type {t!r}")
    return cls.from_frame(frame)
