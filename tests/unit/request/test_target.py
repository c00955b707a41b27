"""The canonical request target: refused when another server could read it differently."""

from __future__ import annotations

import pytest

from gateway.exceptions import InvalidTarget
from gateway.request.target import canonical_target, classify_api, model_in_path


@pytest.mark.parametrize(
    "raw_path",
    [
        b"/v1/models/../chat/completions",
        b"/v1/models/./x",
        b"/v1/models/..",
        b"/v1/models/...",
        b"/v1/models/%2e%2e/chat/completions",
        b"/v1/models/%2E%2E/chat/completions",
        b"/v1/models/.%2e/chat/completions",
        b"/v1/chat%2Fcompletions",
        b"/v1/chat%2fcompletions",
        b"/v1/chat%5Ccompletions",
        b"/v1/chat%25completions",
        b"/v1/chat\\completions",
        b"/v1//chat/completions",
        b"/v1/chat/completions/",
        b"/v1/",
        b"/v1",
        b"/v1/models/..;/chat/completions",
        b"/v1/chat/completions;x=1",
        b"/v1/chat/compl\x00etions",
        b"/v1/chat/compl\x7fetions",
        b"/v1/models/d\xc3\xa9mo",
        b"/v1/models/a b",
        b"/%761/chat/completions",
        b"/v1/models/a+b",
        b"http://evil/v1/chat/completions",
        b"/v1/" + b"a" * 3000,
    ],
)
def test_ambiguous_paths_are_refused(raw_path: bytes) -> None:
    with pytest.raises(InvalidTarget):
        canonical_target(raw_path, b"")


@pytest.mark.parametrize(
    "raw_query", [b"a=1&a=2", b"a=%00", b"a=b c", b"a=\xc3\xa9", b"a=%0d%0aX-Injected:1"]
)
def test_ambiguous_queries_are_refused(raw_query: bytes) -> None:
    with pytest.raises(InvalidTarget):
        canonical_target(b"/v1/models", raw_query)


def test_a_plain_target_is_kept_byte_for_byte() -> None:
    target = canonical_target(b"/v1/models/ft:gpt-4o:org::abc", b"limit=2&after=x%20y")
    assert target.path == "/v1/models/ft:gpt-4o:org::abc"
    assert target.path_and_query == "/v1/models/ft:gpt-4o:org::abc?limit=2&after=x%20y"
    assert target.query == {"limit": "2", "after": "x y"}


@pytest.mark.parametrize(
    ("method", "path", "api"),
    [
        ("POST", "/v1/chat/completions", "chat.completions"),
        ("POST", "/v1/completions", "completions"),
        ("POST", "/v1/embeddings", "embeddings"),
        ("POST", "/v1/responses", "responses"),
        ("GET", "/v1/models", "models"),
        ("GET", "/v1/models/demo-small", "models"),
        ("GET", "/v1/models/meta-llama/Llama-3.1-8B", "models"),
        ("DELETE", "/v1/models/demo-small", "other"),
        ("POST", "/v1/models/demo-small", "other"),
        ("POST", "/v1/models", "other"),
        ("GET", "/v1/chat/completions", "other"),
        ("GET", "/v1/responses/resp_1", "other"),
        ("POST", "/v1/responses/resp_1/cancel", "other"),
        ("POST", "/v1/files", "other"),
    ],
)
def test_api_comes_from_method_and_canonical_path(method: str, path: str, api: str) -> None:
    assert classify_api(method, path) == api


def test_model_in_path() -> None:
    assert model_in_path("/v1/models/m2") == "m2"
    assert model_in_path("/v1/models") is None
    assert model_in_path("/v1/chat/completions") is None


@pytest.mark.parametrize("path", ["/v1/models/-x", "/v1/models/" + "m" * 300])
def test_a_model_in_the_path_is_held_to_the_model_name_rule(path: str) -> None:
    with pytest.raises(InvalidTarget, match="not a model name"):
        model_in_path(path)
