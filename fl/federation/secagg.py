"""Secure aggregation (SecAgg+): the server learns the sum of the clients' weighted updates, never one update.

A pure, socket-free core of the protocol of Bell et al., "Secure Single-Server
Aggregation with (Poly)Logarithmic Overhead" (CCS 2020), itself the sparse form
of Bonawitz et al., "Practical Secure Aggregation for Privacy-Preserving
Machine Learning" (CCS 2017), staged as Flower's ``SecAggPlusWorkflow``. Two
state machines exchange plain values (``bytes``, ``str``, small dicts, numpy
arrays); the caller moves them over whatever transport it has.

One round, in order (each method may be called once, in this order)::

    server = SecAggServer()
    plan = server.setup(client_ids, SecAggSettings(dimension=d, round=r), seed)   # {cid: ClientSetup}
    client = SecAggClient(cid, plan[cid])                     # one per client and round
    keys = {cid: client.keys()}                               # (c_pk, s_pk): 2 x 32 bytes
    fwd = server.forward_keys(keys)                           # {cid: {neighbour: (c_pk, s_pk)}}
    out = {cid: client.shares(fwd[cid])}                      # {neighbour: 164-byte ciphertext}
    inbox = server.route_shares(out)                          # {cid: {sender: ciphertext}}
    y = {cid: client.masked_input(update, weight, inbox[cid])}  # int64 vector, d + 1 elements
    asks = server.unmask_request(y)                           # {cid: UnmaskRequest(dropped, survived)}
    answers = {cid: client.unmask(asks[cid].dropped, asks[cid].survived)}  # {owner: 68-byte share}
    weighted_sum, total_weight = server.aggregate(answers)    # float64 (d,), int

A client missing from one stage's input has dropped; the round goes on as
long as every secret still needed has ``threshold`` live share holders.
Every server method validates a whole stage's input before changing any
state: a malformed message raises :class:`SecAggError` with ``client_id`` set
to its sender, so the caller may discard it and call the same method again
(that client then counts as dropped).

The math (docs/strategies.md, "Secure aggregation", has the threat model):

* the update x (d floats) is clipped to [-c, c] and rounded to integers
  q = rint(x * (Q/2) / c) in [-Q/2, Q/2], c = ``clipping_range``,
  Q = ``quantization_range``; the client sends, modulo M = ``modulus``,
  y_u = [w_u * q_u, w_u] + PRG(b_u) + sum_{v neighbour} (+PRG(s_uv) if u < v else -PRG(s_uv)),
  w_u its integer weight (sample count), b_u a fresh random 32-byte seed,
  s_uv the X25519 agreement of u's and v's mask keys (through HKDF);
* the pairwise masks cancel in the sum over the survivors U; the server
  rebuilds each survivor's b_u, and each dropped client's mask key s_sk_v
  (to remove the masks v's surviving neighbours added), from Shamir shares
  (threshold t over GF(2**521 - 1)) the clients spread, encrypted, among
  their neighbours before any masked input was sent; a client hands out for
  each neighbour either its b-share (survived) or its s-share (dropped),
  never both;
* the sum S = sum_U w_u q_u is read as a signed integer modulo M, exact
  while total_weight * Q < M (each client refuses a weight above
  ``max_weight``, chosen so that n * max_weight * Q < M); the weighted sum
  is S * c / (Q/2), within total_weight * c / Q of the exact weighted sum
  per coordinate (the mean within c / Q: 1.9e-9 with the defaults), values
  beyond +-c clipped.

Pseudo-random masks are ChaCha20 keystreams (cryptography) keyed through
HKDF-SHA256 with the round's label and number; shares travel under
ChaCha20-Poly1305 with a direction-specific key and the sender and receiver
as associated data. On the wire every ``bytes`` value is a ``|u1`` array and
a masked vector an ``<i8`` array (integration: see docs/protocol.md).
"""

from __future__ import annotations

import math
import os
import secrets
from dataclasses import dataclass
from enum import IntEnum
from functools import lru_cache
from numbers import Integral, Real
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fl.errors import FLError

__all__ = [
    "SecAggError", "SecAggSettings", "ClientSetup", "UnmaskRequest", "SecAggClient", "SecAggServer",
    "flatten", "unflatten", "quantize", "dequantize", "split", "combine", "expand_mask", "neighbour_graph",
    "default_neighbours", "default_threshold", "PRIME", "KEY_BYTES", "SECRET_BYTES", "SHARE_BYTES",
    "CIPHERTEXT_BYTES",
]

PRIME = 2**521 - 1  # a Mersenne prime: Shamir's field, far above the 2**256 secrets (see combine)
KEY_BYTES = 32  # an X25519 public key
SECRET_BYTES = 32  # b_u and an X25519 private key
_Y_BYTES = 66  # ceil(521 / 8)
SHARE_BYTES = 2 + _Y_BYTES  # x (2 bytes, big-endian) then y (66 bytes, big-endian)
_NONCE_BYTES = 12
_TAG_BYTES = 16
CIPHERTEXT_BYTES = _NONCE_BYTES + 2 * SHARE_BYTES + _TAG_BYTES  # 164: nonce, (b-share, s-share) sealed, tag
MAX_ID_BYTES = 200  # a client id in UTF-8
MAX_NEIGHBOURS = 4096
MAX_CLIENTS = 1_000_000
MAX_DIMENSION = 2**28  # 2 GiB of masked int64: far beyond the wire's 256 MiB default
MAX_QUANTIZATION = 2**52  # keeps x * (Q/2) / c exact in float64
DEFAULT_LABEL = "fl-secagg+v1"


class SecAggError(FLError, ValueError):
    """A secure-aggregation step that cannot go on: a malformed or unsafe input, or too few survivors.

    ``client_id`` names the client whose message was at fault, when one was.
    """

    def __init__(self, message: str, client_id: str | None = None) -> None:
        super().__init__(message)
        self.client_id = client_id


# ---------------------------------------------------------------------------------------------------------------
# Checks of values a peer sent (every field is hostile until checked)

def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, (bool, np.bool_))


def _int(value: Any, what: str, lo: int, hi: int, client_id: str | None = None) -> int:
    if not _is_int(value):
        raise SecAggError(f"{what} must be an integer, got {type(value).__name__}", client_id)
    value = int(value)
    if not lo <= value <= hi:
        raise SecAggError(f"{what} must be in [{lo}, {hi}], got {value}", client_id)
    return value


def _client_id(value: Any, what: str = "a client id", client_id: str | None = None) -> str:
    if not isinstance(value, str):
        raise SecAggError(f"{what} must be a string, got {type(value).__name__}", client_id)
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise SecAggError(f"{what} is not valid UTF-8", client_id) from None
    if not 1 <= size <= MAX_ID_BYTES:
        raise SecAggError(f"{what} must be 1 to {MAX_ID_BYTES} bytes of UTF-8, got {size}", client_id)
    return value


def _blob(value: Any, size: int, what: str, client_id: str | None = None) -> bytes:
    """Exactly ``size`` bytes, from bytes, bytearray, memoryview or a 1-D uint8 array (the wire's ``|u1``)."""
    if isinstance(value, np.ndarray):
        if value.dtype != np.uint8 or value.ndim != 1:
            raise SecAggError(f"{what} must be a 1-D uint8 array, got {value.dtype} with shape {value.shape}",
                              client_id)
        value = value.tobytes()
    elif isinstance(value, (bytearray, memoryview)):
        value = bytes(value)
    elif not isinstance(value, bytes):
        raise SecAggError(f"{what} must be bytes, got {type(value).__name__}", client_id)
    if len(value) != size:
        raise SecAggError(f"{what} must be {size} bytes, got {len(value)}", client_id)
    return value


def _mapping(value: Any, what: str, client_id: str | None = None) -> Mapping:
    if not isinstance(value, Mapping):
        raise SecAggError(f"{what} must be a mapping, got {type(value).__name__}", client_id)
    return value


def _id_list(value: Any, what: str, client_id: str | None = None) -> list[str]:
    """A list of distinct client ids (a list, tuple, set or frozenset; not a string)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple, set, frozenset)):
        raise SecAggError(f"{what} must be a list of client ids, got {type(value).__name__}", client_id)
    ids = [_client_id(v, f"an id in {what}", client_id) for v in value]
    if len(set(ids)) != len(ids):
        dup = next(v for v in ids if ids.count(v) > 1)
        raise SecAggError(f"{what} names {dup!r} twice", client_id)
    return ids


# ---------------------------------------------------------------------------------------------------------------
# Settings

def default_neighbours(num_clients: int) -> int:
    """SecAgg+'s k: min(n - 1, 2 * ceil(3 * log2 n)), so O(log n) neighbours (all pairs up to 30 clients)."""
    if num_clients < 2:
        return 0
    return min(num_clients - 1, 2 * math.ceil(3 * math.log2(num_clients)))


def default_threshold(num_neighbours: int) -> int:
    """t = ceil(2 (k + 1) / 3) of the k + 1 holders of a client's shares (its neighbours and itself)."""
    return math.ceil(2 * (num_neighbours + 1) / 3)


@dataclass(frozen=True)
class SecAggSettings:
    """A round's parameters. The server fills in ``num_clients`` and the ``None`` fields (``resolved``).

    * ``dimension``: d, the length of the flattened update (``flatten``);
    * ``round`` and ``label``: domain separation of every derived key;
    * ``num_neighbours``: k; None for ``default_neighbours(n)``; n - 1 (all pairs) when k >= n - 1,
      otherwise even (a ring of k/2 on either side, in a random order drawn from the server's seed);
    * ``threshold``: t, shares needed to rebuild a secret; None for ``default_threshold(k)``; must
      be more than half of the k + 1 holders (so that no server learns both of a client's secrets)
      and at most k + 1; with t <= k, floor(k + 1 - t) holders of a secret may drop;
    * ``clipping_range``: c, each coordinate is clipped to [-c, c] (8.0 as Flower);
    * ``quantization_range``: Q, [-c, c] maps to the integers [-Q/2, Q/2] (step 2c/Q);
    * ``modulus``: M, a power of two up to 2**64, the masked vectors' arithmetic;
    * ``max_weight``: the largest weight (sample count) a client may send; None for the largest that
      keeps the sum exact, (M - 1) // (n * Q).
    """

    dimension: int
    round: int = 0
    label: str = DEFAULT_LABEL
    num_neighbours: int | None = None
    threshold: int | None = None
    clipping_range: float = 8.0
    quantization_range: int = 2**32
    modulus: int = 2**64
    max_weight: int | None = None
    num_clients: int | None = None

    def __post_init__(self) -> None:
        _int(self.dimension, "dimension", 1, MAX_DIMENSION)
        _int(self.round, "round", 0, 2**63 - 1)
        for name in ("dimension", "round", "num_neighbours", "threshold", "quantization_range", "modulus",
                     "max_weight", "num_clients"):  # numpy integers become Python ints (to_bytes, JSON)
            value = getattr(self, name)
            if _is_int(value):
                object.__setattr__(self, name, int(value))
        if not isinstance(self.label, str) or not 1 <= len(self.label) <= 64 or not self.label.isascii() \
                or not self.label.isprintable():
            raise SecAggError("label must be 1 to 64 printable ASCII characters")
        if not isinstance(self.clipping_range, Real) or isinstance(self.clipping_range, (bool, np.bool_)) \
                or not math.isfinite(self.clipping_range) or not self.clipping_range > 0:
            raise SecAggError(f"clipping_range must be a finite number > 0, got {self.clipping_range!r}")
        object.__setattr__(self, "clipping_range", float(self.clipping_range))
        _int(self.quantization_range, "quantization_range", 2, MAX_QUANTIZATION)
        if self.quantization_range % 2:
            raise SecAggError("quantization_range must be even (it maps [-c, c] onto [-Q/2, Q/2])")
        _int(self.modulus, "modulus", 2**16, 2**64)
        if self.modulus & (self.modulus - 1):
            raise SecAggError(f"modulus must be a power of two, got {self.modulus}")
        if self.modulus <= self.quantization_range:
            raise SecAggError("modulus must be larger than quantization_range")
        if self.num_neighbours is not None:
            _int(self.num_neighbours, "num_neighbours", 1, MAX_NEIGHBOURS)
        if self.threshold is not None:
            _int(self.threshold, "threshold", 1, MAX_NEIGHBOURS + 1)
        if self.max_weight is not None:
            _int(self.max_weight, "max_weight", 1, 2**63 - 1)
        if self.num_clients is not None:
            self._check_resolved()

    @property
    def is_resolved(self) -> bool:
        return self.num_clients is not None

    @property
    def step(self) -> float:
        """The quantisation step 2c/Q."""
        return 2.0 * self.clipping_range / self.quantization_range

    @property
    def error_bound(self) -> float:
        """The largest error of one coordinate of the weighted mean, values within [-c, c]: c / Q."""
        return self.clipping_range / self.quantization_range

    def _check_resolved(self) -> None:
        n = _int(self.num_clients, "num_clients", 2, MAX_CLIENTS)
        if self.num_neighbours is None or self.threshold is None or self.max_weight is None:
            raise SecAggError("settings with num_clients must name num_neighbours, threshold and max_weight")
        k, t = self.num_neighbours, self.threshold
        if k > n - 1:
            raise SecAggError(f"num_neighbours {k} exceeds the other {n - 1} clients")
        if k < n - 1 and k % 2:
            raise SecAggError(f"num_neighbours must be even below n - 1 (k/2 on either side), got {k}")
        if not (k + 1) / 2 < t <= k + 1:
            raise SecAggError(f"threshold must be more than half of the {k + 1} share holders (k neighbours and "
                              f"the client) and at most {k + 1}, got {t}: with fewer, a server could gather both "
                              "a client's self-mask and mask-key shares")
        if n * self.max_weight * self.quantization_range >= self.modulus:
            raise SecAggError(f"{n} clients x max_weight {self.max_weight} x quantization_range "
                              f"{self.quantization_range} must stay below the modulus {self.modulus} (else the "
                              "sum wraps around)")

    def resolved(self, num_clients: int) -> "SecAggSettings":
        """The settings for a round of ``num_clients`` clients, every default filled in and checked."""
        n = _int(num_clients, "the number of clients", 2, MAX_CLIENTS)
        if self.num_clients is not None and self.num_clients != n:
            raise SecAggError(f"settings are for {self.num_clients} clients, not {n}")
        k = default_neighbours(n) if self.num_neighbours is None else min(self.num_neighbours, n - 1)
        t = default_threshold(k) if self.threshold is None else self.threshold
        if self.max_weight is None:
            max_weight = (self.modulus - 1) // (n * self.quantization_range)
            if max_weight < 1:
                raise SecAggError(f"quantization_range {self.quantization_range} x {n} clients reaches the "
                                  f"modulus {self.modulus}: lower quantization_range")
        else:
            max_weight = self.max_weight
        return SecAggSettings(self.dimension, self.round, self.label, k, t, float(self.clipping_range),
                              self.quantization_range, self.modulus, max_weight, n)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (the modulus as ``modulus_bits``), for a message header."""
        return {"dimension": self.dimension, "round": self.round, "label": self.label,
                "num_clients": self.num_clients, "num_neighbours": self.num_neighbours,
                "threshold": self.threshold, "clipping_range": float(self.clipping_range),
                "quantization_range": self.quantization_range, "modulus_bits": self.modulus.bit_length() - 1,
                "max_weight": self.max_weight}

    @classmethod
    def from_dict(cls, fields: Any) -> "SecAggSettings":
        """Resolved settings from ``to_dict``'s fields, as a client receives them; anything else raises."""
        fields = _mapping(fields, "secure-aggregation settings")
        names = ("dimension", "round", "label", "num_clients", "num_neighbours", "threshold", "clipping_range",
                 "quantization_range", "modulus_bits", "max_weight")
        missing = [name for name in names if name not in fields]
        if missing:
            raise SecAggError(f"secure-aggregation settings lack {', '.join(missing)}")
        bits = _int(fields["modulus_bits"], "modulus_bits", 16, 64)
        clip = fields["clipping_range"]
        if isinstance(clip, (bool, np.bool_)) or not isinstance(clip, Real):
            raise SecAggError(f"clipping_range must be a number, got {type(clip).__name__}")
        settings = cls(dimension=fields["dimension"], round=fields["round"], label=fields["label"],
                       num_neighbours=fields["num_neighbours"], threshold=fields["threshold"],
                       clipping_range=float(clip), quantization_range=fields["quantization_range"],
                       modulus=2**bits, max_weight=fields["max_weight"], num_clients=fields["num_clients"])
        if not settings.is_resolved:
            raise SecAggError("secure-aggregation settings must name num_clients")
        return settings


@dataclass(frozen=True)
class ClientSetup:
    """What the server tells one client at setup: its neighbours and the round's resolved settings."""

    neighbours: tuple[str, ...]
    settings: SecAggSettings

    def to_dict(self) -> dict[str, Any]:
        return {"neighbours": list(self.neighbours), "settings": self.settings.to_dict()}

    @classmethod
    def from_dict(cls, fields: Any) -> "ClientSetup":
        fields = _mapping(fields, "a secure-aggregation setup")
        if "neighbours" not in fields or "settings" not in fields:
            raise SecAggError("a secure-aggregation setup needs neighbours and settings")
        return cls(tuple(_id_list(fields["neighbours"], "neighbours")), SecAggSettings.from_dict(fields["settings"]))


@dataclass(frozen=True)
class UnmaskRequest:
    """Which of a client's neighbours dropped (send their mask-key shares) and survived (self-mask shares)."""

    dropped: tuple[str, ...]
    survived: tuple[str, ...]


# ---------------------------------------------------------------------------------------------------------------
# Vectors, quantisation, masks

def flatten(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Parameter arrays as one float64 vector (C order, array after array)."""
    if isinstance(arrays, np.ndarray):
        arrays = [arrays]
    return np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays]) if len(arrays) else \
        np.zeros(0, dtype=np.float64)


def unflatten(vector: np.ndarray, shapes: Sequence[tuple[int, ...]]) -> list[np.ndarray]:
    """The inverse of ``flatten``: arrays of ``shapes`` (float64 copies) from one vector."""
    vector = np.asarray(vector, dtype=np.float64)
    sizes = [math.prod(shape) for shape in shapes]
    if vector.ndim != 1 or vector.size != sum(sizes):
        raise SecAggError(f"a vector of {vector.size} values cannot fill shapes holding {sum(sizes)}")
    out, start = [], 0
    for shape, size in zip(shapes, sizes):
        out.append(vector[start:start + size].reshape(shape).copy())
        start += size
    return out


def quantize(vector: np.ndarray, clipping_range: float, quantization_range: int) -> np.ndarray:
    """Clip to [-c, c] and round to the nearest of the integers [-Q/2, Q/2] (int64); error <= c / Q."""
    half = quantization_range // 2
    clipped = np.clip(np.asarray(vector, dtype=np.float64), -clipping_range, clipping_range)
    return np.rint(clipped * (half / clipping_range)).astype(np.int64)


def dequantize(values: np.ndarray, clipping_range: float, quantization_range: int) -> np.ndarray:
    """Integers (or a sum of weighted integers) back to floats: values * c / (Q/2)."""
    return np.asarray(values).astype(np.float64) * (clipping_range / (quantization_range // 2))


def expand_mask(key: bytes, length: int) -> np.ndarray:
    """``length`` uint64 words of the ChaCha20 keystream of a 32-byte key: a deterministic, secure PRG."""
    encryptor = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()
    return np.frombuffer(encryptor.update(bytes(8 * length)), dtype="<u8").astype(np.uint64)


@lru_cache(maxsize=64)
def _prefix(label: str, round_: int) -> bytes:
    return b"".join(len(p).to_bytes(2, "big") + p for p in (label.encode(), round_.to_bytes(8, "big")))


def _info(settings: SecAggSettings, purpose: bytes, *ids: str) -> bytes:
    """HKDF info / AEAD associated data: label, round, purpose and ids, each length-prefixed."""
    parts = [purpose, *(i.encode() for i in ids)]
    return _prefix(settings.label, settings.round) + b"".join(len(p).to_bytes(2, "big") + p for p in parts)


def _kdf(secret: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


def _sign_plus(u: str, v: str) -> bool:
    """u adds the pair mask s_uv when u < v and subtracts it otherwise, so each pair cancels."""
    return u < v


def _pair_key(settings: SecAggSettings, agreement: bytes, u: str, v: str) -> bytes:
    return _kdf(agreement, _info(settings, b"pair-mask", min(u, v), max(u, v)))


def _self_key(settings: SecAggSettings, seed: bytes, u: str) -> bytes:
    return _kdf(seed, _info(settings, b"self-mask", u))


def _share_key(settings: SecAggSettings, agreement: bytes, src: str, dst: str) -> bytes:
    return _kdf(agreement, _info(settings, b"share-key", src, dst))


def neighbour_graph(client_ids: Sequence[str], num_neighbours: int, seed: int) -> dict[str, tuple[str, ...]]:
    """SecAgg+'s graph: a ring of the clients in an order drawn from ``seed``, each joined to the
    ``k/2`` before and after it (a random Harary graph); all pairs when k >= n - 1."""
    ids = sorted(client_ids)
    n = len(ids)
    if num_neighbours >= n - 1:
        return {u: tuple(v for v in ids if v != u) for u in ids}
    order = [ids[int(i)] for i in np.random.default_rng(seed).permutation(n)]
    half = num_neighbours // 2
    return {u: tuple(sorted(order[(i + j) % n] for j in range(-half, half + 1) if j)) for i, u in enumerate(order)}


def _holders(owner: str, neighbours: Iterable[str]) -> dict[str, int]:
    """Each holder of ``owner``'s shares (its neighbours and itself) and its share's x, 1-based in id order."""
    return {h: x for x, h in enumerate(sorted([owner, *neighbours]), start=1)}


# ---------------------------------------------------------------------------------------------------------------
# Shamir secret sharing over GF(2**521 - 1)

def _random_field(entropy: Callable[[int], bytes]) -> int:
    while True:
        value = int.from_bytes(entropy(_Y_BYTES), "big") & ((1 << 521) - 1)
        if value < PRIME:
            return value


def split(secret: bytes, n: int, t: int, entropy: Callable[[int], bytes] = os.urandom) -> list[bytes]:
    """Shamir shares of a 32-byte secret: n shares (x = 1..n), any t of which rebuild it.

    Each share is ``SHARE_BYTES`` bytes: x (2 bytes) and y = f(x) (66 bytes), f a random polynomial of degree
    t - 1 over GF(2**521 - 1) with f(0) = the secret. Fewer than t shares say nothing about it.
    """
    secret = _blob(secret, SECRET_BYTES, "a secret")
    n = _int(n, "the number of shares", 1, 65535)
    t = _int(t, "the threshold", 1, n)
    coefficients = [int.from_bytes(secret, "big")] + [_random_field(entropy) for _ in range(t - 1)]
    shares = []
    for x in range(1, n + 1):
        y = 0
        for a in reversed(coefficients):
            y = (y * x + a) % PRIME
        shares.append(x.to_bytes(2, "big") + y.to_bytes(_Y_BYTES, "big"))
    return shares


def _parse_share(share: Any, what: str = "a share", client_id: str | None = None) -> tuple[int, int, bytes]:
    share = _blob(share, SHARE_BYTES, what, client_id)
    x, y = int.from_bytes(share[:2], "big"), int.from_bytes(share[2:], "big")
    if x == 0:
        raise SecAggError(f"{what} has x = 0 (that point is the secret itself)", client_id)
    if y >= PRIME:
        raise SecAggError(f"{what} is not an element of the field", client_id)
    return x, y, share


@lru_cache(maxsize=4096)
def _lagrange_at_zero(xs: tuple[int, ...]) -> tuple[int, ...]:
    """lambda_i = prod_{j != i} x_j / (x_j - x_i) mod p, with one modular inversion for all (Montgomery)."""
    everything = math.prod(xs)
    dens = [math.prod([xj - xi for xj in xs if xj != xi]) for xi in xs]  # small exact integers
    prefix = [1]
    for den in dens:
        prefix.append(prefix[-1] * den % PRIME)
    inverse = pow(prefix[-1], -1, PRIME)
    out = [0] * len(xs)
    for i in range(len(xs) - 1, -1, -1):
        out[i] = (everything // xs[i]) * inverse % PRIME * prefix[i] % PRIME  # inverse = 1 / (den_0 ... den_i)
        inverse = inverse * dens[i] % PRIME
    return tuple(out)


def combine(shares: Sequence[bytes], threshold: int | None = None) -> bytes:
    """The 32-byte secret from Shamir shares (the first ``threshold`` of them, or all).

    Raises SecAggError on fewer than ``threshold`` shares, a malformed share or two shares of one x, and when
    the result is not a 32-byte value: too few shares (fewer than the polynomial's degree + 1), shares of
    different secrets or randomly corrupted ones give a uniform field element, below 2**256 with probability
    2**-265. (A share changed on purpose by a small amount may shift the secret instead; the server's range
    checks after unmasking catch the wrong mask that follows.)
    """
    if isinstance(shares, (bytes, bytearray, str)) or not isinstance(shares, Sequence):
        raise SecAggError("shares must be a list of shares")
    points = [_parse_share(s)[:2] for s in shares]
    if threshold is not None:
        threshold = _int(threshold, "the threshold", 1, 65535)
        if len(points) < threshold:
            raise SecAggError(f"{len(points)} shares cannot rebuild a secret shared with threshold {threshold}")
        points = points[:threshold]
    if not points:
        raise SecAggError("no shares to combine")
    if len({x for x, _ in points}) != len(points):
        raise SecAggError("two shares have the same x")
    points.sort()
    lambdas = _lagrange_at_zero(tuple(x for x, _ in points))
    value = sum(y * lam for (_, y), lam in zip(points, lambdas)) % PRIME
    if value >= 1 << (8 * SECRET_BYTES):
        raise SecAggError("the shares do not rebuild a 32-byte secret (too few, corrupted or of different secrets)")
    return value.to_bytes(SECRET_BYTES, "big")


# ---------------------------------------------------------------------------------------------------------------
# The client

class _Stage(IntEnum):
    """Which call a round's state machine expects next."""

    NEW = 0
    KEYS = 1
    SHARES = 2
    MASKED = 3
    UNMASK = 4
    DONE = 5


def _check_stage(stage: _Stage, expected: _Stage, step: str) -> None:
    if stage != expected:
        raise SecAggError(f"{step} is out of order (each stage once, in order; this round "
                          f"{'is over' if stage == _Stage.DONE else 'expects another call first'})")


def _load_public(raw: Any, what: str, client_id: str | None = None) -> tuple[bytes, X25519PublicKey]:
    raw = _blob(raw, KEY_BYTES, what, client_id)
    try:
        return raw, X25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise SecAggError(f"{what} is not an X25519 public key", client_id) from None


def _agree(private: X25519PrivateKey, public: X25519PublicKey, what: str, client_id: str | None = None) -> bytes:
    try:
        return private.exchange(public)
    except ValueError:  # a low-order point: the shared secret would be zero
        raise SecAggError(f"{what} is a weak X25519 key (low order)", client_id) from None


def _key_pair(value: Any, what: str, client_id: str | None = None) -> tuple[Any, Any]:
    if isinstance(value, (str, bytes, bytearray)) or not isinstance(value, (list, tuple)) or len(value) != 2:
        raise SecAggError(f"{what} must be a pair (c_pk, s_pk) of {KEY_BYTES}-byte keys", client_id)
    return value[0], value[1]


class SecAggClient:
    """One client's side of one round: ``keys``, ``shares``, ``masked_input``, ``unmask``, in that order.

    ``entropy`` (n -> n random bytes) is for reproducible tests only; every real round uses os.urandom.
    A client never reveals both the self-mask share and the mask-key share of one neighbour, unmasks once,
    and refuses to go on with fewer than ``threshold`` holders alive.
    """

    def __init__(self, client_id: str, setup: ClientSetup, *, entropy: Callable[[int], bytes] = os.urandom) -> None:
        self.client_id = _client_id(client_id)
        if isinstance(setup, Mapping):
            setup = ClientSetup.from_dict(setup)
        if not isinstance(setup, ClientSetup) or not isinstance(setup.settings, SecAggSettings):
            raise SecAggError("setup must be a ClientSetup")
        settings = setup.settings
        if not settings.is_resolved:
            raise SecAggError("the setup's settings are not resolved (the server fills in num_clients)")
        neighbours = _id_list(list(setup.neighbours), "neighbours")
        if self.client_id in neighbours:
            raise SecAggError("a client cannot be its own neighbour")
        if len(neighbours) != settings.num_neighbours:
            raise SecAggError(f"the setup names {len(neighbours)} neighbours, the settings {settings.num_neighbours}")
        self.settings = settings
        self.neighbours = tuple(sorted(neighbours))
        self._entropy = entropy
        self._stage = _Stage.NEW
        self._x = _holders(self.client_id, self.neighbours)  # x of each holder of this client's shares
        self._c_sk: X25519PrivateKey | None = None
        self._s_sk: X25519PrivateKey | None = None
        self._b = b""
        self._pair: dict[str, bytes] = {}  # neighbour -> pair-mask key (neighbours that sent keys)
        self._inbound: dict[str, bytes] = {}  # neighbour -> key of the shares it sends this client
        self._own_b_share = b""
        self._held: dict[str, tuple[bytes, bytes]] = {}  # neighbour -> (its b-share, its s-share) held here
        self.clipped = 0  # coordinates of the update clipped to +-clipping_range (not sent anywhere)

    def keys(self) -> tuple[bytes, bytes]:
        """Stage 2: fresh X25519 public keys, (c_pk for the share encryption, s_pk for the pair masks)."""
        _check_stage(self._stage, _Stage.NEW, "keys")
        self._c_sk = X25519PrivateKey.from_private_bytes(self._entropy(32))
        self._s_sk = X25519PrivateKey.from_private_bytes(self._entropy(32))
        self._b = self._entropy(SECRET_BYTES)
        self._stage = _Stage.KEYS
        return self._c_sk.public_key().public_bytes_raw(), self._s_sk.public_key().public_bytes_raw()

    def shares(self, neighbour_keys: Mapping[str, tuple[bytes, bytes]]) -> dict[str, bytes]:
        """Stage 4: for each neighbour that sent keys, its encrypted shares of b_u and s_sk (164 bytes).

        ``neighbour_keys`` maps neighbours to (c_pk, s_pk); a neighbour missing from it has dropped.
        """
        _check_stage(self._stage, _Stage.KEYS, "shares")
        assert self._c_sk is not None and self._s_sk is not None
        settings, me = self.settings, self.client_id
        neighbour_keys = _mapping(neighbour_keys, "the neighbours' keys")
        mine = {self._c_sk.public_key().public_bytes_raw(), self._s_sk.public_key().public_bytes_raw()}
        seen: set[bytes] = set()
        peers: dict[str, tuple[X25519PublicKey, X25519PublicKey]] = {}
        for v, pair in neighbour_keys.items():
            v = _client_id(v, "a neighbour id")
            if v not in self._x or v == me:
                raise SecAggError(f"keys of {v!r}, who is not a neighbour of {me!r}")
            raw_c, c_pk = _load_public(_key_pair(pair, f"{v}'s keys")[0], f"{v}'s c_pk")
            raw_s, s_pk = _load_public(pair[1], f"{v}'s s_pk")
            if raw_c in mine or raw_s in mine or raw_c in seen or raw_s in seen or raw_c == raw_s:
                raise SecAggError(f"{v}'s keys repeat a key already seen this round")
            seen |= {raw_c, raw_s}
            peers[v] = (c_pk, s_pk)
        if len(peers) + 1 < settings.threshold:
            raise SecAggError(f"only {len(peers)} of {me}'s {len(self.neighbours)} neighbours sent keys; the round "
                              f"needs at least {settings.threshold - 1} (threshold {settings.threshold} holders)")
        agreements = {v: (_agree(self._c_sk, c_pk, f"{v}'s c_pk"), _agree(self._s_sk, s_pk, f"{v}'s s_pk"))
                      for v, (c_pk, s_pk) in peers.items()}
        holders = len(self._x)
        b_shares = split(self._b, holders, settings.threshold, self._entropy)
        s_shares = split(self._s_sk.private_bytes_raw(), holders, settings.threshold, self._entropy)
        out = {}
        for v in sorted(peers):
            c_agreement, s_agreement = agreements[v]
            x = self._x[v]
            nonce = self._entropy(_NONCE_BYTES)
            sealed = ChaCha20Poly1305(_share_key(settings, c_agreement, me, v)).encrypt(
                nonce, b_shares[x - 1] + s_shares[x - 1], _info(settings, b"shares", me, v))
            out[v] = nonce + sealed
            self._inbound[v] = _share_key(settings, c_agreement, v, me)
            self._pair[v] = _pair_key(settings, s_agreement, me, v)
        self._own_b_share = b_shares[self._x[me] - 1]
        self._stage = _Stage.SHARES
        return out

    def masked_input(self, update: np.ndarray | Sequence[np.ndarray], weight: int,
                     received_shares: Mapping[str, bytes]) -> np.ndarray:
        """Stage 5: y = [w * q(x), w] + PRG(b_u) + sum of +-PRG(s_uv), mod M, as int64 (d + 1 values).

        ``update`` is the flat vector of d floats (or the list of arrays, flattened here); ``weight`` the
        integer sample count (0 .. max_weight); ``received_shares`` the ciphertexts routed to this client,
        by sender. The client masks with exactly the neighbours whose shares it received.
        """
        _check_stage(self._stage, _Stage.SHARES, "masked_input")
        settings, me = self.settings, self.client_id
        if isinstance(update, np.ndarray):
            vector = update
        elif isinstance(update, (list, tuple)) and all(isinstance(a, np.ndarray) for a in update):
            try:
                vector = flatten(update)
            except (TypeError, ValueError):
                raise SecAggError("the update's arrays must hold real numbers") from None
        else:
            raise SecAggError(f"the update must be a vector or a list of arrays, got {type(update).__name__}")
        if vector.ndim != 1 or vector.size != settings.dimension:
            raise SecAggError(f"the update must be a flat vector of {settings.dimension} values, "
                              f"got shape {vector.shape}")
        if vector.dtype.kind not in "fiu" or not np.all(np.isfinite(vector)):
            raise SecAggError("the update must hold finite real numbers")
        weight = _int(weight, "the weight", 0, settings.max_weight)
        received_shares = _mapping(received_shares, "the received shares")
        held = {}
        for v, sealed in received_shares.items():
            v = _client_id(v, "a sender id")
            if v not in self._inbound:
                raise SecAggError(f"shares from {v!r}, who did not exchange keys with {me!r}")
            sealed = _blob(sealed, CIPHERTEXT_BYTES, f"the shares from {v}")
            try:
                plain = ChaCha20Poly1305(self._inbound[v]).decrypt(
                    sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], _info(settings, b"shares", v, me))
            except InvalidTag:
                raise SecAggError(f"the shares from {v} do not decrypt (tampered, misrouted or of another round)") \
                    from None
            b_share, s_share = plain[:SHARE_BYTES], plain[SHARE_BYTES:]
            xb = _parse_share(b_share, f"{v}'s b-share")[0]
            xs = _parse_share(s_share, f"{v}'s s-share")[0]
            if xb != xs:
                raise SecAggError(f"{v}'s two shares have different x")
            held[v] = (b_share, s_share)
        if len(held) + 1 < settings.threshold:
            raise SecAggError(f"only {len(held)} of {me}'s neighbours sent shares; the round needs at least "
                              f"{settings.threshold - 1}")
        d = settings.dimension
        q = quantize(vector, settings.clipping_range, settings.quantization_range)
        self.clipped = int(np.count_nonzero(np.abs(vector) > settings.clipping_range))
        y = np.empty(d + 1, dtype=np.uint64)
        y[:d] = (q * np.int64(weight)).view(np.uint64)  # |q * w| <= Q/2 * max_weight < M/2 <= 2**63
        y[d] = weight
        y += expand_mask(_self_key(settings, self._b, me), d + 1)
        for v in sorted(held):
            mask = expand_mask(self._pair[v], d + 1)
            if _sign_plus(me, v):
                y += mask
            else:
                y -= mask
        if settings.modulus < 2**64:
            y &= np.uint64(settings.modulus - 1)
        self._held = held
        self._stage = _Stage.UNMASK
        return y.view(np.int64)

    def unmask(self, dropped: Sequence[str], survived: Sequence[str]) -> dict[str, bytes]:
        """Stage 7: the shares this client holds, by owner: b-shares of the survivors (its own included),
        s-shares of the dropped. The two lists must split the neighbours that shared with it; a neighbour on
        both (that would unmask its update), an unknown id, a second call or fewer than threshold - 1
        surviving neighbours are refused with SecAggError.
        """
        me, t = self.client_id, self.settings.threshold
        if self._stage == _Stage.DONE:
            raise SecAggError(f"{me} refuses a second unmask request: shares are handed out once per round")
        _check_stage(self._stage, _Stage.UNMASK, "unmask")
        dropped_ids = _id_list(dropped, "dropped")
        survived_ids = [v for v in _id_list(survived, "survived") if v != me]
        both = sorted(set(dropped_ids) & set(survived_ids))
        if both:
            raise SecAggError(f"{me} refuses to reveal both the self-mask and the mask-key shares of "
                              f"{', '.join(both)}: together they would unmask its update")
        if me in dropped_ids:
            raise SecAggError(f"{me} is asked as a survivor yet called dropped")
        named = set(dropped_ids) | set(survived_ids)
        unknown = sorted(named - set(self._held))
        if unknown:
            raise SecAggError(f"{me} holds no shares of {', '.join(unknown)}")
        left_out = sorted(set(self._held) - named)
        if left_out:
            raise SecAggError(f"the unmask request leaves out {', '.join(left_out)} (each neighbour that shared "
                              "is either dropped or survived)")
        if len(survived_ids) + 1 < t:
            raise SecAggError(f"{me} refuses to unmask: only {len(survived_ids)} of its neighbours survived and "
                              f"the round needs at least {t - 1}")
        out = {v: self._held[v][0] for v in survived_ids}
        out.update({v: self._held[v][1] for v in dropped_ids})
        out[me] = self._own_b_share
        self._stage = _Stage.DONE
        return out


# ---------------------------------------------------------------------------------------------------------------
# The server

def _prune(members: set[str], graph: Mapping[str, tuple[str, ...]], need: int) -> set[str]:
    """Drop, until none is left, members with fewer than ``need`` neighbours among the members."""
    members = set(members)
    while True:
        weak = {u for u in members if sum(v in members for v in graph[u]) < need}
        if not weak:
            return members
        members -= weak


class SecAggServer:
    """The server's side of one round: ``setup``, ``forward_keys``, ``route_shares``, ``unmask_request``,
    ``aggregate``. It learns the survivors' weighted sum and total weight, never one client's update.

    Afterwards ``survivors`` (whose masked inputs were summed), ``dropped`` (shared, then sent no masked
    input) and ``excluded`` (left out before sharing, too few live neighbours) say who was where.
    """

    def __init__(self) -> None:
        self._stage = _Stage.NEW
        self.settings: SecAggSettings | None = None
        self.graph: dict[str, tuple[str, ...]] = {}
        self._keys: dict[str, tuple[bytes, bytes]] = {}
        self._u1: set[str] = set()
        self._u2: set[str] = set()
        self._u3: set[str] = set()
        self._masked: dict[str, np.ndarray] = {}
        self._x: dict[str, dict[str, int]] = {}  # owner -> holder -> x of the holder's share
        self.excluded: tuple[str, ...] = ()

    @property
    def survivors(self) -> tuple[str, ...]:
        return tuple(sorted(self._u3))

    @property
    def dropped(self) -> tuple[str, ...]:
        return tuple(sorted(self._u2 - self._u3)) if self._stage >= _Stage.UNMASK else ()

    def setup(self, client_ids: Sequence[str], settings: SecAggSettings, seed: int | None = None
              ) -> dict[str, ClientSetup]:
        """Stage 1: the neighbour graph (from ``seed``; random when None) and each client's setup."""
        _check_stage(self._stage, _Stage.NEW, "setup")
        ids = _id_list(client_ids, "client_ids")
        if not isinstance(settings, SecAggSettings):
            raise SecAggError(f"settings must be SecAggSettings, got {type(settings).__name__}")
        if len(ids) < 2:
            raise SecAggError(f"secure aggregation needs at least 2 clients, got {len(ids)}")
        settings = settings.resolved(len(ids))
        seed = secrets.randbits(64) if seed is None else _int(seed, "seed", 0, 2**128 - 1)
        self.graph = neighbour_graph(ids, settings.num_neighbours, seed)
        self._x = {u: _holders(u, self.graph[u]) for u in ids}
        self.settings = settings
        self._stage = _Stage.KEYS
        return {u: ClientSetup(self.graph[u], settings) for u in sorted(ids)}

    def forward_keys(self, keys: Mapping[str, tuple[bytes, bytes]]) -> dict[str, dict[str, tuple[bytes, bytes]]]:
        """Stage 3: each client's neighbours' (c_pk, s_pk). Clients missing from ``keys`` dropped; a client
        left with fewer than threshold - 1 live neighbours is excluded from the round (``excluded``)."""
        _check_stage(self._stage, _Stage.KEYS, "forward_keys")
        assert self.settings is not None
        keys = _mapping(keys, "the clients' keys")
        checked: dict[str, tuple[bytes, bytes]] = {}
        seen: dict[bytes, str] = {}
        for u, pair in keys.items():
            u = _client_id(u, "a sender id")
            if u not in self.graph:
                raise SecAggError(f"keys from {u!r}, who is not in this round", u)
            c_raw, _ = _load_public(_key_pair(pair, f"{u}'s keys", u)[0], f"{u}'s c_pk", u)
            s_raw, _ = _load_public(pair[1], f"{u}'s s_pk", u)
            for raw in (c_raw, s_raw):
                if raw in seen:
                    raise SecAggError(f"{u} sent a public key {seen[raw]} sent too", u)
                seen[raw] = u
            checked[u] = (c_raw, s_raw)
        t = self.settings.threshold
        u1 = _prune(set(checked), self.graph, t - 1)
        if len(u1) < t:
            raise SecAggError(f"only {len(u1)} clients sent keys with enough live neighbours; the round needs at "
                              f"least {t}")
        self._keys, self._u1 = checked, u1
        self.excluded = tuple(sorted(set(checked) - u1))
        self._stage = _Stage.SHARES
        return {u: {v: checked[v] for v in self.graph[u] if v in u1} for u in sorted(u1)}

    def route_shares(self, shares: Mapping[str, Mapping[str, bytes]]) -> dict[str, dict[str, bytes]]:
        """Stage 4 (server): each ciphertext to its receiver, ``{receiver: {sender: ciphertext}}``. A sender
        must address exactly its neighbours that got keys; clients that sent none have dropped."""
        _check_stage(self._stage, _Stage.SHARES, "route_shares")
        assert self.settings is not None
        shares = _mapping(shares, "the clients' shares")
        checked: dict[str, dict[str, bytes]] = {}
        for u, sealed in shares.items():
            u = _client_id(u, "a sender id")
            if u not in self._u1:
                raise SecAggError(f"shares from {u!r}, who is not in this round's key exchange", u)
            sealed = _mapping(sealed, f"{u}'s shares", u)
            expected = {v for v in self.graph[u] if v in self._u1}
            got: dict[str, bytes] = {}
            for v, blob in sealed.items():
                v = _client_id(v, f"a receiver in {u}'s shares", u)
                if v not in expected:
                    raise SecAggError(f"{u} sent shares to {v!r}, not a neighbour that sent keys", u)
                got[v] = _blob(blob, CIPHERTEXT_BYTES, f"{u}'s shares for {v}", u)
            if set(got) != expected:
                raise SecAggError(f"{u} sent no shares to {', '.join(sorted(expected - set(got)))}", u)
            checked[u] = got
        t = self.settings.threshold
        u2 = _prune(set(checked), self.graph, t - 1)
        if len(u2) < t:
            raise SecAggError(f"only {len(u2)} clients shared with enough live neighbours; the round needs at "
                              f"least {t}")
        self._u2 = u2
        self.excluded = tuple(sorted(set(self.excluded) | (set(checked) - u2)))
        self._stage = _Stage.MASKED
        return {u: {v: checked[v][u] for v in self.graph[u] if v in u2} for u in sorted(u2)}

    def _check_masked(self, u: str, y: Any) -> np.ndarray:
        assert self.settings is not None
        if not isinstance(y, np.ndarray):
            raise SecAggError(f"{u}'s masked input must be an array, got {type(y).__name__}", u)
        if y.dtype.kind not in "iu" or y.dtype.itemsize != 8 or y.ndim != 1:
            raise SecAggError(f"{u}'s masked input must be a 1-D int64 array, got {y.dtype} with shape {y.shape}", u)
        if y.size != self.settings.dimension + 1:
            raise SecAggError(f"{u}'s masked input has {y.size} values, not {self.settings.dimension + 1}", u)
        words = np.ascontiguousarray(y).astype(y.dtype.newbyteorder("="), copy=False).view(np.uint64)
        if self.settings.modulus < 2**64 and np.any(words >= np.uint64(self.settings.modulus)):
            raise SecAggError(f"{u}'s masked input has values beyond the modulus", u)
        return words.copy()

    def unmask_request(self, masked_inputs: Mapping[str, np.ndarray]) -> dict[str, UnmaskRequest]:
        """Stage 6: the masked inputs received (their senders survive; the other sharers dropped); to each
        survivor, which of its neighbours dropped and which survived. Raises SecAggError when some secret
        can no longer reach ``threshold`` live holders."""
        _check_stage(self._stage, _Stage.MASKED, "unmask_request")
        assert self.settings is not None
        masked_inputs = _mapping(masked_inputs, "the masked inputs")
        checked: dict[str, np.ndarray] = {}
        for u, y in masked_inputs.items():
            u = _client_id(u, "a sender id")
            if u not in self._u2:
                raise SecAggError(f"a masked input from {u!r}, who did not share this round", u)
            checked[u] = self._check_masked(u, y)
        u3 = set(checked)
        self._check_holders(u3, u3, "")
        self._u3, self._masked = u3, checked
        self._stage = _Stage.UNMASK
        dropped = self._u2 - u3
        return {u: UnmaskRequest(tuple(v for v in self.graph[u] if v in dropped),
                                 tuple(v for v in self.graph[u] if v in u3)) for u in sorted(u3)}

    def _check_holders(self, u3: set[str], alive: set[str], doing: str) -> None:
        """Every survivor's b_u and every dropped client's s_sk (when a survivor masked with it) still has
        ``threshold`` holders in ``alive``."""
        assert self.settings is not None
        t = self.settings.threshold
        if len(u3) < t:
            raise SecAggError(f"only {len(u3)} masked inputs arrived; the round needs at least {t}")
        for v in sorted(self._u2 - u3):
            if any(u in u3 for u in self.graph[v]):
                m = sum(u in alive for u in self.graph[v] if u in u3)
                if m < t:
                    raise SecAggError(f"round needs at least {t} of the surviving neighbours of {v}, which "
                                      f"dropped, to rebuild its mask key; {m} {doing or 'survived'}")
        for u in sorted(u3):
            m = sum(v in alive for v in self.graph[u] if v in self._u2) + (u in alive)
            if m < t:
                raise SecAggError(f"round needs at least {t} of the surviving neighbours of {u} (and {u} itself) "
                                  f"to rebuild its self-mask; {m} {doing or 'survived'}")

    def aggregate(self, unmask_responses: Mapping[str, Mapping[str, bytes]]) -> tuple[np.ndarray, int]:
        """Stage 8: the survivors' weighted sum (float64, d values) and total weight, from the shares the
        survivors returned (``{responder: {owner: share}}``; a survivor missing here has dropped late).

        On SecAggError nothing changes: the caller may try again, e.g. without a response it distrusts."""
        _check_stage(self._stage, _Stage.UNMASK, "aggregate")
        settings = self.settings
        assert settings is not None
        unmask_responses = _mapping(unmask_responses, "the unmask responses")
        u2, u3 = self._u2, self._u3
        dropped = u2 - u3
        b_points: dict[str, list[bytes]] = {u: [] for u in u3}
        s_points: dict[str, list[bytes]] = {v: [] for v in dropped}
        for r, response in unmask_responses.items():
            r = _client_id(r, "a responder id")
            if r not in u3:
                raise SecAggError(f"an unmask response from {r!r}, who was not asked", r)
            response = _mapping(response, f"{r}'s unmask response", r)
            for owner, share in response.items():
                owner = _client_id(owner, f"an owner in {r}'s response", r)
                if owner != r and (owner not in self.graph[r] or owner not in u2):
                    raise SecAggError(f"{r} returned a share of {owner!r}, which it does not hold", r)
                x, _, share = _parse_share(share, f"{r}'s share of {owner}", r)
                if x != self._x[owner][r]:
                    raise SecAggError(f"{r}'s share of {owner} has x = {x}, not the x of {r}'s share", r)
                (b_points[owner] if owner in u3 else s_points[owner]).append(share)
        self._check_holders(u3, {r for r in unmask_responses if r in u3}, "sent their shares")
        d = settings.dimension
        total = np.zeros(d + 1, dtype=np.uint64)
        for u in sorted(u3):
            total += self._masked[u]
            b_u = self._rebuild(b_points[u], u, "self-mask seed")
            total -= expand_mask(_self_key(settings, b_u, u), d + 1)
        for v in sorted(dropped):
            partners = [u for u in self.graph[v] if u in u3]
            if not partners:
                continue
            raw = self._rebuild(s_points[v], v, "mask key")
            s_sk = X25519PrivateKey.from_private_bytes(raw)
            if s_sk.public_key().public_bytes_raw() != self._keys[v][1]:
                raise SecAggError(f"the shares of {v}'s mask key do not match its public key (a holder returned "
                                  "a wrong share)")
            for u in partners:
                _, s_pk = _load_public(self._keys[u][1], f"{u}'s s_pk")
                mask = expand_mask(_pair_key(settings, _agree(s_sk, s_pk, f"{u}'s s_pk"), u, v), d + 1)
                if _sign_plus(u, v):  # u added it: take it off
                    total -= mask
                else:
                    total += mask
        if settings.modulus < 2**64:
            total &= np.uint64(settings.modulus - 1)
        result = self._decode(total)
        self._stage, self._masked = _Stage.DONE, {}
        return result

    def _rebuild(self, shares: list[bytes], owner: str, what: str) -> bytes:
        assert self.settings is not None
        t = self.settings.threshold
        if len(shares) < t:
            raise SecAggError(f"round needs at least {t} of the surviving neighbours of {owner} to rebuild its "
                              f"{what}; {len(shares)} shares arrived")
        try:
            return combine(shares, t)
        except SecAggError as e:
            raise SecAggError(f"{owner}'s {what}: {e}") from None

    def _decode(self, total: np.ndarray) -> tuple[np.ndarray, int]:
        settings = self.settings
        assert settings is not None
        m, d, half = settings.modulus, settings.dimension, settings.quantization_range // 2
        total_weight = int(total[d])
        if total_weight > len(self._u3) * settings.max_weight:
            raise SecAggError(f"the unmasked total weight {total_weight} exceeds {len(self._u3)} survivors x "
                              f"max_weight: a mask was not removed (a client broke the protocol)")
        if m == 2**64:
            signed = total[:d].view(np.int64)
        else:
            signed = total[:d].astype(np.int64)
            signed[signed >= m // 2] -= m
        limit = np.int64(total_weight * half)  # < M/2 <= 2**63, as total_weight <= n * max_weight
        if np.any(signed > limit) or np.any(signed < -limit):
            raise SecAggError("the unmasked sum lies outside total_weight x [-Q/2, Q/2]: a mask was not removed "
                              "(a client broke the protocol)")
        return dequantize(signed, settings.clipping_range, settings.quantization_range), total_weight
