"""A JWKS endpoint on loopback, in its own thread, whose answer each test chooses."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from aiohttp import web

Respond = Callable[[], Awaitable[web.StreamResponse]]


class JwksServer:
    """A JWKS endpoint on loopback, served from its own thread, whose answer a test chooses.

    Its own event loop keeps it answering while a test blocks (a synchronous HTTP
    client, a gateway in another process) or awaits on another loop.
    """

    def __init__(self, document: dict[str, Any]) -> None:
        self.respond: Respond = serve_json(document)
        self.hits = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._runner: web.AppRunner | None = None
        self.port = self._call(self._start())
        self.url = f"http://127.0.0.1:{self.port}/jwks"

    def _app(self) -> web.Application:
        async def handle(request: web.Request) -> web.StreamResponse:
            self.hits += 1
            return await self.respond()

        app = web.Application()
        app.router.add_get("/jwks", handle)
        return app

    async def _start(self, port: int = 0) -> int:
        self._runner = web.AppRunner(self._app(), shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        bound: int = self._runner.addresses[0][1]
        return bound

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _call(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    def go_down(self) -> None:
        """Stop listening: fetches are refused until :meth:`come_back`."""
        self._call(self._stop())

    def come_back(self) -> None:
        self._call(self._start(self.port))

    async def _cancel_handlers(self) -> None:
        """End handlers still running (a slow answer nobody waits for any more)."""
        handlers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)

    def close(self) -> None:
        self._call(self._stop())
        self._call(self._cancel_handlers())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


def serve_json(document: Any) -> Respond:
    async def respond() -> web.StreamResponse:
        return web.json_response(document)

    return respond


def serve_slowly(document: Any, delay_s: float) -> Respond:
    async def respond() -> web.StreamResponse:
        await asyncio.sleep(delay_s)
        return web.json_response(document)

    return respond


def serve_bytes(body: bytes, status: int = 200, **headers: str) -> Respond:
    async def respond() -> web.StreamResponse:
        return web.Response(body=body, status=status, headers=headers)

    return respond


def redirect_to(url: str) -> Respond:
    async def respond() -> web.StreamResponse:
        return web.Response(status=302, headers={"Location": url})

    return respond
