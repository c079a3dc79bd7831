"""The engine's one exception family: every error the engine raises on purpose is an ``FLError``.

This module sits outside the layers (``fl.wire``, ``fl.data``, ``fl.learning``,
``fl.federation``, ``fl.runs``, and the command line ``fl.cli`` above them)
and imports nothing, so every layer may import it. A caller that only needs
"the engine said no, in words" catches ``FLError`` once; a caller that must
tell the cases apart catches the subclass. Each subclass keeps the built-in base code relied on before the
family existed (``ValueError``, ``RuntimeError``, ``ConnectionError``), so
``except ValueError`` still catches what it caught. The tree (docs/engine.md,
"Errors"):

    FLError
    ├── ChoiceError (ValueError)            fl.errors: an unknown model or aggregation name
    ├── ProtocolError                       fl.wire.fields: a frame or message breaks wire protocol v1
    ├── PeerClosed (ConnectionError)        fl.wire.fields: the peer is gone
    ├── DataError (ValueError)              fl.data.errors: data that cannot be used as asked
    │   └── ResourceError                   fl.data.resources: more memory than this machine allows
    ├── SecAggError (ValueError)            fl.federation.secagg: a secure-aggregation step is refused
    ├── SecureSumFailed (RuntimeError)      fl.federation.secure_sum: too few clients left for a secure sum
    ├── CheckpointError (ValueError)        fl.federation.checkpoint: a checkpoint that cannot be resumed
    ├── ClientError                         fl.federation.client: the client cannot take part
    ├── ConfigError (ValueError)            fl.runs.config: a run setting to fix
    │   └── ClusterError                    fl.runs.cluster: a cluster that cannot host the run
    ├── GridError (ValueError)              fl.runs.sweep_spec: a sweep grid that cannot run
    ├── AuditError                          fl.runs.audit: a run that cannot be audited
    ├── RunsError                           fl.runs.manage: a stored run not found, or not to be done to it
    └── UsageError                          fl.cli.usage: flags to fix (the command line catches FLError once)

Signals that are not errors (a stop asked for, a child to replace) stay
plain exceptions: ``ServerStopped``, ``BaselinesCancelled``, ``ChildFailed``.
"""

from __future__ import annotations

__all__ = ["FLError", "ChoiceError"]


class FLError(Exception):
    """An error of the engine; ``str(e)`` says what went wrong (and, where it can, what to do)."""


class ChoiceError(FLError, ValueError):
    """A name that is not one of the choices (a model, an aggregation rule); the message lists them."""
