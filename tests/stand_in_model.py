"""The integration tests' upstream: the demo's stand-in model, with faults and counters.

The quickstart's model (:mod:`demo.model`) only answers (with ``usage``, and in
streams asked with ``stream_options.include_usage`` a last chunk with
``"choices": []`` and the usage, as OpenAI does); the tests also need it to
fail on demand and to say what reached it. Asked for per request, with headers:

    X-Demo-Fault: status-500   answer 500 without reaching the model
    X-Demo-Fault: slow         the answer starts after X-Demo-Delay-Ms
    X-Demo-Fault: cut          a streamed answer breaks off after its first events
    X-Demo-Delay-Ms: N         N ms between the events of a streamed answer (default 20)

``GET /_demo/stats`` counts the requests that reached it, the streams open and
the streams that ended early (the caller went away, or a cut).

    python -m tests.stand_in_model --port 9000
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass

import uvicorn
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from demo.model import TOKEN_DELAY_S, create_demo_app

CUT_AFTER_EVENTS = 3


class CutStream(Exception):
    """Raised while streaming, to break the connection mid-answer."""


@dataclass
class _Response:
    streamed: bool = False
    events: int = 0
    finished: bool = False


class FaultyModel:
    """ASGI middleware around the stand-in model: faults on request, and counters."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.requests = 0
        self.streams_open = 0
        self.streams_closed_early = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] == "/_demo/stats":
            await JSONResponse(self.stats())(scope, receive, send)
            return
        headers = Headers(scope=scope)
        fault = headers.get("x-demo-fault", "")
        delay_s = int(headers.get("x-demo-delay-ms") or 0) / 1000
        if scope["method"] == "POST":
            self.requests += 1
        if fault == "slow":
            await asyncio.sleep(delay_s)
        if fault == "status-500":
            failure = {"error": {"message": "injected failure", "type": "server_error"}}
            await JSONResponse(failure, 500)(scope, receive, send)
            return
        response = _Response()

        async def paced(message: Message) -> None:
            if message["type"] == "http.response.start":
                content_type = Headers(raw=message["headers"]).get("content-type", "")
                response.streamed = content_type.startswith("text/event-stream")
                if response.streamed:
                    self.streams_open += 1
            elif message["type"] == "http.response.body" and response.streamed:
                if not message.get("more_body", False):
                    response.finished = True
                else:
                    response.events += 1
                    if fault == "cut" and response.events > CUT_AFTER_EVENTS:
                        raise CutStream("injected cut")
                    if response.events > 1:
                        await asyncio.sleep(delay_s or TOKEN_DELAY_S)
            await send(message)

        try:
            await self.app(scope, receive, paced)
        finally:
            if response.streamed:
                self.streams_open -= 1
                if not response.finished:
                    self.streams_closed_early += 1

    def stats(self) -> dict[str, int]:
        return {
            "requests": self.requests,
            "streams_open": self.streams_open,
            "streams_closed_early": self.streams_closed_early,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    app = FaultyModel(create_demo_app(token_delay_s=0))
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
