"""The request body's deadline: a client that sends its body slowly cannot hold a slot forever.

The whole body must arrive within ``limits.body_timeout_s`` of the moment the
gateway starts reading it; a client trickling one byte at a time never resets
the clock. The request path answers 408 (and closes the connection) on
BodyTimeout. Deadlines on the connection itself (request headers, keep-alive)
are in gateway/http_protocol.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator

from gateway.exceptions import BodyTimeout


async def read_within(chunks: AsyncIterable[bytes], timeout_s: float) -> AsyncIterator[bytes]:
    """Yield ``chunks`` as they come; raise BodyTimeout once ``timeout_s`` have passed in all."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    iterator = aiter(chunks)
    while True:
        if deadline <= loop.time():
            raise BodyTimeout(timeout_s)
        try:
            # A timer, not wait_for: wait_for runs each read in a task of its own.
            async with asyncio.timeout_at(deadline):
                chunk = await anext(iterator)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise BodyTimeout(timeout_s) from None
        yield chunk
