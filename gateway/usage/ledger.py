"""The request path's one entry to usage: charge a request, refund it, add its tokens.

Before policy is asked, ``charge`` counts the request in every window for its
caller and groups and returns what they had used before it: that is
``input.usage``. One call to the counters, so one round trip to Redis. A
request that is not forwarded is refunded; a forwarded one adds its tokens
when its answer is over. Refunds and tokens go to shared counters in the
background, off the answer's path (``stop`` waits for them); local counters
take them at once, without a task.

When Redis cannot be reached, ``usage.on_unavailable`` decides: ``fail_closed``
refuses the request (503) before anything is forwarded, ``local`` counts it in
this process instead. Usage is never left uncounted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.auth import Caller
from gateway.config import Usage
from gateway.exceptions import UsageUnavailable
from gateway.lifecycle import State, cancel_task
from gateway.metrics import GatewayMetrics
from gateway.usage.counters import Cell, Counters, LocalCounters, RedisCounters, Tally, Tokens
from gateway.usage.windows import Clock, Span, Windows

logger = logging.getLogger("agora.usage")

ANONYMOUS_SUBJECT = "anonymous"
"""Anonymous callers are counted together, as one subject."""
NO_SUB_SUBJECT = "no-sub"
"""Authenticated callers whose token names no ``sub``, counted together too."""
PING_INTERVAL_S = 5.0
"""How often a shared store's reachability is checked, for /readyz and the metric."""
STOP_WAIT_S = 5.0
"""How long ``stop`` waits for tokens still on their way to the counters."""


@dataclass(frozen=True)
class Charge:
    """One request counted: where, in which cells, and the usage policy sees.

    With ``usage.enabled: false`` nothing is counted: no cells, no document.
    """

    counters: Counters
    cells: tuple[Cell, ...]
    document: dict[str, Any] | None


class UsageLedger:
    """Counts requests and tokens per caller, group and window (a worker, for /readyz)."""

    name = "usage"

    def __init__(self, config: Usage, metrics: GatewayMetrics, clock: Clock = time.time):
        self._config = config
        self._metrics = metrics
        self._windows = Windows(config.windows, clock)
        self._local = LocalCounters(clock)
        self._shared = (
            RedisCounters(config.redis_url, config.timeout_ms / 1000, config.key_prefix)
            if config.redis_url and config.enabled
            else None
        )
        self._fallback = config.on_unavailable == "local"
        self._failure: str | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._pinger: asyncio.Task[None] | None = None

    @property
    def gates_readiness(self) -> bool:
        """Unready while Redis is down only when that refuses every request."""
        return self._shared is not None and not self._fallback

    @property
    def state(self) -> State:
        if self._failure is None:
            return State.OK
        return State.WARN if self._fallback else State.ERROR

    @property
    def detail(self) -> str:
        counters = self._shared or self._local
        if not self._config.enabled:
            return "not counting (usage.enabled: false): no budget applies"
        if self._failure is None:
            return f"counting in {counters.where}"
        then = "counting in this process meanwhile" if self._fallback else "refusing requests"
        return f"{self._failure}; {then}"

    async def start(self) -> None:
        """Check Redis once (a failure is shown, not fatal), then keep checking it."""
        if self._shared is not None:
            await self._ping()
            self._pinger = asyncio.create_task(self._keep_pinging())

    async def stop(self) -> None:
        await cancel_task(self._pinger)
        if self._background:
            await asyncio.wait(self._background, timeout=STOP_WAIT_S)
        if self._shared is not None:
            await self._shared.close()
        await self._local.close()

    async def charge(self, caller: Caller) -> Charge:
        """Count one more request for the caller; raise UsageUnavailable to refuse it."""
        if not self._config.enabled:
            return Charge(self._local, (), None)
        now = self._windows.now()
        spans = self._windows.current(now)
        subjects = self._subjects(caller)
        cells = tuple(Cell(subject, span) for subject in subjects for span in spans)
        counters: Counters = self._shared or self._local
        try:
            tallies = await counters.charge(cells)
        except UsageUnavailable as exc:
            self._failed("charge", exc)
            if not self._fallback:
                raise
            counters = self._local
            tallies = await counters.charge(cells)
        else:
            self._failure = None
        return Charge(counters, cells, _document(subjects, spans, tallies, now, counters))

    def refund(self, charge: Charge) -> None:
        """Take back the request of ``charge``: it was not forwarded."""
        if not charge.cells:
            return
        if isinstance(charge.counters, LocalCounters):
            charge.counters.refund_now(charge.cells)  # no task per request for a dict update
        else:
            self._in_background("refund", charge.counters.refund(charge.cells))

    def add_tokens(self, charge: Charge, tokens: Tokens) -> None:
        """Add what the request of ``charge`` used."""
        if not charge.cells:
            return
        source = "estimated" if tokens.estimated else "reported"
        self._metrics.usage_tokens.labels("prompt", source).inc(tokens.prompt)
        self._metrics.usage_tokens.labels("completion", source).inc(tokens.completion)
        if isinstance(charge.counters, LocalCounters):
            charge.counters.add_tokens_now(charge.cells, tokens)
        else:
            self._in_background("tokens", charge.counters.add_tokens(charge.cells, tokens))

    def _subjects(self, caller: Caller) -> list[str]:
        """The caller's own subject, then its groups (authenticated callers only)."""
        if not caller.authenticated:
            return [ANONYMOUS_SUBJECT]
        subjects = [f"sub:{caller.sub}" if caller.sub is not None else NO_SUB_SUBJECT]
        claim = caller.claims.get(self._config.groups_claim)
        groups = [claim] if isinstance(claim, str) else claim if isinstance(claim, list) else []
        seen: set[str] = set()
        for group in groups:
            if len(seen) >= self._config.max_groups:
                break
            if isinstance(group, str) and group not in seen:
                seen.add(group)
                subjects.append(f"group:{group}")
        return subjects

    def _in_background(self, operation: str, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(self._settle(operation, work))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _settle(self, operation: str, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except UsageUnavailable as exc:
            self._failed(operation, exc, action="lost")

    def _failed(self, operation: str, exc: UsageUnavailable, action: str | None = None) -> None:
        if action is None:
            action = "local" if self._fallback else "refused"
        if self._failure is None:
            logger.warning("%s (%s)", exc, operation)
        self._failure = str(exc)
        self._metrics.usage_unavailable.labels(operation, action).inc()

    async def _ping(self) -> None:
        assert self._shared is not None
        try:
            await self._shared.ping()
        except UsageUnavailable as exc:
            self._failed("ping", exc, action="none")
        else:
            if self._failure is not None:
                logger.info("the usage counters are reachable again (%s)", self._shared.where)
            self._failure = None

    async def _keep_pinging(self) -> None:
        while True:
            await asyncio.sleep(PING_INTERVAL_S)
            await self._ping()


def _document(
    subjects: Sequence[str],
    spans: Sequence[Span],
    tallies: Sequence[Tally],
    now: float,
    counters: Counters,
) -> dict[str, Any]:
    """``input.usage``: the windows, and each subject's use in each before this request."""
    per_subject: dict[str, dict[str, Any]] = {}
    index = 0
    for subject in subjects:
        windows = per_subject.setdefault(subject, {})
        for span in spans:
            tally = tallies[index]
            index += 1
            windows[span.name] = {
                "requests": tally.requests,
                "tokens": {
                    "prompt": tally.prompt,
                    "completion": tally.completion,
                    "total": tally.total,
                },
                "estimated": tally.estimated,
            }
    own = per_subject.pop(subjects[0])
    return {
        "windows": {
            span.name: {"seconds": span.seconds, "resets_in_s": span.resets_in_s(now)}
            for span in spans
        },
        "caller": own,
        "groups": {subject.removeprefix("group:"): use for subject, use in per_subject.items()},
        "counters": "local" if isinstance(counters, LocalCounters) else "shared",
    }
