"""The wire protocol v1: frames (the codec), typed messages, the event-loop transport, TLS and model blobs.

This layer knows nothing of models, data or runs; docs/protocol.md is its
contract. Import the protocol's names from here. The transport of the
engine is ``fl.wire.aio``; ``fl.wire.reference_peer`` is a blocking peer for
tests and bench, deliberately not exported here.
"""

from fl.wire.codec import (
    ALLOWED_DTYPES, DEFAULT_FRAME_TIMEOUT_S, DEFAULT_MAX_HEADER_BYTES, DEFAULT_MAX_MESSAGE_BYTES, MAGIC, PREFIX_SIZE,
    FrameLayout, Limits, build_frame, decode_frame, encode_frame, frame_to_bytes, parse_header, parse_prefix,
)
from fl.wire.fields import (
    BLOB_FORMAT_SKOPS, CLIENT_ID_PATTERN, MAX_CONFUSION_CLASSES, PROTOCOL_VERSION, Frame, NamedArrays, PeerClosed,
    ProtocolError, json_safe,
)
from fl.wire.messages import (
    MESSAGE_TYPES, Bye, Error, Evaluate, EvaluateResult, Fit, FitMetadata, FitResult, Hello, Message, MessageStream,
    Ping, Pong, Welcome, parse_message,
)
from fl.wire.summary_messages import SUMMARY_FEATURE, Summarize, Summary  # the data-summary extension (docs/protocol.md)

__all__ = [
    "PROTOCOL_VERSION", "MAGIC", "ALLOWED_DTYPES", "DEFAULT_MAX_HEADER_BYTES",
    "DEFAULT_MAX_MESSAGE_BYTES", "DEFAULT_FRAME_TIMEOUT_S", "CLIENT_ID_PATTERN", "PREFIX_SIZE",
    "BLOB_FORMAT_SKOPS", "NamedArrays", "ProtocolError", "PeerClosed", "Limits", "Frame", "FrameLayout",
    "encode_frame", "frame_to_bytes", "decode_frame", "parse_prefix", "parse_header", "build_frame", "json_safe",
    "Hello", "Welcome", "Fit", "FitMetadata", "FitResult", "Evaluate", "EvaluateResult", "Ping", "Pong", "Bye",
    "Error", "Message", "MessageStream", "MESSAGE_TYPES", "parse_message", "Summarize", "Summary", "SUMMARY_FEATURE",
    "MAX_CONFUSION_CLASSES",
]
