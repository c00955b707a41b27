"""How the gateway decided, for people: decisions per version over time, deny reasons, groups.

One aggregator serves ``agora log stats --figures`` (from the files) and the
community page (live, record by record as the gateway queues them), so both
publish the same figures for the same records, the way :mod:`tally` does for
the counts per version.

Only decision records count (outcome records say how an allowed request ended,
not what was decided). A decision is ``allowed``, ``denied`` (the policy said
no: 403) or ``failed_closed`` (:func:`record.outcome`). Time is bucketed by the
hour of the record's ``time`` (UTC, ``2026-01-31T12``). The group is the
record's optional ``group`` member (``decision_log.group_claim``); records
without one count under ``(none)``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

from gateway.decisionlog.record import OutcomeLabel, outcome, version_key

NO_GROUP = "(none)"
TOP_REASONS = 20
"""Deny reasons published, most frequent first (ties by text)."""
MAX_KEYS = 1000
"""Distinct groups and hours kept; later ones are counted under ``(other)``: a bound on memory
that a caller choosing its own claim values cannot lift."""
OTHER = "(other)"


class Decided(TypedDict):
    allowed: int
    denied: int
    failed_closed: int
    total: int


class GroupFigures(Decided):
    deny_rate: float
    """denied / total, rounded to 4 places (0.0 with no decisions)."""


class HourFigures(TypedDict):
    hour: str
    by_version: dict[str, Decided]


class ReasonCount(TypedDict):
    reason: str
    count: int


class Figures(TypedDict):
    decisions: int
    by_hour: list[HourFigures]
    deny_reasons: list[ReasonCount]
    by_group: dict[str, GroupFigures]


def _zero() -> Decided:
    return Decided(allowed=0, denied=0, failed_closed=0, total=0)


class FigureTally:
    """The figures of the decision records added so far."""

    def __init__(self) -> None:
        self._hours: dict[str, dict[str, Decided]] = {}
        self._reasons: Counter[str] = Counter()
        self._groups: dict[str, Decided] = {}
        self._decisions = 0

    def add_record(self, record: Mapping[str, Any]) -> None:
        """Count one record read from a log file (outcome records are skipped)."""
        if record.get("event", "decision") != "decision":
            return
        self.add(
            hour=record["time"][:13],
            version=record["policy"]["version"],
            allow=bool(record["allow"]),
            status=record["status"],
            reasons=record["reasons"],
            group=record.get("group"),
        )

    def add(
        self,
        *,
        hour: str,
        version: int | None,
        allow: bool,
        status: int | None,
        reasons: Sequence[str],
        group: str | None,
    ) -> None:
        """Count one decision, given its members; ``hour`` is its UTC time's ``2026-01-31T12``."""
        label: OutcomeLabel = outcome(allow, status)
        self._decisions += 1
        by_version = self._hours.setdefault(self._bounded(self._hours, hour), {})
        self._bump(by_version.setdefault(version_key(version), _zero()), label)
        group_key = self._bounded(self._groups, group or NO_GROUP)
        self._bump(self._groups.setdefault(group_key, _zero()), label)
        if label == "denied":
            self._reasons.update(reasons)

    def snapshot(self) -> Figures:
        """The figures as ``agora log stats --figures --json`` prints them."""
        reasons = sorted(self._reasons.items(), key=lambda item: (-item[1], item[0]))
        return Figures(
            decisions=self._decisions,
            by_hour=[
                HourFigures(
                    hour=hour,
                    by_version={
                        v: Decided(**counts)
                        for v, counts in sorted(
                            self._hours[hour].items(), key=lambda item: _version_order(item[0])
                        )
                    },
                )
                for hour in sorted(self._hours)
            ],
            deny_reasons=[ReasonCount(reason=r, count=n) for r, n in reasons[:TOP_REASONS]],
            by_group={
                group: GroupFigures(**counts, deny_rate=deny_rate(counts))
                for group, counts in sorted(self._groups.items())
            },
        )

    @staticmethod
    def _bounded(table: Mapping[str, object], key: str) -> str:
        return key if key in table or len(table) < MAX_KEYS else OTHER

    @staticmethod
    def _bump(counts: Decided, label: OutcomeLabel) -> None:
        counts[label] += 1
        counts["total"] += 1


def deny_rate(counts: Decided) -> float:
    """The share of decisions the policy denied, rounded to 4 places."""
    return round(counts["denied"] / counts["total"], 4) if counts["total"] else 0.0


def _version_order(key: str) -> tuple[bool, int]:
    return (key == "none", int(key) if key != "none" else 0)
