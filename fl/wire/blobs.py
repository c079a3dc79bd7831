"""Fitted models as bytes: skops in, skops out, with an explicit allow-list.

A skops blob that arrives from the network is loaded only when every type it
names is either one skops trusts by default (plain scikit-learn estimators,
numpy) or one on ``EXTRA_TRUSTED_TYPES`` below. Anything else is rejected as a
protocol error before a single object is built. pickle never touches bytes
from the network.
"""

from __future__ import annotations

from typing import Any

from fl.wire.fields import ProtocolError

# Types beyond skops' defaults that the supported models need. Each entry is
# here because a model of fl.learning.models or an ensemble of
# fl.learning.ensemble (the global model of a stacking or voting run, sent in
# ``evaluate``) holds it. tests/test_models.py loads every model's fitted
# estimator through load_model and checks that a blob naming a type outside
# the allow-list is refused.
EXTRA_TRUSTED_TYPES: tuple[str, ...] = (
    "sklearn.tree._tree.Tree",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.neighbors._ball_tree.BallTree",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.metrics._dist_metrics.ManhattanDistance64",
    "sklearn.metrics._dist_metrics.MinkowskiDistance64",
    "sklearn.metrics._dist_metrics.ChebyshevDistance64",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
    "fl.learning.ensemble.SoftVotingEnsemble",
    "fl.learning.ensemble.StackingEnsemble",
    "fl.learning.models.gbdt.HistGBDTClassifier",
)


def _skops_io() -> Any:
    """skops.io, imported on first use: it costs 0.7 s of every process's start (it walks scikit-learn for its
    trusted types), and only whole-model runs (trees, stacking, voting, saved models) need it; the parameter
    runs of the default models never do (docs/performance.md, "Round overhead")."""
    import skops.io

    return skops.io


def dump_model(estimator: Any) -> bytes:
    """Serialise a fitted estimator for the wire."""
    return _skops_io().dumps(estimator)


def load_model(blob: bytes, trusted: tuple[str, ...] = EXTRA_TRUSTED_TYPES) -> Any:
    """Load a skops blob, refusing any type outside the allow-list.

    Raises ProtocolError("blob") for bytes that are not a skops file or that
    name an untrusted type, so the caller can answer `error` and drop the peer.
    """
    sio = _skops_io()
    try:
        untrusted = sio.get_untrusted_types(data=blob)
    except Exception as exc:  # skops raises many kinds on garbage input
        raise ProtocolError("blob", f"not a readable skops blob: {exc}") from None
    refused = sorted(set(untrusted) - set(trusted))
    if refused:
        raise ProtocolError("blob", f"skops blob names untrusted types: {', '.join(refused)}")
    try:
        return sio.loads(blob, trusted=list(untrusted))
    except Exception as exc:
        raise ProtocolError("blob", f"skops blob could not be loaded: {exc}") from None
