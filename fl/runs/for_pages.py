"""What the dashboard's pages take from below the run layer, named once.

The pages (``app_pages/``) and what they share (``ui/``) import the engine
only through ``fl.runs``; .importlinter holds them to it ("pages reach only
the run layer"). The few names they need from the lower layers (the model
and rule menus, per-class metrics, the data preview, the event sentences,
the server's settings for the Deploy page, the error family) are re-exported
here, so a page never learns where in the engine they live. A page that
needs one more name adds it here.
"""

from __future__ import annotations

from fl.data import (
    PARTITIONERS, SPLIT_REASON, DataError, describe_csv, guess_split_column, guess_target, looks_continuous,
    read_csv_table, split_candidates, target_rows,
)
from fl.data.columns import parse_columns
from fl.errors import ChoiceError, FLError
from fl.federation.checkpoint import CheckpointError
from fl.federation.events import describe_event
from fl.federation.identity import parse_client_ids
from fl.federation.server import ServerSettings
from fl.learning.metrics import per_class
from fl.learning.models import MODELS, Hyper, get_model
from fl.learning.privacy import NO_PRIVACY
from fl.learning.strategies import strategies_for
from fl.wire.tls import default_hosts

__all__ = [
    # the error family (fl.errors): a page catches FLError once
    "FLError", "ChoiceError", "DataError", "CheckpointError",
    # data: the sidebar's preview of a CSV and its split
    "PARTITIONERS", "SPLIT_REASON", "describe_csv", "guess_split_column", "guess_target", "looks_continuous",
    "read_csv_table", "split_candidates", "target_rows", "parse_columns",
    # learning: the model and rule menus, per-class metrics, the privacy words
    "MODELS", "Hyper", "get_model", "strategies_for", "per_class", "NO_PRIVACY",
    # federation: events in words, the Deploy page's server settings and client ids
    "describe_event", "ServerSettings", "parse_client_ids",
    # wire: the host names a server certificate covers by default
    "default_hosts",
]
