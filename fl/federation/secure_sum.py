"""Secure aggregation in the round loop: every sum step of a keeper becomes four fit exchanges of SecAgg+.

The keeper wrapped (parameters averaged, or boosted trees' histograms) says
what each of its steps sums (``SumSpec``: the flat length, the clipping
range, which leading arrays are sent as a change from the global ones, what
each client's arrays are weighted by); ``SecureSum`` then runs, with the
clients of the step, the stages of ``fl.federation.secagg``:

1. ``keys``: each client gets its setup (its neighbours, the round's
   settings) and answers two X25519 public keys;
2. ``shares``: each client gets its neighbours' keys and answers its
   encrypted Shamir shares for each of them;
3. ``masked``: the keeper's own step (the global model, or the trees and the
   frontier) plus the shares addressed to each client; it trains (or sums),
   and answers only its masked vector;
4. ``unmask``: each survivor gets who dropped and who survived among its
   neighbours and answers the shares it holds; the server rebuilds the masks,
   and hands the sum and the total weight to the keeper.

A step that is not a sum (the trees' quantile sketch) passes through as is.
The server sees no single client's update: update scrutiny and the keeper's
per-client checks cannot run (docs/strategies.md, "Secure aggregation").
Stage messages are ``fit``/``fit_result`` with the keys and arrays of
docs/protocol.md, "Secure aggregation".
"""

from __future__ import annotations

import math
import secrets
from typing import Any

import numpy as np

from fl.errors import FLError
from fl.federation.global_model import Accepted, GlobalModel, SumSpec
from fl.federation.secagg import (
    CIPHERTEXT_BYTES, KEY_BYTES, SHARE_BYTES, SecAggError, SecAggServer, SecAggSettings, unflatten,
)
from fl.wire import FitResult, NamedArrays

SECAGG_FEATURE = "secagg"  # hello.features of a client that speaks the stages below
STAGES = ("keys", "shares", "masked", "unmask")
STAGE_KEY = "secagg"  # fit.config: which stage this fit is
MIN_CLIENTS = 3  # with two, each could subtract its own update from the sum and read the other's
STEP_KEY = "secagg_step"  # fit.config and fit_result.metrics: which exchange of the run it answers


def secure(inner: GlobalModel, strategy: Any) -> "SecureSum":
    """The keeper ``inner`` with its sums behind secure aggregation; ValueError for a rule that needs each update."""
    if strategy.secagg_refusal:
        raise ValueError(f"secure aggregation cannot serve {strategy.label}: {strategy.secagg_refusal}")
    return SecureSum(inner)


class SecureSumFailed(FLError, RuntimeError):
    """Too few clients are left to finish a secure sum (or to rebuild a secret): the round's sum is lost."""


class SecureSum(GlobalModel):
    """A keeper whose sums go through SecAgg+ (see the module docstring); everything else is the inner's."""

    hides_updates = True

    def __init__(self, inner: GlobalModel, quantization_range: int = 2**32):
        self.inner = inner
        self.quantization_range = quantization_range
        self.stage: str | None = None  # None: between sums (or a plain step); else one of STAGES
        self.exchanges = 0  # every fit exchange of the run: a result names the one it answers
        self.sums = 0  # secure sums of the run: each one's keys are derived for it alone
        self.spec: SumSpec | None = None
        self.server: SecAggServer | None = None
        self.plan: dict[str, Any] = {}
        self.peer_keys: dict[str, dict[str, tuple[bytes, bytes]]] = {}
        self.inbox: dict[str, dict[str, bytes]] = {}
        self.asks: dict[str, Any] = {}
        self.rows: dict[str, int] = {}
        self.excluded: dict[str, str] = {}  # clients the protocol left out of this step, and why
        self.last: dict[str, Any] = {}  # the last sum's survivors and dropouts (the round's record)
        self.failure: str | None = None  # why the last update's sum could not be finished

    # ------------------------------------------------------------------ delegated
    @property
    def estimator(self) -> Any:  # type: ignore[override]
        return self.inner.estimator

    @estimator.setter
    def estimator(self, value: Any) -> None:
        self.inner.estimator = value

    @property
    def cheap_to_send(self) -> bool:  # type: ignore[override]
        return self.inner.cheap_to_send

    @property
    def measurable(self) -> bool:
        return False  # the server never sees an update to measure

    def evaluate_payload(self) -> dict[str, Any]:
        return self.inner.evaluate_payload()

    def parameters(self) -> list[np.ndarray] | None:
        return self.inner.parameters()

    def arrays_named(self) -> NamedArrays | None:
        return self.inner.arrays_named()

    def state(self) -> dict[str, Any]:
        return self.inner.state()

    def estimator_of(self, state: dict[str, Any]) -> Any:
        return self.inner.estimator_of(state)

    def load_state(self, state: dict[str, Any]) -> None:
        self.inner.load_state(state)

    @property
    def round_complete(self) -> bool:
        return self.stage is None and self.inner.round_complete

    # ------------------------------------------------------------------ steps
    def begin_step(self, client_ids: list[str], rows: dict[str, int]) -> None:
        """The clients asked in the coming exchange (and their rows); a new sum sets up its round of SecAgg+."""
        self.excluded = {}
        if self.stage is not None:
            return
        self.spec = self.inner.sum_spec(rows) if hasattr(self.inner, "sum_spec") else None
        if self.spec is None:
            return  # a plain step (the trees' sketch)
        if len(client_ids) < MIN_CLIENTS:
            raise SecureSumFailed(f"secure aggregation needs at least {MIN_CLIENTS} clients in a sum; "
                               f"{len(client_ids)} are left in this round")
        self.sums += 1
        self.rows = dict(rows)
        self.server = SecAggServer()
        quantization = self.quantization_range
        if self.spec.weight == "one":  # no weight to multiply by: the finest grid whose sum of n cannot wrap
            quantization = 2 ** min(50, 62 - math.ceil(math.log2(len(client_ids))))
        settings = SecAggSettings(dimension=self.spec.dimension, round=self.sums,
                                  clipping_range=self.spec.clipping_range, quantization_range=quantization)
        self.plan = self.server.setup(client_ids, settings, seed=secrets.randbits(64))
        self.stage = "keys"

    def step_config(self) -> dict[str, Any]:
        self.exchanges += 1
        if self.stage is None:
            return self.inner.step_config()
        config: dict[str, Any] = {STAGE_KEY: self.stage, STEP_KEY: self.exchanges}
        if self.stage == "masked":
            assert self.spec is not None
            config.update(self.inner.step_config(), secagg_delta=self.spec.delta_arrays,
                          secagg_weight=self.spec.weight)
        return config

    def fit_payload(self) -> dict[str, Any]:
        if self.stage in (None, "masked"):
            return self.inner.fit_payload()
        return {}

    def client_payload(self, client_id: str) -> tuple[dict[str, Any], NamedArrays]:
        """The config keys and arrays of this exchange meant for one client alone."""
        if self.stage == "keys":
            return {"secagg_setup": self.plan[client_id].to_dict()}, []
        if self.stage == "shares":
            peers = sorted(self.peer_keys.get(client_id, {}))
            keys = np.zeros((len(peers), 2, KEY_BYTES), np.uint8)
            for i, v in enumerate(peers):
                c_pk, s_pk = self.peer_keys[client_id][v]
                keys[i] = np.frombuffer(c_pk + s_pk, np.uint8).reshape(2, KEY_BYTES)
            return {"secagg_peers": peers}, [("secagg_peer_keys", keys)]
        if self.stage == "masked":
            senders = sorted(self.inbox.get(client_id, {}))
            sealed = np.zeros((len(senders), CIPHERTEXT_BYTES), np.uint8)
            for i, v in enumerate(senders):
                sealed[i] = np.frombuffer(self.inbox[client_id][v], np.uint8)
            return {"secagg_senders": senders}, [("secagg_shares_in", sealed)]
        if self.stage == "unmask":
            ask = self.asks[client_id]
            return {"secagg_dropped": list(ask.dropped), "secagg_survived": list(ask.survived)}, []
        return {}, []

    # ------------------------------------------------------------------ results
    def accept(self, msg: FitResult) -> tuple[Any, str | None]:
        if self.stage is None:
            return self.inner.accept(msg)
        if msg.metrics.get("dropped_out"):
            return None, "dropped out of this round"
        if msg.metrics.get(STEP_KEY) != self.exchanges:
            return None, "answered another exchange of secure aggregation (too late, or a client without it)"
        arrays = dict(msg.params or [])
        expected = {"keys": {"secagg_keys": (2, KEY_BYTES)},
                    "shares": {"secagg_shares": None},
                    "masked": {"secagg_masked": (self.spec.dimension + 1,) if self.spec else None},
                    "unmask": {"secagg_unmask": None, "secagg_owner_index": None}}[self.stage]
        if set(arrays) != set(expected):
            return None, f"sent {sorted(arrays)} in the {self.stage} stage of secure aggregation, not {sorted(expected)}"
        for name, shape in expected.items():
            if shape is not None and tuple(np.shape(arrays[name])) != shape:
                return None, f"{name} of shape {np.shape(arrays[name])}, not {shape}"
        if self.stage == "keys":
            if np.asarray(arrays["secagg_keys"]).dtype != np.uint8:
                return None, "public keys that are not bytes"
            raw = np.asarray(arrays["secagg_keys"]).tobytes()
            return (raw[:KEY_BYTES], raw[KEY_BYTES:]), None
        if self.stage == "shares":
            sealed = np.asarray(arrays["secagg_shares"])
            if sealed.dtype != np.uint8 or sealed.ndim != 2 or sealed.shape[1] != CIPHERTEXT_BYTES:
                return None, f"shares of shape {sealed.shape}, not (neighbours, {CIPHERTEXT_BYTES}) bytes"
            return sealed, None
        if self.stage == "masked":
            masked = np.asarray(arrays["secagg_masked"])
            if masked.dtype != np.int64:
                return None, f"a masked vector of {masked.dtype}, not int64"
            return masked, None
        shares, index = np.asarray(arrays["secagg_unmask"]), np.asarray(arrays["secagg_owner_index"])
        if shares.dtype != np.uint8 or shares.ndim != 2 or shares.shape[1] != SHARE_BYTES \
                or index.dtype.kind not in "iu" or index.shape != (shares.shape[0],):
            return None, f"unmask shares of shape {shares.shape} with owners {index.shape}"
        return (shares, index), None

    def update(self, accepted: Accepted) -> None:
        self.failure = None
        if self.stage is None:
            self.inner.update(accepted)
            return
        try:
            self._advance({cid: payload for cid, payload, _ in accepted})
        except SecureSumFailed as exc:
            self.stage, self.server = None, None
            if not self.inner.round_complete:  # boosted trees mid-tree: no tree can be finished without the sum
                raise
            self.failure = str(exc)  # the round leaves the model as it was; the next one sets up afresh
            self.last = {"secagg_failure": self.failure}

    def _advance(self, payloads: dict[str, Any]) -> None:
        assert self.server is not None
        if self.stage == "keys":
            self.peer_keys = self._retry(self.server.forward_keys, payloads)
            self._exclude(set(self.peer_keys), "left out of secure aggregation: too few neighbours sent keys")
            self.stage = "shares"
        elif self.stage == "shares":
            addressed = {}
            for cid, sealed in payloads.items():
                peers = sorted(self.peer_keys.get(cid, {}))
                if sealed.shape[0] == len(peers):  # else it shared with others than it was given: dropped
                    addressed[cid] = {v: sealed[i].tobytes() for i, v in enumerate(peers)}
                else:
                    self.excluded[cid] = f"sent {sealed.shape[0]} shares for {len(peers)} neighbours"
            self.inbox = self._retry(self.server.route_shares, addressed)
            self._exclude(set(self.inbox), "left out of secure aggregation: too few neighbours shared")
            self.stage = "masked"
        elif self.stage == "masked":
            self.asks = self._retry(self.server.unmask_request, payloads)
            self.stage = "unmask"
        else:
            responses = {}
            for cid, (shares, index) in payloads.items():
                ask = self.asks[cid]
                owners = [*ask.dropped, *ask.survived, cid]
                if index.min(initial=0) < 0 or index.max(initial=0) >= len(owners):
                    continue  # a response naming no owner it was asked about: as if it never came
                responses[cid] = {owners[int(i)]: shares[j].tobytes() for j, i in enumerate(index)}
            total, weight = self._retry(self.server.aggregate, responses)
            assert self.spec is not None
            self.last = {"secagg_survivors": len(self.server.survivors), "secagg_dropped": len(self.server.dropped),
                         "secagg_excluded": len(self.server.excluded)}
            self.stage = None
            self.inner.update_from_sum(unflatten(total, self.spec.shapes), weight, len(self.server.survivors))

    def _retry(self, stage: Any, payloads: dict[str, Any]) -> Any:
        """Call a server stage; a message it refuses (SecAggError naming its sender) is dropped and the stage
        called again without it, so one hostile client cannot fail the round for the others."""
        payloads = dict(payloads)
        while True:
            try:
                return stage(payloads)
            except SecAggError as exc:
                if exc.client_id is None or exc.client_id not in payloads:
                    raise SecureSumFailed(f"secure aggregation could not finish: {exc}") from None
                payloads.pop(exc.client_id)
                self.excluded[exc.client_id] = f"secure aggregation refused its message: {exc}"

    def _exclude(self, kept: set[str], why: str) -> None:
        assert self.server is not None
        for cid in self.server.excluded:
            if cid not in kept:
                self.excluded.setdefault(cid, why)

    def round_metrics(self) -> dict[str, Any]:
        return dict(self.last)
