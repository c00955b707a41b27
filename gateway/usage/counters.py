"""Usage counters behind one protocol: in this process, or in Redis shared by replicas.

Each cell counts one subject (a caller's ``sub``, a group, or the anonymous
callers together) in one window occurrence: requests, prompt, completion and
total tokens, and how many requests had their tokens estimated. A cell expires
a little after its window ends, so nothing has to sweep Redis.

Charging a request is the hot path: one call increments the request count of
every cell and reads them all, atomically per cell. In Redis that is one
pipelined round trip (HINCRBY, EXPIREAT, HMGET per cell); several gateways
then share one count, and no two concurrent requests read the same value.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from gateway.exceptions import UsageUnavailable
from gateway.redaction import redact_url
from gateway.usage.windows import Clock, Span

TOKEN_FIELDS = ("prompt", "completion", "total", "estimated")
"""The token fields of a cell, besides ``requests``."""
EXPIRY_GRACE_S = 300
"""How long a cell outlives its window: tokens of a long answer still land in it."""


@dataclass(frozen=True)
class Cell:
    """One subject's counters in one window occurrence."""

    subject: str
    span: Span

    def key(self, prefix: str) -> str:
        return f"{prefix}{self.span.name}:{self.span.start}:{self.subject}"

    @property
    def expires_at(self) -> int:
        return self.span.end + EXPIRY_GRACE_S


@dataclass(frozen=True)
class Tally:
    """A cell's counts."""

    requests: int = 0
    prompt: int = 0
    completion: int = 0
    total: int = 0
    estimated: int = 0


@dataclass(frozen=True)
class Tokens:
    """What one answer used; ``estimated`` when the upstream reported no usage."""

    prompt: int
    completion: int
    estimated: bool = False

    @property
    def total(self) -> int:
        return self.prompt + self.completion

    def fields(self) -> tuple[int, int, int, int]:
        """In the order of TOKEN_FIELDS."""
        return (self.prompt, self.completion, self.total, int(self.estimated))


class Counters(Protocol):
    """Where usage is counted."""

    @property
    def where(self) -> str:
        """Where the counts live, for operators (``/readyz``)."""
        ...

    async def charge(self, cells: Sequence[Cell]) -> list[Tally]:
        """Count one more request in every cell; each cell's tally before this request."""
        ...

    async def refund(self, cells: Sequence[Cell]) -> None:
        """Take back a request charged to ``cells`` that was not forwarded."""
        ...

    async def add_tokens(self, cells: Sequence[Cell], tokens: Tokens) -> None:
        """Add what a forwarded request used to every cell it was charged to."""
        ...

    async def ping(self) -> None:
        """Raise UsageUnavailable if the counters cannot be reached."""
        ...

    async def close(self) -> None: ...


class LocalCounters:
    """Counters in this process: exact for one replica, each replica its own otherwise."""

    where = "local (this process)"

    def __init__(self, clock: Clock):
        self._clock = clock
        self._cells: dict[Cell, list[int]] = {}
        self._next_sweep = 0.0

    async def charge(self, cells: Sequence[Cell]) -> list[Tally]:
        self._sweep()
        tallies = []
        for cell in cells:
            counts = self._cells.setdefault(cell, [0, 0, 0, 0, 0])
            tallies.append(Tally(*counts))
            counts[0] += 1
        return tallies

    async def refund(self, cells: Sequence[Cell]) -> None:
        for cell in cells:
            counts = self._cells.get(cell)
            if counts is not None and counts[0] > 0:
                counts[0] -= 1

    async def add_tokens(self, cells: Sequence[Cell], tokens: Tokens) -> None:
        for cell in cells:
            counts = self._cells.setdefault(cell, [0, 0, 0, 0, 0])
            for index, value in enumerate(tokens.fields(), start=1):
                counts[index] += value

    async def ping(self) -> None:
        """Always reachable."""

    async def close(self) -> None:
        self._cells.clear()

    def _sweep(self) -> None:
        """Forget cells whose window is over, at most once a minute."""
        now = self._clock()
        if now < self._next_sweep:
            return
        self._next_sweep = now + 60
        for cell in [c for c in self._cells if c.expires_at <= now]:
            del self._cells[cell]


class RedisCounters:
    """Counters in Redis (or Valkey), shared by every replica that names the same URL.

    One immediate retry on a fresh connection (a restarted Redis leaves the
    pooled ones broken), all within ``timeout_s``: a Redis that does not answer
    by then is unavailable for this request, and the ledger decides what that
    means (``usage.on_unavailable``).
    """

    def __init__(self, url: str, timeout_s: float, prefix: str):
        self._shown = redact_url(url)
        self._prefix = prefix
        self._timeout_s = timeout_s
        self._redis = redis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 1),
        )

    @property
    def where(self) -> str:
        return f"redis {self._shown}"

    async def charge(self, cells: Sequence[Cell]) -> list[Tally]:
        pipe = self._redis.pipeline(transaction=False)
        for cell in cells:
            key = cell.key(self._prefix)
            pipe.hincrby(key, "requests", 1)
            pipe.expireat(key, cell.expires_at)
            pipe.hmget(key, TOKEN_FIELDS)
        results = await self._execute(pipe)
        tallies = []
        for index in range(len(cells)):
            requests, _, tokens = results[3 * index : 3 * index + 3]
            tallies.append(Tally(int(requests) - 1, *(int(v or 0) for v in tokens)))
        return tallies

    async def refund(self, cells: Sequence[Cell]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for cell in cells:
            pipe.hincrby(cell.key(self._prefix), "requests", -1)
        await self._execute(pipe)

    async def add_tokens(self, cells: Sequence[Cell], tokens: Tokens) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for cell in cells:
            key = cell.key(self._prefix)
            for name, value in zip(TOKEN_FIELDS, tokens.fields(), strict=True):
                if value:
                    pipe.hincrby(key, name, value)
            pipe.expireat(key, cell.expires_at)
        await self._execute(pipe)

    async def ping(self) -> None:
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._redis.ping()
        except (redis.RedisError, OSError, TimeoutError) as exc:
            raise UsageUnavailable(self._failure(exc)) from exc

    async def close(self) -> None:
        await self._redis.aclose()

    async def _execute(self, pipe: redis.client.Pipeline) -> list[Any]:
        try:
            async with asyncio.timeout(self._timeout_s):
                return await pipe.execute()
        except (redis.RedisError, OSError, TimeoutError) as exc:
            raise UsageUnavailable(self._failure(exc)) from exc

    def _failure(self, exc: BaseException) -> str:
        if isinstance(exc, TimeoutError):
            reason = f"no answer within {self._timeout_s * 1000:.0f} ms"
        else:
            reason = str(exc) or type(exc).__name__
        return f"the usage counters ({self.where}) are unavailable: {reason}"
