"""Counting a decision log: decisions per policy version and outcome, and how allowed ones ended.

One counter serves ``agora log stats`` (from the files) and ``/transparency``
(live, record by record as the gateway queues them), so both give the same
figures for the same records.

Decisions are counted from decision records only: ``allowed``, ``denied`` and
``failed_closed``, which add up to ``total``. For allowed decisions, outcome
records add ``forwarded_ok`` (the upstream answered, status below 500) and
``upstream_failed`` (5xx: unreachable, timed out, cut mid-stream). An allowed
decision without an outcome record is ``incomplete``: in flight, or cut by a
crash. Over a whole chain, ``allowed == forwarded_ok + upstream_failed +
incomplete``. A decision record written by the first writers (no ``event``,
one record per request at its end) is its own outcome.

Response records (response policy's decision on an answer, one per judged
answer) are counted apart, as ``answers_allowed``, ``answers_denied`` and
``answers_failed_closed``: they judge answers of requests already counted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, TypedDict

from gateway.decisionlog.record import ending, outcome, version_key

Figure = Literal[
    "allowed", "denied", "failed_closed", "total", "forwarded_ok", "upstream_failed", "incomplete",
    "answers_allowed", "answers_denied", "answers_failed_closed",
]  # fmt: skip


_ANSWER_FIGURES: dict[str, Figure] = {
    "allowed": "answers_allowed",
    "denied": "answers_denied",
    "failed_closed": "answers_failed_closed",
}


class OutcomeCounts(TypedDict):
    allowed: int
    denied: int
    failed_closed: int
    total: int
    """Decisions: allowed + denied + failed_closed."""
    forwarded_ok: int
    upstream_failed: int
    incomplete: int
    answers_allowed: int
    """Answers response policy judged and allowed (response records)."""
    answers_denied: int
    answers_failed_closed: int


class VersionStats(OutcomeCounts):
    digests: list[str]
    """Bundle digests seen with this version: one, unless something is very wrong."""


class LogStats(TypedDict):
    count: int
    """Records in the chain, outcome records included."""
    head: str | None
    totals: OutcomeCounts
    by_version: dict[str, VersionStats]
    """Keyed by policy version (``"none"`` when no policy was active), in version order."""


def zero() -> OutcomeCounts:
    return OutcomeCounts(
        allowed=0, denied=0, failed_closed=0, total=0,
        forwarded_ok=0, upstream_failed=0, incomplete=0,
        answers_allowed=0, answers_denied=0, answers_failed_closed=0,
    )  # fmt: skip


class Tally:
    """Counts of the records added so far, optionally on top of counts taken earlier."""

    def __init__(self, seed: LogStats | None = None) -> None:
        self._totals = zero()
        self._by_version: dict[str, VersionStats] = {}
        self._open: dict[str, str] = {}
        """Allowed decisions without an outcome yet: decision_id -> version key."""
        if seed is not None:
            self._totals = OutcomeCounts(**{**zero(), **seed["totals"]})
            self._by_version = {
                key: VersionStats(**{**zero(), **entry, "digests": list(entry["digests"])})
                for key, entry in seed["by_version"].items()
            }

    def add_record(self, record: Mapping[str, Any]) -> None:
        """Count one record read from a log file."""
        self.add(
            event=record.get("event", "decision"),
            decision_id=record["decision_id"],
            version=record["policy"]["version"],
            digest=record["policy"]["digest"],
            allow=record["allow"],
            status=record["status"],
            answer=record.get("response", {}).get("outcome"),
        )

    def add(
        self,
        *,
        event: str,
        decision_id: str,
        version: int | None,
        digest: str | None,
        allow: bool | None,
        status: int | None,
        answer: str | None = None,
    ) -> None:
        """Count one record, given its members (``answer``: a response record's outcome)."""
        key = version_key(version)
        entry = self._entry(key, digest)
        if event == "response":
            self._bump(entry, _ANSWER_FIGURES.get(answer or "", "answers_failed_closed"))
            return
        if event == "outcome":
            assert status is not None
            self._bump(entry, ending(status))
            opened = self._open.pop(decision_id, None)
            if opened is not None:
                self._bump(self._by_version[opened], "incomplete", -1)
            return
        self._bump(entry, outcome(bool(allow), status))
        self._bump(entry, "total")
        if allow and status is None:
            self._open[decision_id] = key
            self._bump(entry, "incomplete")
        elif allow:
            assert status is not None
            self._bump(entry, ending(status))

    def snapshot(self, count: int, head: str | None) -> LogStats:
        """The counts as ``agora log stats --json`` prints them, for ``count`` records."""
        order = sorted(self._by_version, key=lambda k: (k == "none", int(k) if k != "none" else 0))
        return LogStats(
            count=count,
            head=head,
            totals=OutcomeCounts(**self._totals),
            by_version={
                key: VersionStats(
                    **{**self._by_version[key], "digests": list(self._by_version[key]["digests"])}
                )
                for key in order
            },
        )

    def _entry(self, key: str, digest: str | None) -> VersionStats:
        entry = self._by_version.get(key)
        if entry is None:
            entry = self._by_version[key] = VersionStats(**zero(), digests=[])
        if digest is not None and digest not in entry["digests"]:
            entry["digests"].append(digest)
        return entry

    def _bump(self, entry: VersionStats, figure: Figure, by: int = 1) -> None:
        entry[figure] += by
        self._totals[figure] += by
