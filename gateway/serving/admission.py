"""Admission control: a bound on the requests handled at once, with a short queue.

Past the bound, a request waits in a small FIFO queue for a slot; when the
queue is full, or the wait is over, it is shed at once with 503 and
``Retry-After``, before its body is read, its caller authenticated or policy
asked. Shedding early is what keeps an overloaded gateway answering: the
requests it does take keep their latency, and the rest learn at once to retry
(elsewhere, or later) instead of queueing without bound in memory and sockets.

503 rather than 429: the condition is the gateway's capacity, not something
this caller did (429 is what a per-caller rate limit in policy answers), and
OpenAI SDKs and load balancers retry a 503 on another attempt or replica.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.exceptions import Overloaded
from gateway.responses import error_for

RETRY_AFTER_S = 1
QUEUE_FULL = "queue_full"
QUEUE_TIMEOUT = "queue_timeout"


class AdmissionControl:
    """ASGI middleware: at most ``max_concurrent`` requests inside ``app``, ``max_queued`` waiting.

    ``on_shed(reason)`` is called for each request shed (``queue_full`` or ``queue_timeout``);
    ``shed_headers()`` gives the headers its answer carries besides ``Retry-After``.
    A slot freed by a finished request goes to the longest waiter, so the queue is fair.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_concurrent: int,
        max_queued: int,
        queue_timeout_s: float,
        on_shed: Callable[[str], None],
        shed_headers: Callable[[], dict[str, str]] = dict,
    ):
        if max_concurrent < 1 or max_queued < 0 or queue_timeout_s <= 0:
            raise ValueError("max_concurrent >= 1, max_queued >= 0 and queue_timeout_s > 0")
        self._app = app
        self._max_concurrent = max_concurrent
        self._max_queued = max_queued
        self._queue_timeout_s = queue_timeout_s
        self._on_shed = on_shed
        self._shed_headers = shed_headers
        self._in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def queued(self) -> int:
        return len(self._waiters)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        refused = await self._admit()
        if refused is not None:
            self._on_shed(refused)
            await _overloaded(self._shed_headers(), scope, receive, send)
            return
        try:
            await self._app(scope, receive, send)
        finally:
            self._release()

    async def _admit(self) -> str | None:
        """Take a slot, waiting in the queue if need be; the shedding reason if none is had."""
        if self._in_flight < self._max_concurrent and not self._waiters:
            self._in_flight += 1
            return None
        if len(self._waiters) >= self._max_queued:
            return QUEUE_FULL
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, self._queue_timeout_s)
        except TimeoutError:
            if not _holds_slot(waiter):  # else: handed a slot just as the wait ran out
                return QUEUE_TIMEOUT
        except BaseException:
            if _holds_slot(waiter):
                self._release()  # a slot was handed over just as this request was cancelled
            raise
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
        return None

    def _release(self) -> None:
        """Hand the slot to the longest waiter still waiting, else give it back."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._in_flight -= 1


def _holds_slot(waiter: asyncio.Future[None]) -> bool:
    return waiter.done() and not waiter.cancelled()


async def _overloaded(headers: dict[str, str], scope: Scope, receive: Receive, send: Send) -> None:
    response = error_for(
        Overloaded("the gateway is at capacity; retry after a short wait"),
        {**headers, "Retry-After": str(RETRY_AFTER_S)},
    )
    await response(scope, receive, send)


class LargeBodyGate:
    """At most ``limit`` requests with large bodies being parsed, judged and logged at once.

    OPA's work grows with its input (a 1 MiB body costs it 100 to 200 ms on two
    cores). A few large bodies judged at once would take every core from the
    small requests beside them, whose short policy budget would then run out:
    they would fail closed with OPA healthy; parsing and hashing them in worker
    threads would likewise starve the event loop of the interpreter lock. Large
    bodies take turns instead, and one that cannot get a turn within the queue
    timeout is shed (503) before any of that work starts.
    """

    def __init__(self, limit: int, threshold_bytes: int, timeout_s: float) -> None:
        self._slots = asyncio.Semaphore(limit)
        self._threshold_bytes = threshold_bytes
        self._timeout_s = timeout_s

    @contextlib.asynccontextmanager
    async def turn(self, body_bytes: int) -> AsyncIterator[None]:
        """Hold a turn for a body of ``body_bytes``; small ones need none."""
        if body_bytes <= self._threshold_bytes:
            yield
            return
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._slots.acquire()
        except TimeoutError:
            raise Overloaded(
                "the gateway is judging other large requests; retry after a short wait"
            ) from None
        try:
            yield
        finally:
            self._slots.release()
