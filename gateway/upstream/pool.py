"""Forwarding to model upstreams with aiohttp: pooled, streamed, bounded by timeouts.

aiohttp rather than httpx: on a 2-core machine of this project's kind, a bare
pass-through proxy was measured at about 5,600 req/s with aiohttp against about
600 with httpx's default transport (docs/architecture.md).

The request body is read whole (within ``limits.max_body_bytes``) before anything
is forwarded, because policy must judge all of it first. The response body is
streamed chunk by chunk as the upstream sends it; Server-Sent Events are never
buffered.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import anyio
from multidict import CIMultiDict
from starlette.types import Receive, Scope, Send
from yarl import URL

from gateway.config import Upstream
from gateway.exceptions import UpstreamError, UpstreamTimeout

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Never sent upstream: the caller's credentials are for the gateway; aiohttp
# recomputes framing and Host; the gateway sets the content type of what it
# judged and the forwarding headers itself (so no caller's X-Forwarded-* at
# all: Prefix, Host, Port... tell an upstream framework where it is mounted);
# method or path overrides would let an upstream framework act on another
# method or target than the one policy judged; and the body is sent whole, so
# there is no 100-continue to expect (aiohttp would hold the body back for one).
_NOT_FORWARDED = HOP_BY_HOP | {
    "host", "content-length", "content-type", "expect", "authorization", "cookie",
    "forwarded", "x-real-ip",
    "x-http-method-override", "x-http-method", "x-method-override",
    "x-original-url", "x-rewrite-url", "x-original-uri", "x-envoy-original-path",
}  # fmt: skip
# Forwarding claims are the gateway's to make; X-Agora-* are the gateway's own headers.
_NOT_FORWARDED_PREFIXES = ("x-forwarded-", "x-agora-")
# Headers that pick the billed account: with the operator's key, only the operator's.
_ACCOUNT_HEADERS = frozenset({"openai-organization", "openai-project"})

# uvicorn writes its own; forwarding the upstream's would send them twice.
_SET_BY_SERVER = frozenset({"server", "date"})


def forwardable_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Drop hop-by-hop headers, including any the ``Connection`` header names."""
    pairs = list(headers)
    named = {
        token.strip().lower()
        for name, value in pairs
        if name.lower() == "connection"
        for token in value.split(",")
    }
    return [(n, v) for n, v in pairs if n.lower() not in HOP_BY_HOP and n.lower() not in named]


@dataclass(frozen=True)
class StreamOutcome:
    """How a forwarded response ended, for the decision log and metrics."""

    status: int
    completed: bool
    reason: str
    """"complete", "client_disconnected", "upstream_cut", "deadline", or a filter's StreamCut."""
    upstream_us: int

    @classmethod
    def ended(cls, started_ns: int, status: int, reason: str) -> StreamOutcome:
        """The outcome of a response that ends now, for ``reason``, forwarded at ``started_ns``."""
        elapsed_us = (time.perf_counter_ns() - started_ns) // 1000
        return cls(status, reason == "complete", reason, elapsed_us)


OnComplete = Callable[[StreamOutcome], Awaitable[None]]


class BodyFilter(Protocol):
    """What stands between the upstream's body and the caller (gateway.answers builds them).

    Each call returns the pieces to send now, each as its own write, so that
    the upstream's chunk boundaries are kept; a piece may be held back and
    returned by a later call, never merged with another. A filter ends the
    response early by raising :class:`StreamCut`.
    """

    async def feed(self, chunk: bytes) -> Sequence[bytes]: ...

    async def end(self) -> Sequence[bytes]:
        """At the end of the upstream's body: what is still to be sent."""
        ...


class StreamCut(Exception):
    """Raised by a filter: send ``last``, end the response there and close the upstream."""

    def __init__(self, reason: str, last: bytes):
        super().__init__(reason)
        self.reason = reason
        self.last = last


@dataclass(frozen=True)
class Client:
    """Who connected to the gateway, as the upstream is told in ``X-Forwarded-*``."""

    host: str
    scheme: str


class UpstreamPool:
    """One pooled aiohttp session per upstream, created at start and closed at stop."""

    def __init__(self, upstreams: Iterable[Upstream], environ: Mapping[str, str]):
        self._upstreams = {u.name: u for u in upstreams}
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self._api_keys = {
            u.name: environ.get(u.api_key_env, "")
            for u in self._upstreams.values()
            if u.api_key_env
        }

    async def start(self) -> None:
        for upstream in self._upstreams.values():
            self._sessions[upstream.name] = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=upstream.max_connections, ttl_dns_cache=60, enable_cleanup_closed=True
                ),
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=upstream.timeout.connect,
                    sock_connect=upstream.timeout.connect,
                    sock_read=upstream.timeout.read,
                ),
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
            )

    async def stop(self) -> None:
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()

    async def open(
        self,
        upstream: Upstream,
        method: str,
        path_and_query: str,
        headers: Iterable[tuple[str, str]],
        body: bytes,
        *,
        content_type: str | None = None,
        client: Client | None = None,
    ) -> aiohttp.ClientResponse:
        """Send the request and return once the upstream's status and headers arrive.

        ``path_and_query`` is the canonical target (gateway.request.target): it is appended
        to the upstream's base URL as it is, never joined or re-resolved.
        """
        outgoing = CIMultiDict(
            (n, v)
            for n, v in forwardable_headers(headers)
            if n.lower() not in _NOT_FORWARDED and not n.lower().startswith(_NOT_FORWARDED_PREFIXES)
        )
        if content_type is not None:
            outgoing["Content-Type"] = content_type
        if client is not None:
            outgoing["X-Forwarded-For"] = client.host
            outgoing["X-Forwarded-Proto"] = client.scheme
        api_key = self._api_keys.get(upstream.name)
        if api_key:
            outgoing["Authorization"] = f"Bearer {api_key}"
            for name in _ACCOUNT_HEADERS:
                outgoing.popall(name, None)
            if upstream.organization:
                outgoing["OpenAI-Organization"] = upstream.organization
            if upstream.project:
                outgoing["OpenAI-Project"] = upstream.project
        url = URL(str(upstream.url).rstrip("/") + path_and_query, encoded=True)
        try:
            return await self._sessions[upstream.name].request(
                method,
                url,
                headers=outgoing,
                data=body if body else None,
                allow_redirects=False,
            )
        except TimeoutError as exc:
            raise UpstreamTimeout(f"upstream {upstream.name} did not answer in time") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"upstream {upstream.name} is unreachable: {_brief(exc)}") from exc

    async def get_json(self, upstream: Upstream, path: str) -> Any:
        """A small JSON GET (used to list an upstream's models)."""
        response = await self.open(upstream, "GET", path, [("accept", "application/json")], b"")
        async with response:
            if response.status != 200:
                raise UpstreamError(f"upstream {upstream.name} answered {response.status}")
            try:
                return await response.json(content_type=None)
            except (ValueError, aiohttp.ClientError) as exc:
                raise UpstreamError(f"upstream {upstream.name} sent invalid JSON") from exc


def _brief(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def relayed_headers(
    upstream: aiohttp.ClientResponse, extra_headers: Mapping[str, str]
) -> list[tuple[bytes, bytes]]:
    """The upstream's headers as the caller gets them, with the gateway's own added.

    The gateway's own headers (X-Agora-*) are its word alone: an upstream's
    copy would reach the client first and could name another decision or policy.
    """
    own = {name.lower() for name in extra_headers}
    headers = [
        (n, v)
        for n, v in forwardable_headers(upstream.headers.items())
        if n.lower() not in _SET_BY_SERVER and n.lower() not in own
    ]
    headers.extend(extra_headers.items())
    return [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in headers]


class ProxyResponse:
    """An ASGI response that relays an upstream response chunk by chunk.

    It watches for the client going away and then closes the upstream stream at
    once. If the upstream breaks mid-stream, the response is left incomplete so
    that the client sees a truncated response, never a falsely complete one.

    With a ``body_filter`` (response policy, metering), every chunk goes
    through it and the caller gets what it returns; a filter that cuts the
    stream (:class:`StreamCut`) has its last piece sent, the response ended
    and the upstream closed. Without one, chunks are relayed as they come.
    """

    def __init__(
        self,
        upstream: aiohttp.ClientResponse,
        extra_headers: Mapping[str, str],
        started_ns: int,
        on_complete: OnComplete,
        total_s: float,
        body_filter: BodyFilter | None = None,
    ):
        self._upstream = upstream
        self._started_ns = started_ns
        self._on_complete = on_complete
        self._deadline_s = started_ns / 1e9 + total_s
        self._filter = body_filter
        self._raw_headers = relayed_headers(upstream, extra_headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        reason = "client_disconnected"  # unless the relay ends on its own
        try:
            async with anyio.create_task_group() as tasks:

                async def watch_disconnect() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    tasks.cancel_scope.cancel()

                tasks.start_soon(watch_disconnect)
                # A disconnect seen after the relay ended (uvicorn reports one once the
                # response is complete) must not turn a complete response into a failed one.
                reason = await self._relay(send)
                tasks.cancel_scope.cancel()
        except OSError:
            reason = "client_disconnected"
        finally:
            if reason == "complete":
                self._upstream.release()
            else:
                self._upstream.close()
            outcome = StreamOutcome.ended(self._started_ns, self._upstream.status, reason)
            with anyio.CancelScope(shield=True):
                await self._on_complete(outcome)

    async def _relay(self, send: Send) -> str:
        await send(
            {
                "type": "http.response.start",
                "status": self._upstream.status,
                "headers": self._raw_headers,
            }
        )
        remaining_s = self._deadline_s - time.perf_counter_ns() / 1e9
        body_filter = self._filter
        try:
            with anyio.fail_after(max(remaining_s, 0)):
                if body_filter is None:
                    async for chunk in self._upstream.content.iter_any():
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                else:
                    async for chunk in self._upstream.content.iter_any():
                        await _send_pieces(send, await body_filter.feed(chunk))
                    await _send_pieces(send, await body_filter.end())
        except aiohttp.ClientError:  # a break, or no chunk within the idle timeout (read)
            return "upstream_cut"
        except TimeoutError:  # the whole response outlasted timeout.total
            return "deadline"
        except StreamCut as cut:
            await send({"type": "http.response.body", "body": cut.last, "more_body": False})
            return cut.reason
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return "complete"


async def _send_pieces(send: Send, pieces: Sequence[bytes]) -> None:
    for piece in pieces:
        if piece:
            await send({"type": "http.response.body", "body": piece, "more_body": True})
