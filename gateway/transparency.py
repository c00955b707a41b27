"""The figures the gateway publishes at ``/transparency``, in the shape ``agora log stats`` prints.

Counts start from the log already on disk (verified at start) and grow with each
record handed to the writer, so that once the queue is drained they equal what
anyone recomputes from the files with ``agora log stats --json``.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from gateway.decisionlog.errors import DecisionLogError
from gateway.decisionlog.files import rotated_files
from gateway.decisionlog.record import outcome, version_key
from gateway.decisionlog.verify import (
    ChainBroken,
    LogStats,
    OutcomeCounts,
    VersionStats,
    stats,
)

logger = logging.getLogger("agora.transparency")


def _zero() -> OutcomeCounts:
    return OutcomeCounts(allowed=0, denied=0, failed_closed=0, total=0)


class DecisionCounts:
    """Counts per policy version and outcome of every record in the decision log."""

    def __init__(self) -> None:
        self._totals = _zero()
        self._by_version: dict[str, VersionStats] = {}
        self.verified_at_start: bool | None = None
        """Whether the log found at start verified (None: not checked yet)."""

    async def load(self, log_path: Path) -> None:
        """Seed the counts from the files of the log (current and rotated), verifying them."""
        files = [*rotated_files(log_path), log_path]
        files = [f for f in files if f.exists() and f.stat().st_size > 0]
        if not files:
            self.verified_at_start = True
            return
        try:
            existing = await asyncio.to_thread(stats, files, partial=True)
        except ChainBroken as exc:
            self.verified_at_start = False
            logger.error("the decision log on disk does not verify: %s", exc)
            return
        except DecisionLogError as exc:
            self.verified_at_start = False
            logger.error("the decision log on disk cannot be read: %s", exc)
            return
        self._totals = existing["totals"]
        self._by_version = dict(existing["by_version"])
        self.verified_at_start = True

    def add(self, version: int | None, digest: str | None, allow: bool, status: int) -> None:
        key = version_key(version)
        entry = self._by_version.get(key)
        if entry is None:
            entry = self._by_version[key] = VersionStats(
                allowed=0, denied=0, failed_closed=0, total=0, digests=[]
            )
        kind = outcome(allow, status)
        entry[kind] += 1
        entry["total"] += 1
        self._totals[kind] += 1
        self._totals["total"] += 1
        if digest is not None and digest not in entry["digests"]:
            entry["digests"].append(digest)

    def snapshot(self, count: int, head: str | None) -> LogStats:
        order = sorted(self._by_version, key=lambda k: (k == "none", int(k) if k != "none" else 0))
        return LogStats(
            count=count,
            head=head,
            totals=OutcomeCounts(**self._totals),
            by_version={
                k: VersionStats(
                    **{**self._by_version[k], "digests": list(self._by_version[k]["digests"])}
                )
                for k in order
            },
        )
