"""Secure aggregation (fl/federation/secagg.py): the sum comes out, one update never does.

Every round here runs the client and server state machines in one process,
with deterministic randomness (``entropy``) so that each test sees the same
keys, shares and masks every time. Run alone with
``python -m pytest -q -n 0 tests/test_secagg.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

from fl.federation.secagg import (
    CIPHERTEXT_BYTES, KEY_BYTES, PRIME, SHARE_BYTES, ClientSetup, SecAggClient, SecAggError, SecAggServer,
    SecAggSettings, UnmaskRequest, combine, default_neighbours, default_threshold, expand_mask, flatten,
    neighbour_graph, quantize, split, unflatten,
)
from fl.learning.aggregation import fedavg

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def entropy(seed: int):
    """Deterministic random bytes (tests only; a real round uses os.urandom)."""
    rng = np.random.default_rng(seed)
    return lambda n: rng.bytes(n)


def ids_for(n: int) -> list[str]:
    return [f"client_{i:03d}" for i in range(n)]


class Round:
    """One secure-aggregation round in memory, stage by stage; records every message the server receives.

    Each client-side step takes the server's previous output and a set of clients that drop instead of
    answering; ``run`` chains them all.
    """

    def __init__(self, n: int, d: int, seed: int = 0, client_seeds: dict[str, int] | None = None,
                 updates: dict[str, np.ndarray] | None = None, weights: dict[str, int] | None = None,
                 **settings_kw) -> None:
        rng = np.random.default_rng(seed)
        self.ids = ids_for(n)
        self.updates = updates or {u: rng.uniform(-2.0, 2.0, d) for u in self.ids}
        self.weights = weights or {u: int(rng.integers(1, 500)) for u in self.ids}
        self.server = SecAggServer()
        self.plan = self.server.setup(self.ids, SecAggSettings(dimension=d, round=7, **settings_kw), seed=seed)
        self.settings = self.plan[self.ids[0]].settings
        seeds = client_seeds or {}
        self.clients = {u: SecAggClient(u, self.plan[u], entropy=entropy(seeds.get(u, 1000 * seed + i)))
                        for i, u in enumerate(self.ids)}
        self.to_server: list[bytes] = []  # every byte string the server receives

    def keys(self, drop=()):
        keys = {u: c.keys() for u, c in self.clients.items() if u not in drop}
        self.to_server += [k for pair in keys.values() for k in pair]
        return keys

    def shares(self, forwarded, drop=()):
        out = {u: self.clients[u].shares(forwarded[u]) for u in forwarded if u not in drop}
        self.to_server += [c for per in out.values() for c in per.values()]
        return out

    def masked_inputs(self, inbox, drop=()):
        masked = {u: self.clients[u].masked_input(self.updates[u], self.weights[u], inbox[u])
                  for u in inbox if u not in drop}
        self.to_server += [y.tobytes() for y in masked.values()]
        return masked

    def responses(self, asks, drop=()):
        out = {u: self.clients[u].unmask(asks[u].dropped, asks[u].survived) for u in asks if u not in drop}
        self.to_server += [s for per in out.values() for s in per.values()]
        return out

    def until_masked(self, drop_keys=(), drop_shares=(), drop_masked=()):
        inbox = self.server.route_shares(self.shares(self.server.forward_keys(self.keys(drop_keys)), drop_shares))
        return self.masked_inputs(inbox, drop_masked)

    def run(self, drop_keys=(), drop_shares=(), drop_masked=(), drop_unmask=()):
        asks = self.server.unmask_request(self.until_masked(drop_keys, drop_shares, drop_masked))
        return self.server.aggregate(self.responses(asks, drop_unmask))

    def expected(self, members):
        c = self.settings.clipping_range
        members = sorted(members)
        return (sum(self.weights[u] * np.clip(self.updates[u], -c, c) for u in members),
                sum(self.weights[u] for u in members))


# ---------------------------------------------------------------------------------------------------------------
# (1) the decoded weighted sum is the plain weighted sum, within the quantisation bound

def test_weighted_sum_equals_plain_sum_within_the_quantisation_bound():
    # Prepare: updates spanning the whole clipping range, weights up to 500
    rng = np.random.default_rng(1)
    n, d = 8, 300
    updates = {u: rng.uniform(-8.0, 8.0, d) for u in ids_for(n)}
    r = Round(n, d, seed=1, updates=updates)
    # Execute
    weighted_sum, total_weight = r.run()
    # Assert: the weight is exact; each coordinate within W * c / Q (rounding to the nearest step)
    exact, weight = r.expected(r.ids)
    assert total_weight == weight
    bound = weight * r.settings.error_bound
    assert np.max(np.abs(weighted_sum - exact)) <= bound
    assert r.server.survivors == tuple(r.ids) and r.server.dropped == ()


def test_values_beyond_the_clipping_range_are_clipped_and_counted_locally():
    # Prepare: one client's update has two coordinates beyond +-8
    n, d = 3, 5
    updates = {u: np.full(d, 1.0) for u in ids_for(n)}
    updates["client_000"] = np.array([100.0, -9.0, 1.0, 1.0, 1.0])
    r = Round(n, d, seed=2, updates=updates, weights={u: 1 for u in ids_for(n)})
    # Execute
    weighted_sum, total_weight = r.run()
    # Assert
    np.testing.assert_allclose(weighted_sum, [8.0 + 2, -8.0 + 2, 3.0, 3.0, 3.0], atol=3 * r.settings.error_bound)
    assert r.clients["client_000"].clipped == 2 and r.clients["client_001"].clipped == 0
    assert total_weight == 3


def _digits_models():
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from threadpoolctl import threadpool_limits

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    parts = np.array_split(np.random.default_rng(0).permutation(len(y)), 4)
    logreg, mlp = [], []
    with threadpool_limits(1):  # small fits: BLAS threads only contend (10x slower on a busy 2-core machine)
        for part in parts:
            lr = LogisticRegression(max_iter=200).fit(X[part], y[part])
            logreg.append(([lr.coef_, lr.intercept_], len(part)))
            net = MLPClassifier(hidden_layer_sizes=(64,), max_iter=30, random_state=0).fit(X[part], y[part])
            mlp.append((list(net.coefs_) + list(net.intercepts_), len(part)))
    return {"logistic regression (d = 650)": logreg, "MLP 64-64-10 (d = 4810)": mlp}


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_mean_of_real_models_is_fedavg_to_one_in_a_million():
    # Prepare: digits models fitted on four quarters of the data (logistic regression and an MLP)
    for name, results in _digits_models().items():
        shapes = [a.shape for a in results[0][0]]
        d = sum(math.prod(s) for s in shapes)
        ids = ids_for(len(results))
        r = Round(len(results), d, seed=3, updates={u: flatten(a) for u, (a, _) in zip(ids, results)},
                  weights={u: n for u, (_, n) in zip(ids, results)})
        # Execute
        weighted_sum, total_weight = r.run()
        mean = unflatten(weighted_sum / total_weight, shapes)
        # Assert: the same model as FedAvg, to 1e-6 relative (the bound c/Q = 1.9e-9 absolute)
        plain = np.concatenate([a.ravel() for a in fedavg(results)])
        got = np.concatenate([a.ravel() for a in mean])
        assert np.max(np.abs(plain)) < 8.0, name  # nothing clipped
        assert np.max(np.abs(got - plain)) <= r.settings.error_bound * (1 + 1e-9), name
        assert np.linalg.norm(got - plain) / np.linalg.norm(plain) < 1e-6, name
        assert np.max(np.abs(got - plain)) / np.max(np.abs(plain)) < 1e-6, name
        assert [a.shape for a in mean] == shapes


def test_flower_sized_modulus_works_with_small_weights():
    # Prepare: Flower's defaults, Q = 2**22 and M = 2**32 (so n * max_weight * Q < 2**32: max_weight 255 for 4)
    r = Round(4, 50, seed=4, weights={u: 10 for u in ids_for(4)}, quantization_range=2**22, modulus=2**32)
    # Execute
    masked = r.until_masked()
    asks = r.server.unmask_request(masked)
    weighted_sum, total_weight = r.server.aggregate(r.responses(asks))
    # Assert: masked values stay below M; the sum is within W * c / Q
    exact, weight = r.expected(r.ids)
    assert r.settings.max_weight == 255
    assert all(np.all(y.view(np.uint64) < 2**32) for y in masked.values())
    assert total_weight == weight and np.max(np.abs(weighted_sum - exact)) <= weight * 8 / 2**22


# ---------------------------------------------------------------------------------------------------------------
# (2) clients drop at every stage; the survivors' sum comes out

def test_dropouts_at_every_stage_with_the_default_threshold():
    # Prepare: 12 clients, all pairs (k = 11), t = 8: one drops before its keys, one before its shares, one
    # before its masked input (its mask key is rebuilt), one after it (its self-mask is rebuilt without it)
    r = Round(12, 40, seed=5)
    assert (r.settings.num_neighbours, r.settings.threshold) == (11, 8)
    # Execute
    weighted_sum, total_weight = r.run(drop_keys={"client_001"}, drop_shares={"client_002"},
                                       drop_masked={"client_003"}, drop_unmask={"client_004"})
    # Assert: client_004's update is in (its masked input arrived), the first three are out
    survivors = set(r.ids) - {"client_001", "client_002", "client_003"}
    exact, weight = r.expected(survivors)
    assert total_weight == weight
    assert np.max(np.abs(weighted_sum - exact)) <= weight * r.settings.error_bound
    assert r.server.survivors == tuple(sorted(survivors)) and r.server.dropped == ("client_003",)


def test_thirty_percent_drop_after_their_masked_input_and_some_before():
    # Prepare: 20 clients, t = 11 (the least allowed, a majority of the 20 holders): three drop before
    # sending masked input (one per stage) and six (30 %) after sending it
    r = Round(20, 64, seed=6, threshold=11)
    late = {f"client_{i:03d}" for i in (4, 7, 9, 12, 15, 18)}
    early = {"keys": {"client_000"}, "shares": {"client_005"}, "masked": {"client_010"}}
    # Execute
    weighted_sum, total_weight = r.run(drop_keys=early["keys"], drop_shares=early["shares"],
                                       drop_masked=early["masked"], drop_unmask=late)
    # Assert: the 17 masked inputs are summed, the late six included
    survivors = set(r.ids) - set().union(*early.values())
    exact, weight = r.expected(survivors)
    assert len(survivors) == 17 and total_weight == weight
    assert np.max(np.abs(weighted_sum - exact)) <= weight * r.settings.error_bound


def test_sparse_secagg_plus_graph_survives_dropouts():
    # Prepare: 60 clients on a ring of k = 12 neighbours (t = 9); 10 % drop at various stages
    r = Round(60, 32, seed=7, num_neighbours=12)
    graph = r.server.graph
    assert all(len(graph[u]) == 12 and all(u in graph[v] for v in graph[u]) for u in graph)
    drop = [f"client_{i:03d}" for i in (3, 17, 29, 41, 50, 58)]
    # Execute
    weighted_sum, total_weight = r.run(drop_keys=drop[:1], drop_shares=drop[1:2], drop_masked=drop[2:4],
                                       drop_unmask=drop[4:])
    # Assert
    survivors = set(r.ids) - set(drop[:4])
    exact, weight = r.expected(survivors)
    assert total_weight == weight
    assert np.max(np.abs(weighted_sum - exact)) <= weight * r.settings.error_bound


def test_a_client_with_too_few_live_neighbours_is_left_out_before_sharing():
    # Prepare: a ring of 2 neighbours per client among 10 (t = 2); client_a's both neighbours send no keys
    r = Round(10, 8, seed=8, num_neighbours=2, threshold=2)
    lonely = r.ids[0]
    # Execute
    weighted_sum, total_weight = r.run(drop_keys=set(r.server.graph[lonely]))
    # Assert: it is excluded (neither its keys nor its update used) and the others' sum comes out
    assert lonely in r.server.excluded
    members = set(r.server.survivors)
    assert lonely not in members
    exact, weight = r.expected(members)
    assert total_weight == weight and np.max(np.abs(weighted_sum - exact)) <= weight * r.settings.error_bound


# ---------------------------------------------------------------------------------------------------------------
# (3) too few survivors: a clear refusal

def test_too_few_survivors_among_a_dropped_clients_neighbours_is_refused():
    # Prepare: 20 clients on a ring of k = 6 (t = 5); client_000 and two of its neighbours send no masked
    # input, so only 4 of client_000's neighbours could return shares of its mask key
    r = Round(20, 8, seed=9, num_neighbours=6)
    assert r.settings.threshold == 5
    victim = "client_000"
    masked = r.until_masked(drop_masked={victim, *r.server.graph[victim][:2]})
    # Execute / Assert
    with pytest.raises(SecAggError, match="round needs at least 5 of the surviving neighbours of client_000, "
                                          "which dropped, to rebuild its mask key; 4 survived"):
        r.server.unmask_request(masked)
    # all pairs: with 6 of 10 left the round is short of survivors altogether
    r = Round(10, 8, seed=9)
    with pytest.raises(SecAggError, match="only 6 masked inputs arrived; the round needs at least 7"):
        r.server.unmask_request(r.until_masked(drop_masked={"client_000", "client_001", "client_002",
                                                            "client_003"}))


def test_too_few_unmask_responses_is_refused_at_aggregation():
    # Prepare: all masked inputs arrive, then four of ten never answer the unmask request
    r = Round(10, 8, seed=10)
    asks = r.server.unmask_request(r.until_masked())
    responses = r.responses(asks, drop={"client_000", "client_001", "client_002", "client_003"})
    # Execute / Assert
    with pytest.raises(SecAggError, match="round needs at least 7 of the surviving neighbours of client_000"):
        r.server.aggregate(responses)


def test_a_client_refuses_to_unmask_when_too_few_neighbours_survived():
    # Prepare: a server that claims most of client_005's neighbours dropped
    r = Round(10, 8, seed=11)
    r.until_masked()
    others = [u for u in r.ids if u != "client_005"]
    # Execute / Assert: 5 survivors + itself < t = 7
    with pytest.raises(SecAggError, match="refuses to unmask: only 5 of its neighbours survived"):
        r.clients["client_005"].unmask(dropped=others[5:], survived=others[:5])


# ---------------------------------------------------------------------------------------------------------------
# (4) the server's view: uniform masked values, no update in the clear

def _masked_of(update_value: float, entropy_seed: int, d: int = 4000) -> np.ndarray:
    """client_000's masked input for a constant update, the other parties fixed, its own randomness fresh."""
    n = 4
    updates = {u: np.full(d, 0.5) for u in ids_for(n)}
    updates["client_000"] = np.full(d, update_value)
    r = Round(n, d, seed=12, updates=updates, weights={u: 100 for u in ids_for(n)},
              client_seeds={"client_000": entropy_seed})
    return r.until_masked()["client_000"].view(np.uint64)


def test_masked_input_is_uniform_whatever_the_update():
    # Prepare: the same client with an update of all 0 and of all +8 (the most extreme), fresh randomness
    zeros, eights = _masked_of(0.0, 101), _masked_of(8.0, 202)
    for y in (zeros, eights):
        # Assert: the top byte of every masked value is uniform over 256 bins
        counts = np.bincount((y >> np.uint64(56)).astype(np.int64), minlength=256)
        assert stats.chisquare(counts).pvalue > 1e-3
    # Assert: the two masked vectors come from one distribution
    assert stats.ks_2samp(zeros.astype(np.float64), eights.astype(np.float64)).pvalue > 1e-3


def test_masked_input_is_independent_of_the_update():
    # Prepare: a random update; its masked input
    d = 4000
    rng = np.random.default_rng(13)
    x = rng.normal(0.0, 2.0, d)
    r = Round(3, d, seed=13, updates={u: x if u == "client_000" else rng.normal(0, 1, d) for u in ids_for(3)})
    y = r.until_masked()["client_000"].view(np.uint64)[:d].astype(np.float64)
    # Assert: no linear or rank correlation between update and masked values
    assert abs(np.corrcoef(x, y)[0, 1]) < 4 / math.sqrt(d)
    assert stats.spearmanr(x, y).pvalue > 1e-3


def test_no_message_to_the_server_holds_an_update_in_the_clear():
    # Prepare: a round with two late dropouts (so shares of both kinds are sent)
    n, d = 6, 200
    r = Round(n, d, seed=14)
    r.run(drop_masked={"client_001"}, drop_unmask={"client_002"})
    blob = b"".join(r.to_server)
    s = r.settings
    for u in r.ids:
        x = r.updates[u]
        q = quantize(x, s.clipping_range, s.quantization_range)
        encodings = [x.tobytes(), x.astype(np.float32).tobytes(), q.tobytes(), (q * r.weights[u]).tobytes()]
        # Assert: no two consecutive coordinates of any encoding appear anywhere the server looked
        for enc in encodings:
            width = len(enc) // d
            for i in range(d - 1):
                assert enc[i * width:(i + 2) * width] not in blob, (u, i)
    assert len(blob) > n * d * 8


# ---------------------------------------------------------------------------------------------------------------
# (5) never both shares of one client

def test_a_request_for_both_shares_of_one_neighbour_is_refused():
    # Prepare: a server that lists client_003 as dropped and survived
    r = Round(6, 8, seed=15)
    r.until_masked()
    others = [u for u in r.ids if u != "client_000"]
    # Execute / Assert
    with pytest.raises(SecAggError, match="refuses to reveal both .* client_003"):
        r.clients["client_000"].unmask(dropped=["client_003"], survived=others)


def test_a_second_unmask_request_is_refused():
    # Prepare: an honest first request, then one that swaps a survivor to dropped
    r = Round(6, 8, seed=16)
    asks = r.server.unmask_request(r.until_masked())
    client = r.clients["client_000"]
    client.unmask(asks["client_000"].dropped, asks["client_000"].survived)
    survived = list(asks["client_000"].survived)
    # Execute / Assert
    with pytest.raises(SecAggError, match="second unmask request"):
        client.unmask(dropped=survived[:1], survived=survived[1:])


def test_unmask_requests_that_misname_neighbours_are_refused():
    # Prepare
    r = Round(6, 8, seed=17)
    r.until_masked()
    client = r.clients["client_000"]
    others = [u for u in r.ids if u != "client_000"]
    # Execute / Assert: itself as dropped, a stranger, a neighbour left out, duplicates
    with pytest.raises(SecAggError, match="called dropped"):
        client.unmask(dropped=["client_000"], survived=others)
    with pytest.raises(SecAggError, match="holds no shares of stranger"):
        client.unmask(dropped=["stranger"], survived=others)
    with pytest.raises(SecAggError, match="leaves out client_005"):
        client.unmask(dropped=[], survived=others[:-1])
    with pytest.raises(SecAggError, match="twice"):
        client.unmask(dropped=[], survived=others + others[:1])
    # and a correct request still works after the refusals
    assert len(client.unmask(dropped=others[:1], survived=others[1:])) == 6


# ---------------------------------------------------------------------------------------------------------------
# (6) hostile inputs: SecAggError, never another exception

def test_setup_refuses_bad_client_lists_and_settings():
    # Execute / Assert
    with pytest.raises(SecAggError, match="names 'a' twice"):
        SecAggServer().setup(["a", "b", "a"], SecAggSettings(dimension=3), seed=0)
    with pytest.raises(SecAggError, match="must be a string"):
        SecAggServer().setup(["a", 3], SecAggSettings(dimension=3), seed=0)
    with pytest.raises(SecAggError, match="at least 2 clients"):
        SecAggServer().setup(["a"], SecAggSettings(dimension=3), seed=0)
    with pytest.raises(SecAggError, match="more than half"):
        SecAggServer().setup(ids_for(10), SecAggSettings(dimension=3, threshold=5), seed=0)
    with pytest.raises(SecAggError, match="even"):
        SecAggServer().setup(ids_for(10), SecAggSettings(dimension=3, num_neighbours=5), seed=0)
    with pytest.raises(SecAggError, match="below the modulus"):
        SecAggServer().setup(ids_for(10), SecAggSettings(dimension=3, max_weight=2**30), seed=0)
    for bad in (dict(dimension=0), dict(dimension=3, modulus=3 * 2**20), dict(dimension=3, clipping_range=-1.0),
                dict(dimension=3, clipping_range=float("nan")), dict(dimension=3, quantization_range=2**33 + 1),
                dict(dimension=True), dict(dimension=3, label=""), dict(dimension=3, modulus=2**65)):
        with pytest.raises(SecAggError):
            SecAggSettings(**bad)


def test_server_refuses_malformed_keys_and_names_the_sender():
    # Prepare
    def fresh():
        r = Round(4, 8, seed=18)
        return r, r.keys()
    cases = {
        "must be 32 bytes, got 31": lambda k: k | {"client_001": (k["client_001"][0][:31], k["client_001"][1])},
        "must be bytes, got str": lambda k: k | {"client_001": ("x" * 32, k["client_001"][1])},
        "must be a pair": lambda k: k | {"client_001": k["client_001"] + (b"\0" * 32,)},
        "sent too": lambda k: k | {"client_001": (k["client_000"][0], k["client_001"][1])},
    }
    for message, mutate in cases.items():
        r, keys = fresh()
        # Execute / Assert
        with pytest.raises(SecAggError, match=message) as err:
            r.server.forward_keys(mutate(keys))
        assert err.value.client_id == "client_001"
        # the server is unchanged: without the bad client the stage goes on
        assert "client_001" not in r.server.forward_keys({u: k for u, k in keys.items() if u != "client_001"})
    r, keys = fresh()
    with pytest.raises(SecAggError, match="not in this round"):
        r.server.forward_keys(keys | {"mallory": keys["client_000"]})


def test_client_refuses_weak_foreign_and_repeated_keys():
    # Prepare
    r = Round(4, 8, seed=19)
    forwarded = r.server.forward_keys(r.keys())["client_000"]
    client = r.clients["client_000"]
    v = "client_001"
    # Execute / Assert: a low-order point, a non-neighbour, a key that repeats another neighbour's
    with pytest.raises(SecAggError, match="weak X25519 key"):
        client.shares(forwarded | {v: (bytes(32), forwarded[v][1])})
    with pytest.raises(SecAggError, match="not a neighbour"):
        client.shares(forwarded | {"client_000": forwarded[v]})
    with pytest.raises(SecAggError, match="repeat"):
        client.shares(forwarded | {v: forwarded["client_002"]})
    with pytest.raises(SecAggError, match="must be a mapping"):
        client.shares([forwarded[v]])
    assert set(client.shares(forwarded)) == {"client_001", "client_002", "client_003"}


def test_tampered_or_misrouted_ciphertexts_do_not_decrypt():
    # Prepare
    r = Round(4, 8, seed=20)
    inbox = r.server.route_shares(r.shares(r.server.forward_keys(r.keys())))
    client = r.clients["client_000"]
    mine = inbox["client_000"]
    flipped = bytearray(mine["client_001"])
    flipped[40] ^= 1
    # Execute / Assert
    for bad in (mine | {"client_001": bytes(flipped)},                        # one bit flipped
                mine | {"client_001": mine["client_002"]},                    # another sender's ciphertext
                mine | {"client_001": inbox["client_002"]["client_001"]}):    # meant for another receiver
        with pytest.raises(SecAggError, match="do not decrypt"):
            client.masked_input(r.updates["client_000"], 1, bad)
    with pytest.raises(SecAggError, match=f"must be {CIPHERTEXT_BYTES} bytes"):
        client.masked_input(r.updates["client_000"], 1, mine | {"client_001": mine["client_001"][:-1]})
    with pytest.raises(SecAggError, match="did not exchange keys"):
        client.masked_input(r.updates["client_000"], 1, mine | {"client_009": mine["client_001"]})
    assert client.masked_input(r.updates["client_000"], 1, mine).shape == (9,)


def test_client_refuses_bad_updates_and_weights():
    # Prepare
    r = Round(3, 4, seed=21)
    inbox = r.server.route_shares(r.shares(r.server.forward_keys(r.keys())))
    client, mine = r.clients["client_000"], inbox["client_000"]
    # Execute / Assert
    for update, weight, message in ((np.zeros(5), 1, "flat vector of 4"), (np.zeros((2, 2)), 1, "flat vector"),
                                    (np.array([0, 1, np.nan, 0]), 1, "finite"), ("abcd", 1, "vector or a list"),
                                    (np.zeros(4), -1, "weight must be in"), (np.zeros(4), 1.5, "integer"),
                                    (np.zeros(4), True, "integer"),
                                    (np.zeros(4), r.settings.max_weight + 1, "weight must be in"),
                                    (np.array(["a"] * 4), 1, "finite real")):
        with pytest.raises(SecAggError, match=message):
            client.masked_input(update, weight, mine)
    assert client.masked_input([np.zeros(2), np.ones((1, 2))], 3, mine).dtype == np.int64


def test_server_refuses_malformed_masked_inputs_and_can_go_on_without_them():
    # Prepare
    r = Round(4, 8, seed=22, threshold=3)
    masked = r.until_masked()
    good = masked["client_001"]
    # Execute / Assert
    for bad, message in ((good[:-1], "has 8 values, not 9"), (good.astype(np.float64), "int64"),
                         (good.reshape(3, 3), "1-D"), (list(good), "must be an array"),
                         (good.astype(np.int32), "int64")):
        with pytest.raises(SecAggError, match=message) as err:
            r.server.unmask_request(masked | {"client_001": bad})
        assert err.value.client_id == "client_001"
    with pytest.raises(SecAggError, match="did not share"):
        r.server.unmask_request(masked | {"eve": good})
    # the caller discards the bad message: client_001 counts as dropped, the round completes
    asks = r.server.unmask_request({u: y for u, y in masked.items() if u != "client_001"})
    weighted_sum, total_weight = r.server.aggregate(r.responses(asks))
    exact, weight = r.expected(set(r.ids) - {"client_001"})
    assert total_weight == weight and np.max(np.abs(weighted_sum - exact)) <= weight * r.settings.error_bound


def test_masked_values_beyond_a_small_modulus_are_refused():
    # Prepare
    r = Round(3, 4, seed=23, quantization_range=2**20, modulus=2**32)
    masked = r.until_masked()
    bad = masked["client_002"].copy()
    bad[0] = 2**32
    # Execute / Assert
    with pytest.raises(SecAggError, match="beyond the modulus"):
        r.server.unmask_request(masked | {"client_002": bad})


def test_server_refuses_malformed_or_wrong_shares_at_aggregation():
    # Prepare: one dropped client (so s-shares are returned too)
    def fresh():
        r = Round(6, 8, seed=24)
        asks = r.server.unmask_request(r.until_masked(drop_masked={"client_005"}))
        return r, r.responses(asks)
    r, responses = fresh()
    share = responses["client_000"]["client_001"]
    y_bad = share[:2] + (PRIME).to_bytes(66, "big")
    x_bad = (9).to_bytes(2, "big") + share[2:]
    cases = [({"client_001": share[:-1]}, "must be 68 bytes"), ({"client_001": y_bad}, "not an element"),
             ({"client_001": x_bad}, "has x = 9"), ({"client_001": "text"}, "must be bytes"),
             ({"stranger": share}, "does not hold")]
    for change, message in cases:
        r, responses = fresh()
        with pytest.raises(SecAggError, match=message) as err:
            r.server.aggregate(responses | {"client_000": responses["client_000"] | change})
        assert err.value.client_id == "client_000"
    r, responses = fresh()
    with pytest.raises(SecAggError, match="was not asked"):
        r.server.aggregate(responses | {"client_005": responses["client_000"]})
    # well-formed but wrong shares (altered, or another owner's with the right x): caught as a rebuilt
    # secret that is not 32 bytes long or not the private key of the published public key, or, when a
    # self-mask seed comes out wrong, as an unmasked sum out of range
    for owner in ("client_001", "client_005"):
        r, responses = fresh()
        good = responses["client_000"][owner]
        altered = good[:2] + ((int.from_bytes(good[2:], "big") + 1) % PRIME).to_bytes(66, "big")
        for wrong in (altered, responses["client_000"]["client_002"]):  # the server state is unchanged after each
            with pytest.raises(SecAggError, match="do not rebuild a 32-byte secret|do not match its public key|"
                                                     "a mask was not removed"):
                r.server.aggregate(responses | {"client_000": responses["client_000"] | {owner: wrong}})
        # without the wrong share (client_000's response left out) the round completes
        weighted_sum, total_weight = r.server.aggregate({u: a for u, a in responses.items() if u != "client_000"})
        assert total_weight == r.expected(set(r.ids) - {"client_005"})[1]


def test_stages_out_of_order_are_refused():
    # Prepare
    r = Round(3, 4, seed=25)
    client = r.clients["client_000"]
    # Execute / Assert
    with pytest.raises(SecAggError, match="out of order"):
        client.shares({})
    with pytest.raises(SecAggError, match="out of order"):
        r.server.route_shares({})
    with pytest.raises(SecAggError, match="out of order"):
        r.server.setup(r.ids, SecAggSettings(dimension=4))
    client.keys()
    with pytest.raises(SecAggError, match="out of order"):
        client.keys()


def _mutations():
    hostile_value = st.one_of(st.binary(max_size=200), st.text(max_size=40), st.integers(), st.none(),
                              st.floats(), st.lists(st.binary(max_size=70), max_size=4),
                              st.dictionaries(st.text(max_size=12), st.binary(max_size=70), max_size=3),
                              st.just(np.zeros(3)), st.just(np.zeros(70, dtype=np.uint8)))
    return st.tuples(st.sampled_from(["keys", "shares", "masked", "unmask"]), st.integers(0, 3),
                     st.integers(0, 3), hostile_value)


@FAST
@given(_mutations())
def test_any_hostile_field_raises_secagg_error_or_is_harmless(mutation):
    # Prepare: a valid round; one field of one stage's messages is replaced by a hostile value
    stage, who, which, value = mutation
    r = Round(4, 6, seed=26, threshold=3)
    u = r.ids[who]

    def attempt(call, *args):
        try:
            return call(*args)
        except SecAggError:
            return None

    # Execute: the mutated stage either refuses with SecAggError or goes on; nothing else is raised
    keys = r.keys()
    if stage == "keys":
        keys = keys | {u: (value, keys[u][1]) if which % 2 else value}
    forwarded = attempt(r.server.forward_keys, keys)
    if forwarded is None:
        return
    out = {v: r.clients[v].shares(forwarded[v]) for v in forwarded}
    if stage == "shares":
        target = sorted(out[u])[which % len(out[u])]
        out = out | {u: out[u] | {target: value}}
        # the client-side check of the same hostile ciphertext
        inbox = attempt(r.server.route_shares, out)
        if inbox is None:
            return
    else:
        inbox = r.server.route_shares(out)
    masked = {}
    for v in inbox:
        y = attempt(r.clients[v].masked_input, r.updates[v], r.weights[v], inbox[v])
        if y is not None:
            masked[v] = y
    if stage == "masked" and u in masked:
        masked[u] = value
    asks = attempt(r.server.unmask_request, masked)
    if asks is None:
        return
    responses = {v: r.clients[v].unmask(asks[v].dropped, asks[v].survived) for v in asks}
    if stage == "unmask" and u in responses:
        owner = sorted(responses[u])[which % len(responses[u])]
        responses[u] = responses[u] | {owner: value}
    attempt(r.server.aggregate, responses)


@FAST
@given(st.dictionaries(st.sampled_from(["dimension", "round", "label", "num_clients", "num_neighbours",
                                        "threshold", "clipping_range", "quantization_range", "modulus_bits",
                                        "max_weight", "extra"]),
                       st.one_of(st.integers(-2**70, 2**70), st.floats(), st.text(max_size=10), st.none(),
                                 st.booleans(), st.lists(st.integers(), max_size=2))))
def test_settings_from_hostile_fields_raise_secagg_error_only(changes):
    # Prepare: valid resolved settings as a client receives them, some fields replaced
    fields = SecAggSettings(dimension=10).resolved(5).to_dict() | changes
    # Execute / Assert
    try:
        settings_ = SecAggSettings.from_dict(fields)
    except SecAggError:
        return
    assert settings_.is_resolved and 2 * settings_.threshold > settings_.num_neighbours + 1


def test_client_setup_round_trips_and_refuses_bad_setups():
    # Prepare
    plan = SecAggServer().setup(ids_for(5), SecAggSettings(dimension=10, round=2), seed=3)
    setup = plan["client_000"]
    # Execute
    again = ClientSetup.from_dict(setup.to_dict())
    # Assert
    assert again == setup
    SecAggClient("client_000", setup.to_dict())
    with pytest.raises(SecAggError, match="own neighbour"):
        SecAggClient("client_001", setup)
    with pytest.raises(SecAggError, match="names 3 neighbours"):
        SecAggClient("client_000", ClientSetup(setup.neighbours[:3], setup.settings))
    with pytest.raises(SecAggError, match="not resolved"):
        SecAggClient("client_000", ClientSetup(setup.neighbours, SecAggSettings(dimension=10)))
    with pytest.raises(SecAggError, match="lack"):
        ClientSetup.from_dict({"neighbours": [], "settings": {}})


# ---------------------------------------------------------------------------------------------------------------
# (7) Shamir secret sharing

@FAST
@given(st.binary(min_size=32, max_size=32), st.integers(1, 12), st.data())
def test_shamir_any_t_shares_rebuild_and_t_minus_one_do_not(secret, n, data):
    # Prepare
    t = data.draw(st.integers(1, n))
    shares = split(secret, n, t)
    order = data.draw(st.permutations(range(n)))
    chosen = [shares[i] for i in order[:t]]
    # Execute / Assert: any t shares, in any order
    assert combine(chosen) == secret
    assert combine([shares[i] for i in order], threshold=t) == secret
    with pytest.raises(SecAggError):
        combine(chosen[:-1], threshold=t)
    with pytest.raises(SecAggError):  # t - 1 shares rebuild a random field element, not a 32-byte value
        combine(chosen[:-1])


def test_shamir_refuses_malformed_shares():
    # Prepare
    shares = split(bytes(range(32)), 5, 3)
    # Execute / Assert
    assert all(len(s) == SHARE_BYTES for s in shares)
    with pytest.raises(SecAggError, match="same x"):
        combine([shares[0], shares[0], shares[1]])
    with pytest.raises(SecAggError, match="x = 0"):
        combine([bytes(SHARE_BYTES)] + shares[:2])
    with pytest.raises(SecAggError, match="list of shares"):
        combine(shares[0])
    with pytest.raises(SecAggError, match="secret must be 32 bytes"):
        split(b"short", 3, 2)
    with pytest.raises(SecAggError, match="threshold must be in"):
        split(bytes(32), 3, 4)
    assert PRIME == 2**521 - 1 and pow(3, PRIME - 1, PRIME) == 1


# ---------------------------------------------------------------------------------------------------------------
# Parts: defaults, graph, masks, vectors

def test_defaults_follow_secagg_plus():
    # Assert: k = min(n - 1, 2 ceil(3 log2 n)), t = ceil(2 (k + 1) / 3), max_weight keeps n * w * Q < 2**64
    assert [default_neighbours(n) for n in (2, 10, 30, 100, 1000, 10000)] == [1, 9, 29, 40, 60, 80]
    assert [default_threshold(k) for k in (1, 9, 40, 60)] == [2, 7, 28, 41]
    s = SecAggSettings(dimension=650).resolved(1000)
    assert (s.num_neighbours, s.threshold, s.max_weight) == (60, 41, (2**64 - 1) // (1000 * 2**32))
    assert s.error_bound == 8.0 / 2**32 and s.step == 16.0 / 2**32
    assert SecAggSettings.from_dict(s.to_dict()) == s
    numpy_ints = SecAggSettings(dimension=np.int64(5), round=np.int32(3), clipping_range=np.float32(4))
    assert type(numpy_ints.round) is int and type(numpy_ints.clipping_range) is float
    assert numpy_ints == SecAggSettings(dimension=5, round=3, clipping_range=4.0)


def test_neighbour_graph_is_symmetric_regular_and_seeded():
    # Prepare
    ids = ids_for(50)
    # Execute
    g1, g2, g3 = neighbour_graph(ids, 8, 1), neighbour_graph(list(reversed(ids)), 8, 1), neighbour_graph(ids, 8, 2)
    # Assert
    assert g1 == g2 and g1 != g3
    assert all(len(g1[u]) == 8 and u not in g1[u] and all(u in g1[v] for v in g1[u]) for u in ids)
    assert neighbour_graph(ids[:5], 8, 1)["client_000"] == tuple(ids[1:5])


def test_masks_are_deterministic_and_keyed():
    # Assert
    a, b = expand_mask(bytes(32), 100), expand_mask(bytes(31) + b"\1", 100)
    assert a.dtype == np.uint64 and a.shape == (100,)
    np.testing.assert_array_equal(a, expand_mask(bytes(32), 100))
    assert not np.any(a == b)


def test_flatten_and_unflatten_round_trip():
    # Prepare
    arrays = [np.arange(6.0).reshape(2, 3), np.array([7.0]), np.zeros((0, 4)), np.array(3.0)]
    # Execute
    back = unflatten(flatten(arrays), [a.shape for a in arrays])
    # Assert
    assert all(np.array_equal(x, y) and x.shape == y.shape for x, y in zip(arrays, back))
    with pytest.raises(SecAggError, match="cannot fill"):
        unflatten(np.zeros(5), [(2, 3)])


def test_unmask_request_type():
    # Prepare
    r = Round(5, 4, seed=27)
    asks = r.server.unmask_request(r.until_masked(drop_masked={"client_004"}))
    # Assert
    assert asks["client_000"] == UnmaskRequest(dropped=("client_004",),
                                               survived=("client_001", "client_002", "client_003"))
    assert KEY_BYTES == 32 and all(len(k) == KEY_BYTES for k in r.to_server[:10])
