"""Routing by listener: a request goes to the app of the socket it arrived on, and only there."""

from __future__ import annotations

from starlette.types import Message, Receive, Scope, Send

from gateway.serving.server import ListenerRouter


class Recorder:
    def __init__(self, name: str, seen: list[tuple[str, str]]):
        self.name, self.seen = name, seen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.seen.append((self.name, scope["type"]))


class Sent(list[Message]):
    async def __call__(self, message: Message) -> None:
        self.append(message)


async def nothing() -> Message:
    return {"type": "http.disconnect"}


def router(seen: list[tuple[str, str]]) -> ListenerRouter:
    public, admin, bundle = (Recorder(n, seen) for n in ("public", "admin", "bundle"))
    return ListenerRouter(public, {8080: public, 9090: admin, 8282: bundle})


async def test_requests_go_by_local_port() -> None:
    seen: list[tuple[str, str]] = []
    route = router(seen)
    for host, port in [("10.0.0.5", 8080), ("127.0.0.1", 9090), ("::1", 8282)]:
        await route({"type": "http", "server": (host, port)}, nothing, Sent())
    assert seen == [("public", "http"), ("admin", "http"), ("bundle", "http")]


async def test_the_lifespan_runs_once_in_the_lifespan_app() -> None:
    seen: list[tuple[str, str]] = []
    await router(seen)({"type": "lifespan"}, nothing, Sent())
    assert seen == [("public", "lifespan")]


async def test_an_unknown_socket_gets_404() -> None:
    seen: list[tuple[str, str]] = []
    route, sent = router(seen), Sent()
    await route({"type": "http", "server": ("127.0.0.1", 1234)}, nothing, sent)
    await route({"type": "http", "server": None}, nothing, sent)
    assert seen == []
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [404, 404]
