"""Group commit: the first call goes at once, the ones that arrive meanwhile go together."""

from __future__ import annotations

import asyncio

import pytest

from gateway.usage.batching import GroupCommit


class Sender:
    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.fail = False

    async def __call__(self, batch: list[int]) -> list[int]:
        self.batches.append(batch)
        await self.release.wait()
        if self.fail:
            raise RuntimeError("down")
        return [item * 10 for item in batch]


async def test_calls_made_during_a_round_trip_share_the_next() -> None:
    sender = Sender()
    commit: GroupCommit[int, int] = GroupCommit(sender)
    first = asyncio.create_task(commit.submit(1))
    await asyncio.sleep(0)
    others = [asyncio.create_task(commit.submit(n)) for n in (2, 3, 4)]
    await asyncio.sleep(0)
    sender.release.set()
    assert await first == 10
    assert [await task for task in others] == [20, 30, 40]
    assert sender.batches == [[1], [2, 3, 4]]


async def test_a_failure_reaches_every_caller_of_the_batch_and_the_next_batch_is_sent() -> None:
    sender = Sender()
    sender.fail = True
    sender.release.set()
    commit: GroupCommit[int, int] = GroupCommit(sender)
    results = await asyncio.gather(commit.submit(1), commit.submit(2), return_exceptions=True)
    assert [str(r) for r in results] == ["down", "down"]
    sender.fail = False
    assert await commit.submit(3) == 30


async def test_a_caller_that_stops_waiting_is_told_of_when_its_item_was_sent() -> None:
    sender = Sender()
    abandoned: list[int] = []
    commit: GroupCommit[int, int] = GroupCommit(sender, abandoned.append)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await commit.submit(7)  # sent, then given up on
    not_sent = asyncio.create_task(commit.submit(8))
    await asyncio.sleep(0)
    not_sent.cancel()
    sender.release.set()
    assert await commit.submit(9) == 90
    assert abandoned == [7]
    assert [9] in sender.batches and not any(8 in batch for batch in sender.batches)
