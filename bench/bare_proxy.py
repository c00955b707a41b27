"""A bare pass-through reverse proxy: the floor any Starlette + aiohttp proxy pays.

    .venv/bin/python bench/bare_proxy.py --port 9100 --upstream http://127.0.0.1:9000

It is the gateway's request path with everything Agora adds taken out: no
authentication, no policy, no decision log, no metrics. It reads the request
body whole (as the gateway must, to judge it), forwards it with one pooled
aiohttp session, and streams the response back chunk by chunk. It runs on the
same stack as the gateway (uvicorn with uvloop and httptools, one worker, no
access log), so the gap between this and the gateway in bench/proxy_overhead.py
is what Agora's own work costs. A benchmark fixture, not a product.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator

import aiohttp
import uvicorn
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from gateway.upstream.pool import HOP_BY_HOP

_NOT_FORWARDED = HOP_BY_HOP | {"host", "content-length"}
_NOT_RETURNED = HOP_BY_HOP | {"server", "date"}


def create_app(upstream: str, max_connections: int = 256) -> Starlette:
    """A proxy app that forwards everything under ``/v1/`` to ``upstream``."""
    state: dict[str, aiohttp.ClientSession] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=max_connections)
        session = aiohttp.ClientSession(
            base_url=upstream.rstrip("/") + "/",
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=2, sock_read=120),
            auto_decompress=False,
        )
        state["session"] = session
        try:
            yield
        finally:
            await session.close()

    async def forward(request: Request) -> Response:
        body = await request.body()
        headers = [(n, v) for n, v in request.headers.items() if n not in _NOT_FORWARDED]
        path = request.url.path.lstrip("/")
        if request.url.query:
            path += "?" + request.url.query
        try:
            upstream_response = await state["session"].request(
                request.method,
                path,
                headers=headers,
                data=body or None,
                allow_redirects=False,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            return Response(f"upstream error: {exc}", status_code=502)
        response_headers = {
            n: v for n, v in upstream_response.headers.items() if n.lower() not in _NOT_RETURNED
        }
        return StreamingResponse(
            upstream_response.content.iter_any(),
            status_code=upstream_response.status,
            headers=response_headers,
            background=BackgroundTask(upstream_response.release),
        )

    return Starlette(
        routes=[
            Route("/v1/{path:path}", forward, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
        ],
        lifespan=lifespan,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="base URL, e.g. http://127.0.0.1:9000")
    args = parser.parse_args()
    uvicorn.run(
        create_app(args.upstream),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
