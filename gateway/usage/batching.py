"""Group commit: calls that arrive while a round trip is in flight go together in the next.

Under load many requests need Redis at the same moment. One command each
costs the gateway's CPU per command (building, sending, parsing) and queues
the requests for connections; a group commit sends the first call at once (no
wait when the gateway is idle) and gathers the calls that arrive meanwhile
into one command, sent as soon as the previous one is answered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class GroupCommit(Generic[Item, Result]):
    """Sends items in batches, one batch in flight at a time.

    ``send`` takes a batch and returns one result per item, in order.
    ``abandoned`` is told of an item whose caller stopped waiting (a timeout)
    after it was sent: its effect happened, and may need undoing.
    """

    def __init__(
        self,
        send: Callable[[list[Item]], Awaitable[list[Result]]],
        abandoned: Callable[[Item], None] | None = None,
    ):
        self._send = send
        self._abandoned = abandoned
        self._waiting: list[tuple[Item, asyncio.Future[Result]]] = []
        self._sender: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_waiting())
        return await future

    async def _send_waiting(self) -> None:
        try:
            while self._waiting:
                batch = [(item, f) for item, f in self._waiting if not f.cancelled()]
                self._waiting = []
                if not batch:
                    continue
                try:
                    results = await self._send([item for item, _ in batch])
                except Exception as exc:  # handed to every caller of the batch
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (item, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
                    elif self._abandoned is not None:
                        self._abandoned(item)
        finally:
            self._sender = None
