"""The figures the gateway publishes at ``/transparency``, in the shape ``agora log stats`` prints.

Counts start from the log already on disk (verified at start) and grow with each
record handed to the writer, counted by the same :class:`Tally` as ``agora log
stats``, so that once the queue is drained they equal what anyone recomputes
from the files with ``agora log stats --json``.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from pathlib import Path

from gateway.decisionlog.errors import DecisionLogError
from gateway.decisionlog.figures import Figures, FigureTally
from gateway.decisionlog.files import rotated_files
from gateway.decisionlog.record import DecisionEntry, format_time
from gateway.decisionlog.tally import LogStats, Tally
from gateway.decisionlog.verify import ChainBroken, stats

logger = logging.getLogger("agora.transparency")


class DecisionCounts:
    """Counts per policy version and outcome of every record in the decision log."""

    def __init__(self) -> None:
        self._tally = Tally()
        self._figures = FigureTally()
        self._hour_index = -1
        self._hour_text = ""
        self.verified_at_start: bool | None = None
        """Whether the log found at start verified (None: not checked yet)."""

    async def load(self, log_path: Path) -> None:
        """Seed the counts from the files of the log (current and rotated), verifying them."""
        files = [*rotated_files(log_path), log_path]
        files = [f for f in files if f.exists() and f.stat().st_size > 0]
        if not files:
            self.verified_at_start = True
            return
        figures = FigureTally()
        try:
            existing = await asyncio.to_thread(stats, files, partial=True, also=figures.add_record)
        except ChainBroken as exc:
            self.verified_at_start = False
            logger.error("the decision log on disk does not verify: %s", exc)
            return
        except DecisionLogError as exc:
            self.verified_at_start = False
            logger.error("the decision log on disk cannot be read: %s", exc)
            return
        self._tally = Tally(existing)
        self._figures = figures
        self.verified_at_start = True

    def add(self, entry: DecisionEntry) -> None:
        """Count a record that was just queued for the log."""
        self._tally.add(
            event=entry.event,
            decision_id=entry.decision_id,
            version=entry.policy_version,
            digest=entry.policy_digest,
            allow=entry.allow,
            status=entry.status,
            answer=str(entry.response["outcome"]) if entry.response is not None else None,
        )
        if entry.event == "decision":
            assert entry.allow is not None
            self._figures.add(
                hour=self._hour(entry.time),
                version=entry.policy_version,
                allow=entry.allow,
                status=entry.status,
                reasons=entry.reasons,
                group=entry.group,
            )

    def _hour(self, moment: datetime) -> str:
        """The record's hour as its ``time`` reads (format_time is a few µs: done once an hour)."""
        index = int(moment.timestamp()) // 3600
        if index != self._hour_index:
            self._hour_index, self._hour_text = index, format_time(moment)[:13]
        return self._hour_text

    def figures(self) -> Figures:
        """Decisions per version by the hour, deny reasons and groups (``agora log stats
        --figures``)."""
        return self._figures.snapshot()

    def snapshot(self, count: int, head: str | None) -> LogStats:
        return self._tally.snapshot(count, head)
