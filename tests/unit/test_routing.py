from __future__ import annotations

from pydantic import AnyHttpUrl

from gateway.config import Upstream
from gateway.routing import RouteTable, classify_api, model_of


def upstream(name: str, *models: str) -> Upstream:
    return Upstream(name=name, url=AnyHttpUrl("http://127.0.0.1:1"), models=list(models))


def test_first_matching_route_wins() -> None:
    table = RouteTable((upstream("big", "gpt-4*"), upstream("rest", "*")))
    assert table.route("gpt-4o").name == "big"  # type: ignore[union-attr]
    assert table.route("llama").name == "rest"  # type: ignore[union-attr]


def test_unrouted_model() -> None:
    assert RouteTable((upstream("only", "demo-*"),)).route("other") is None


def test_listed_models_skip_patterns() -> None:
    table = RouteTable((upstream("a", "x", "y*"), upstream("b", "z", "x")))
    assert table.listed_models() == ["x", "z"]


def test_api_classification() -> None:
    assert classify_api("/v1/chat/completions") == "chat.completions"
    assert classify_api("/v1/models/demo") == "models"
    assert classify_api("/v1/files") == "other"


def test_model_from_body_or_path() -> None:
    assert model_of("/v1/chat/completions", {"model": "m"}) == "m"
    assert model_of("/v1/models/m2", None) == "m2"
    assert model_of("/v1/chat/completions", {"model": 3}) is None
