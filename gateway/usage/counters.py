"""Usage counters behind one protocol: in this process, or in Redis shared by replicas.

Each cell counts one subject (a caller's ``sub``, a group, or the anonymous
callers together) in one window occurrence: requests, prompt, completion and
total tokens, and how many requests had their tokens estimated. A cell expires
a little after its window ends, so nothing has to sweep Redis.

Charging a request is the hot path: one call increments the request count of
every cell and reads them all, atomically. In Redis that is one round trip: a
server-side script (EVALSHA) that runs HINCRBY, EXPIREAT and HMGET for each
cell, one command for the client to send and one reply to read, where a
pipeline of those commands cost the gateway's process about 40% more CPU
(bench/usage_bench.py). Several gateways then share one count, and no two
concurrent requests read the same value. Under load, the charges that arrive
while one script is in flight go together in the next (a group commit,
batching.py), and so do refunds and tokens: one command for many requests.
The keys of one request may sit on different hash slots: a standalone Redis or
Valkey (or a proxy in front of a cluster), not Redis Cluster itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from gateway.exceptions import UsageUnavailable
from gateway.redaction import redact_url
from gateway.usage.batching import GroupCommit
from gateway.usage.windows import Clock, Span

TOKEN_FIELDS = ("prompt", "completion", "total", "estimated")
"""The token fields of a cell, besides ``requests``."""
MAX_CONNECTIONS = 64
"""Connections to Redis per gateway process; one is held for one round trip only."""
EXPIRY_GRACE_S = 300
"""How long a cell outlives its window: tokens of a long answer still land in it."""
Result = TypeVar("Result")
Change = tuple[int, int, int, int, int]
"""A change of a cell's requests, prompt, completion, total and estimated counts."""
_REFUND: Change = (-1, 0, 0, 0, 0)


_CHARGE = """
local out = {}
for i, key in ipairs(KEYS) do
  out[#out + 1] = redis.call('HINCRBY', key, 'requests', 1)
  redis.call('EXPIREAT', key, ARGV[i])
  local tokens = redis.call('HMGET', key, 'prompt', 'completion', 'total', 'estimated')
  for j = 1, 4 do out[#out + 1] = tokens[j] end
end
return out
"""
"""KEYS: the cells (a key may come twice: two requests of one caller); ARGV: each
cell's expiry. For each cell: its requests (this one included), then its prompt,
completion, total and estimated counts (nil: none yet)."""

_ADJUST = """
local fields = {'requests', 'prompt', 'completion', 'total', 'estimated'}
for i, key in ipairs(KEYS) do
  local base = (i - 1) * 6
  for j = 1, 5 do
    local n = tonumber(ARGV[base + j])
    if n ~= 0 then redis.call('HINCRBY', key, fields[j], n) end
  end
  redis.call('EXPIREAT', key, ARGV[base + 6])
end
return 1
"""
"""KEYS: the cells; ARGV, six per cell: the change of its requests, prompt,
completion, total and estimated counts, then its expiry."""


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
        self.refund_now(cells)

    async def add_tokens(self, cells: Sequence[Cell], tokens: Tokens) -> None:
        self.add_tokens_now(cells, tokens)

    def refund_now(self, cells: Sequence[Cell]) -> None:
        """``refund`` without a coroutine: nothing in this process is waited for."""
        for cell in cells:
            counts = self._cells.get(cell)
            if counts is not None and counts[0] > 0:
                counts[0] -= 1

    def add_tokens_now(self, cells: Sequence[Cell], tokens: Tokens) -> None:
        """``add_tokens`` without a coroutine: nothing in this process is waited for."""
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
        # Requests wait for a free connection (within timeout_s) rather than fail:
        # a burst must not turn into refusals while Redis is healthy.
        pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=MAX_CONNECTIONS,
            timeout=timeout_s,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 1),
        )
        self._redis = redis.Redis.from_pool(pool)
        self._charge = self._redis.register_script(_CHARGE)
        self._adjust = self._redis.register_script(_ADJUST)
        self._charges = GroupCommit(self._charge_batch, self._abandoned_charge)
        self._adjustments = GroupCommit(self._adjust_batch)
        self._chores: set[asyncio.Task[None]] = set()

    @property
    def where(self) -> str:
        return f"redis {self._shown}"

    async def charge(self, cells: Sequence[Cell]) -> list[Tally]:
        return await self._within_timeout(self._charges.submit(tuple(cells)))

    async def refund(self, cells: Sequence[Cell]) -> None:
        await self._within_timeout(self._adjustments.submit((tuple(cells), _REFUND)))

    async def add_tokens(self, cells: Sequence[Cell], tokens: Tokens) -> None:
        change = (0, *tokens.fields())
        await self._within_timeout(self._adjustments.submit((tuple(cells), change)))

    async def ping(self) -> None:
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._redis.ping()
        except (redis.RedisError, OSError, TimeoutError) as exc:
            raise UsageUnavailable(self._failure(exc)) from exc

    async def close(self) -> None:
        if self._chores:
            await asyncio.wait(self._chores, timeout=self._timeout_s)
        await self._redis.aclose()

    async def _charge_batch(self, batch: list[tuple[Cell, ...]]) -> list[list[Tally]]:
        """One script for the cells of every request in ``batch``; their tallies, per request."""
        cells = [cell for request in batch for cell in request]
        keys = [cell.key(self._prefix) for cell in cells]
        flat = await self._execute(self._charge(keys=keys, args=[c.expires_at for c in cells]))
        tallies = [
            Tally(int(flat[i]) - 1, *(int(v or 0) for v in flat[i + 1 : i + 5]))
            for i in range(0, len(flat), 5)
        ]
        results, start = [], 0
        for request in batch:
            results.append(tallies[start : start + len(request)])
            start += len(request)
        return results

    async def _adjust_batch(self, batch: list[tuple[tuple[Cell, ...], Change]]) -> list[None]:
        """One script for every refund and every answer's tokens in ``batch``, summed per cell."""
        totals: dict[Cell, list[int]] = {}
        for cells, change in batch:
            for cell in cells:
                total = totals.setdefault(cell, [0, 0, 0, 0, 0])
                for index, value in enumerate(change):
                    total[index] += value
        args: list[int] = []
        for cell, total in totals.items():
            args += [*total, cell.expires_at]
        keys = [cell.key(self._prefix) for cell in totals]
        await self._execute(self._adjust(keys=keys, args=args))
        return [None] * len(batch)

    def _abandoned_charge(self, cells: tuple[Cell, ...]) -> None:
        """A charge whose request stopped waiting (and was refused): take it back."""
        task = asyncio.create_task(self._take_back(cells))
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)

    async def _take_back(self, cells: tuple[Cell, ...]) -> None:
        # Redis failing again leaves the request counted: a budget spent early, never one
        # extended, and the failure is already reported by the request that gave up.
        with contextlib.suppress(UsageUnavailable):
            await self._within_timeout(self._adjustments.submit((cells, _REFUND)))

    async def _within_timeout(self, waiting: Awaitable[Result]) -> Result:
        try:
            async with asyncio.timeout(self._timeout_s):
                return await waiting
        except TimeoutError as exc:
            raise UsageUnavailable(self._failure(exc)) from exc

    async def _execute(self, command: Awaitable[Any]) -> Any:
        try:
            async with asyncio.timeout(self._timeout_s):
                return await command
        except (redis.RedisError, OSError, TimeoutError) as exc:
            raise UsageUnavailable(self._failure(exc)) from exc

    def _failure(self, exc: BaseException) -> str:
        if isinstance(exc, TimeoutError):
            reason = f"no answer within {self._timeout_s * 1000:.0f} ms"
        else:
            reason = str(exc) or type(exc).__name__
        return f"the usage counters ({self.where}) are unavailable: {reason}"
