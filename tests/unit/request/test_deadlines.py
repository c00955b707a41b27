"""The request body's deadline: for the whole body, however it is sliced."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from gateway.exceptions import BodyTimeout
from gateway.request.deadlines import read_within


async def chunks(count: int, every_s: float) -> AsyncIterator[bytes]:
    for index in range(count):
        await asyncio.sleep(every_s)
        yield b"%d" % index


async def test_a_body_in_time_is_read_whole() -> None:
    assert [c async for c in read_within(chunks(3, 0.01), 1.0)] == [b"0", b"1", b"2"]


async def test_a_stalled_body_times_out_at_the_deadline() -> None:
    started = time.monotonic()
    with pytest.raises(BodyTimeout, match=r"within 0\.2 s"):
        async for _ in read_within(chunks(1, 10.0), 0.2):
            pass
    assert time.monotonic() - started < 1.0


async def test_a_trickle_cannot_reset_the_clock() -> None:
    """Each chunk comes well within the deadline; all of them together do not."""
    received: list[bytes] = []
    started = time.monotonic()
    with pytest.raises(BodyTimeout):
        async for chunk in read_within(chunks(100, 0.05), 0.3):
            received.append(chunk)
    assert 0.25 <= time.monotonic() - started < 1.0
    assert 3 <= len(received) < 10
