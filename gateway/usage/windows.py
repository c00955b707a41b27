"""Fixed usage windows aligned on the epoch: the current minute, the current day (UTC).

A fixed window costs one counter per subject and window, read and incremented
in one step; it lets a caller spend a whole budget at the end of one window and
again at the start of the next, which policy authors weigh when choosing
windows. The clock is injectable so that tests can roll windows over.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

Clock = Callable[[], float]
"""Seconds since the epoch (``time.time``)."""


@dataclass(frozen=True)
class Span:
    """One window's current occurrence: ``[start, start + seconds)`` in epoch seconds."""

    name: str
    seconds: int
    start: int

    @property
    def end(self) -> int:
        return self.start + self.seconds

    def resets_in_s(self, now: float) -> int:
        """Whole seconds until this window rolls over (at least 1)."""
        return max(1, int(self.end - now + 0.999))


class Windows:
    """The configured windows, and which occurrence of each is current."""

    def __init__(self, windows: Mapping[str, int], clock: Clock = time.time):
        self._windows = dict(windows)
        self._clock = clock

    def now(self) -> float:
        return self._clock()

    def current(self, now: float) -> tuple[Span, ...]:
        """The occurrence of every window that contains ``now``."""
        return tuple(
            Span(name, seconds, int(now // seconds) * seconds)
            for name, seconds in self._windows.items()
        )
