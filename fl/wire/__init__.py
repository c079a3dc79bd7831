"""The wire protocol v1: frames, typed messages, the framed connection, TLS and model blobs.

This layer knows nothing of models, data or runs; docs/protocol.md is its
contract. Import the protocol's names from here.
"""

from fl.wire.connection import Connection
from fl.wire.frames import *  # noqa: F403 - the frame and message names, see fl.wire.frames.__all__
from fl.wire.frames import POLL_S, __all__ as _frame_names

__all__ = [*_frame_names, "Connection", "POLL_S"]
