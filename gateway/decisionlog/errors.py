"""Errors of the decision log.

They derive from :class:`gateway.exceptions.AgoraError` so that the gateway's
error handling covers them; a request whose decision cannot be logged must fail
closed (503), never go through unrecorded.
"""

from __future__ import annotations

from gateway.exceptions import AgoraError


class DecisionLogError(AgoraError):
    """The decision log cannot accept, write or read records."""


class DecisionLogFull(DecisionLogError):
    """The writer's queue is full and ``on_full`` is ``fail_closed``: answer 503."""


class RecordError(DecisionLogError):
    """One line of a log file is not a valid record; the message says why."""
