"""Errors of the decision log.

All derive from :class:`gateway.exceptions.DecisionLogError` (an ``AgoraError``),
so that the gateway's error handling covers them: a request whose decision
cannot be logged fails closed (503), never goes through unrecorded.
"""

from __future__ import annotations

from gateway.exceptions import DecisionLogError


class DecisionLogFull(DecisionLogError):
    """The writer's queue is full and ``on_full`` is ``fail_closed``: answer 503."""


class DecisionLogUnavailable(DecisionLogError):
    """The writer is not running, or its writes are failing: it takes no new admissions."""


class UnrecordableDecision(DecisionLogError):
    """A decision cannot be made into a record (a value JSON or the format cannot hold)."""


class RecordError(DecisionLogError):
    """One line of a log file is not a valid record; the message says why."""


__all__ = [
    "DecisionLogError",
    "DecisionLogFull",
    "DecisionLogUnavailable",
    "RecordError",
    "UnrecordableDecision",
]
