"""The engine's exception family: every error it raises on purpose is an FLError, and keeps its old base."""

from __future__ import annotations

import pytest

from fl.data import DataError, ResourceError
from fl.errors import ChoiceError, FLError
from fl.federation.checkpoint import CheckpointError
from fl.federation.client import ClientError
from fl.federation.secagg import SecAggError
from fl.federation.secure_sum import SecureSumFailed
from fl.learning.models import get_model
from fl.learning.strategies import get_strategy
from fl.runs.audit import AuditError
from fl.runs.cluster import ClusterError
from fl.runs.config import ConfigError
from fl.runs.for_pages import FLError as FLErrorForPages
from fl.runs.sweep_spec import GridError
from fl.wire import PeerClosed, ProtocolError


@pytest.mark.parametrize("cls, old_base", [
    (ChoiceError, ValueError), (ProtocolError, Exception), (PeerClosed, ConnectionError), (DataError, ValueError),
    (ResourceError, DataError), (SecAggError, ValueError), (SecureSumFailed, RuntimeError),
    (CheckpointError, ValueError), (ClientError, Exception), (ConfigError, ValueError), (ClusterError, ConfigError),
    (GridError, ValueError), (AuditError, Exception),
])
def test_every_error_is_an_fl_error_and_keeps_its_base(cls, old_base):
    # Assert
    assert issubclass(cls, FLError)
    assert issubclass(cls, old_base)


def test_an_unknown_model_or_rule_is_a_choice_error_that_lists_the_choices():
    # Execute + Assert
    with pytest.raises(ChoiceError, match="unknown model 'nope'; known models: .*logreg"):
        get_model("nope")
    with pytest.raises(ValueError, match="unknown aggregation 'nope'; choose one of: .*fedavg"):
        get_strategy("nope")


def test_the_pages_catch_the_same_family():
    # Assert
    assert FLErrorForPages is FLError
    assert issubclass(ProtocolError("json", "bad").__class__, FLError)
    assert str(ClientError("data", "no rows")) == "no rows"
