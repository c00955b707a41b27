from __future__ import annotations

from pydantic import AnyHttpUrl

from gateway.config import Upstream
from gateway.upstream.routing import RouteTable


def upstream(name: str, *models: str) -> Upstream:
    return Upstream(name=name, url=AnyHttpUrl("http://127.0.0.1:1"), models=list(models))


def test_first_matching_route_wins() -> None:
    table = RouteTable((upstream("big", "gpt-4*"), upstream("rest", "*")))
    assert table.route("gpt-4o").name == "big"  # type: ignore[union-attr]
    assert table.route("llama").name == "rest"  # type: ignore[union-attr]


def test_unrouted_model() -> None:
    assert RouteTable((upstream("only", "demo-*"),)).route("other") is None


def test_no_model_takes_the_first_route() -> None:
    assert RouteTable((upstream("a", "x"), upstream("b", "*"))).route(None).name == "a"  # type: ignore[union-attr]
