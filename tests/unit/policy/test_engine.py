from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from aiohttp import web
from starlette.applications import Starlette
from starlette.routing import Route

from gateway.auth import ANONYMOUS
from gateway.config import Settings
from gateway.decisionlog import canonical_json, input_sha256
from gateway.endpoints import readyz
from gateway.exceptions import PolicyUnavailable
from gateway.lifecycle import State
from gateway.pinning.bundle import Bundle
from gateway.pinning.store import PolicyStore
from gateway.policy.encoded import INLINE_BYTES, EncodedInput
from gateway.policy.engine import PolicyEngine
from gateway.policy.input import RequestFacts, build_input

FACTS = RequestFacts(
    api="chat.completions",
    model="demo-small",
    stream=False,
    body={"model": "demo-small"},
    method="POST",
    path="/v1/chat/completions",
    query={},
    headers={"content-type": "application/json"},
    upstream="demo",
)


def bundle(rule: str) -> Bundle:
    return Bundle({".manifest": b"{}", "agora/main.rego": rule.encode()}, "test")


def answer(result: Any, *revisions: str, handled_ms: float = 0.5) -> dict[str, Any]:
    """A Data API answer with ``provenance=true&metrics=true``, as OPA writes it."""
    bundles = {f"bundle{i}": {"revision": revision} for i, revision in enumerate(revisions)}
    return {
        "result": result,
        "provenance": {"version": "1.22.2", "build_commit": "x", "bundles": bundles},
        "metrics": {"timer_server_handler_ns": int(handled_ms * 1e6)},
    }


class FakeOpa:
    """A loopback HTTP server speaking OPA's Data API, answering from a script."""

    def __init__(self) -> None:
        self.answers: list[Any] = []
        self.asked: list[int | None] = []
        self.bodies: list[bytes] = []

    async def data(self, request: web.Request) -> web.Response:
        assert request.query.get("provenance") == "true"
        assert request.query.get("metrics") == "true"
        self.bodies.append(await request.read())
        document = (await request.json())["input"]
        self.asked.append((document.get("policy") or {}).get("version"))
        return web.json_response(self.answers.pop(0))


@pytest.fixture
async def opa() -> AsyncIterator[tuple[FakeOpa, str]]:
    fake = FakeOpa()
    app = web.Application()
    app.router.add_post("/v1/data/{path:.*}", fake.data)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield fake, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def engine_for(
    opa: tuple[FakeOpa, str],
) -> AsyncIterator[Callable[..., Awaitable[tuple[PolicyEngine, FakeOpa]]]]:
    fake, url = opa
    engines: list[PolicyEngine] = []

    async def make(
        store: PolicyStore, *answers: Any, overlap_ms: int = 2000
    ) -> tuple[PolicyEngine, FakeOpa]:
        engine = PolicyEngine(url, "agora/main", 1000, store, overlap_ms)
        await engine.start()
        engines.append(engine)
        fake.answers.extend(answers)
        return engine, fake

    yield make
    for engine in engines:
        await engine.stop()


def two_versions() -> tuple[PolicyStore, str, str]:
    store = PolicyStore()
    v1 = store.activate(bundle("allow := true"), 1, None).revision
    v2 = store.activate(bundle("allow := false"), 2, None).revision
    return store, v1, v2


EngineFor = Callable[..., Awaitable[tuple[PolicyEngine, FakeOpa]]]


async def test_a_decision_belongs_wholly_to_one_version_during_a_switch(
    engine_for: EngineFor,
) -> None:
    store, v1, v2 = two_versions()
    # The store is on v2 before OPA; OPA switches between the first and second question.
    engine, opa = await engine_for(
        store,
        answer({"allow": True}, v1),
        answer({"allow": False}, v2),
        answer({"allow": False}, v2),
    )
    decision, document = await engine.decide(FACTS, ANONYMOUS)
    assert opa.asked == [2, 1, 2]
    assert decision.version.version == 2 and document.document["policy"]["version"] == 2
    assert decision.allow is False


async def test_a_small_input_is_encoded_once_for_opa_and_the_log(engine_for: EngineFor) -> None:
    store, _, v2 = two_versions()
    engine, opa = await engine_for(
        store, answer({"allow": False}, v2), answer({"allow": False}, v2)
    )
    _, small = await engine.decide(FACTS, ANONYMOUS, body_bytes=INLINE_BYTES)
    assert small.sha256() == input_sha256(small.document)
    assert opa.bodies[0] == b'{"input":' + canonical_json(small.document) + b"}"
    _, large = await engine.decide(FACTS, ANONYMOUS, body_bytes=INLINE_BYTES + 1)
    assert large.canonical is None  # the log hashes it, in a worker thread when large
    assert json.loads(opa.bodies[1]) == {"input": large.document}


async def test_the_superseded_version_judges_within_the_overlap(engine_for: EngineFor) -> None:
    store, v1, _ = two_versions()
    # OPA has not switched yet: asked as v2, it answers from v1; asked again as v1, v1 judges.
    engine, opa = await engine_for(
        store, answer({"allow": True}, v1), answer({"allow": True}, v1), overlap_ms=60_000
    )
    decision, document = await engine.decide(FACTS, ANONYMOUS)
    assert opa.asked == [2, 1]
    assert decision.version.version == 1 and document.document["policy"]["version"] == 1
    assert decision.allow is True


async def test_the_superseded_version_fails_closed_after_the_overlap(
    engine_for: EngineFor,
) -> None:
    store, v1, _ = two_versions()
    engine, opa = await engine_for(store, answer({"allow": True}, v1), overlap_ms=50)
    await asyncio.sleep(0.1)
    with pytest.raises(PolicyUnavailable, match="superseded version 1; version 2 is in force"):
        await engine.decide(FACTS, ANONYMOUS)
    assert opa.asked == [2]


async def test_only_the_version_just_superseded_overlaps(engine_for: EngineFor) -> None:
    store, v1, _ = two_versions()
    store.activate(bundle("allow := input.x"), 3, None)
    engine, _ = await engine_for(store, answer({"allow": True}, v1), overlap_ms=60_000)
    with pytest.raises(PolicyUnavailable, match="superseded version 1; version 3 is in force"):
        await engine.decide(FACTS, ANONYMOUS)


@pytest.mark.parametrize(
    "response",
    [
        pytest.param(answer({"allow": True}, "v9+sha256:forged"), id="unknown-revision"),
        pytest.param(
            {"result": {"allow": True}, "metrics": {"timer_server_handler_ns": 1}},
            id="no-provenance",
        ),
        pytest.param(answer({"allow": True}), id="no-bundle"),
        pytest.param(answer({"allow": True}, "v2+sha256:x", "v2+sha256:x"), id="two-bundles"),
        pytest.param(
            {
                "result": {"allow": True},
                "provenance": {"bundles": {"agora": {"revision": 2}}},
                "metrics": {"timer_server_handler_ns": 1},
            },
            id="revision-not-a-string",
        ),
    ],
)
async def test_an_answer_without_one_verified_revision_fails_closed(
    engine_for: EngineFor, response: dict[str, Any]
) -> None:
    store, _, _ = two_versions()
    engine, _ = await engine_for(store, response)
    with pytest.raises(PolicyUnavailable, match="unverified"):
        await engine.decide(FACTS, ANONYMOUS)


async def test_the_budget_is_what_opa_took_not_the_gateways_own_wait(
    engine_for: EngineFor,
) -> None:
    store, _, v2 = two_versions()
    slow = answer({"allow": True, "reasons": []}, v2, handled_ms=1500)
    engine, _ = await engine_for(store, slow)
    with pytest.raises(PolicyUnavailable, match="OPA took 1500 ms to decide, over its budget"):
        await engine.decide(FACTS, ANONYMOUS)
    unmeasured = {k: v for k, v in answer({"allow": True}, v2).items() if k != "metrics"}
    engine, _ = await engine_for(store, unmeasured)
    with pytest.raises(PolicyUnavailable, match="OPA took an unknown time"):
        await engine.decide(FACTS, ANONYMOUS)


async def test_an_answer_that_is_not_an_object_fails_closed(engine_for: EngineFor) -> None:
    store, _, _ = two_versions()
    engine, _ = await engine_for(store, [1, 2])
    with pytest.raises(PolicyUnavailable, match="not a JSON object"):
        await engine.decide(FACTS, ANONYMOUS)


async def test_no_decision_fails_closed_and_a_malformed_one_denies(engine_for: EngineFor) -> None:
    store, _, v2 = two_versions()
    engine, _ = await engine_for(store, answer(None, v2), answer({"allow": "yes"}, v2))
    with pytest.raises(PolicyUnavailable, match="no decision"):
        await engine.decide(FACTS, ANONYMOUS)
    decision, _ = await engine.decide(FACTS, ANONYMOUS)
    assert decision.allow is False and "malformed" in decision.reasons[0]


async def test_a_deny_without_reasons_still_gives_one(engine_for: EngineFor) -> None:
    store, _, v2 = two_versions()
    engine, _ = await engine_for(store, answer({"allow": False}, v2))
    decision, _ = await engine.decide(FACTS, ANONYMOUS)
    assert decision.reasons == ["denied by policy"]


async def test_no_active_version_fails_closed(engine_for: EngineFor) -> None:
    engine, _ = await engine_for(PolicyStore())
    with pytest.raises(PolicyUnavailable, match="no verified policy"):
        await engine.decide(FACTS, ANONYMOUS)


async def test_opa_unreachable_fails_closed() -> None:
    store, _, _ = two_versions()
    engine = PolicyEngine("http://127.0.0.1:9", "agora/main", 200, store, 2000)
    await engine.start()
    try:
        with pytest.raises(PolicyUnavailable, match="unreachable"):
            await engine.decide(FACTS, ANONYMOUS)
    finally:
        await engine.stop()


async def readiness(engine: PolicyEngine, store: PolicyStore, overlap_ms: int) -> httpx.Response:
    """``GET /readyz`` of a gateway made of this store and engine (no other component)."""
    app = Starlette(routes=[Route("/readyz", readyz)])
    app.state.gateway = SimpleNamespace(
        store=store,
        engine=engine,
        workers=(
            SimpleNamespace(
                name="decision_log", gates_readiness=True, state=State.OK, detail="writing"
            ),
        ),
        watcher=None,
        settings=Settings.model_validate(
            {"auth": {"required": False}, "policy": {"switch_overlap_ms": overlap_ms}}
        ),
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        return await client.get("/readyz")


async def test_readiness_says_when_opa_keeps_a_superseded_version(engine_for: EngineFor) -> None:
    store, v1, v2 = two_versions()
    engine, _ = await engine_for(store, answer(None, v1), answer(None, v1), answer(None, v2))
    switching = await readiness(engine, store, overlap_ms=60_000)
    assert switching.status_code == 200
    assert switching.json()["switching"].startswith(
        "OPA still enforces version 1; version 2 not activated by OPA for"
    )
    stuck = await readiness(engine, store, overlap_ms=0)
    assert stuck.status_code == 503
    assert stuck.json()["opa_enforces"] == 1
    assert stuck.json()["reasons"][0].startswith("OPA still enforces version 1; version 2 not")
    caught_up = await readiness(engine, store, overlap_ms=0)
    assert caught_up.status_code == 200 and caught_up.json()["opa_enforces"] == 2


def test_input_document_shape() -> None:
    store, _, _ = two_versions()
    assert store.active is not None
    document = build_input(FACTS, ANONYMOUS, store.active)
    assert set(document) == {
        "api", "model", "stream", "body", "texts", "request", "caller", "upstream", "policy",
        "time",
    }  # fmt: skip
    assert document["caller"] == {"authenticated": False, "sub": None, "iss": None, "claims": {}}
    assert document["policy"] == {"version": 2, "digest": store.active.digest}
    assert document["time"].endswith("Z")


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 11, 28, 9, 5, 3, tzinfo=UTC),
        datetime(2026, 1, 2, 3, 4, 5, 999_999, tzinfo=UTC),
        datetime(2026, 6, 1, 14, 0, 0, 7),
    ],
)
def test_input_time_reads_as_strftime_wrote_it(moment: datetime) -> None:
    store, _, _ = two_versions()
    assert store.active is not None
    document = build_input(FACTS, ANONYMOUS, store.active, now=moment)
    assert document["time"] == moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def absent(*revisions: str) -> dict[str, Any]:
    """A Data API answer for a path the bundle does not define: no ``result``."""
    document = answer(None, *revisions)
    del document["result"]
    return document


async def test_whether_a_version_judges_answers_is_asked_once(engine_for: EngineFor) -> None:
    store, _, v2 = two_versions()
    engine, opa = await engine_for(store, answer({}, v2))
    version = store.active
    assert version is not None
    assert await engine.judges_answers(version)
    assert await engine.judges_answers(version)  # remembered: no second question
    assert opa.answers == [] and len(opa.asked) == 1


async def test_a_bundle_without_the_response_path_judges_no_answer(engine_for: EngineFor) -> None:
    store, _, v2 = two_versions()
    engine, _ = await engine_for(store, absent(v2))
    assert store.active is not None
    assert not await engine.judges_answers(store.active)


async def test_only_the_version_itself_says_whether_it_judges_answers(
    engine_for: EngineFor,
) -> None:
    store, v1, v2 = two_versions()
    # OPA still enforces v1 (without response rules), then v2 (with them).
    engine, opa = await engine_for(store, absent(v1), answer({"allow": True}, v2))
    assert store.active is not None
    assert await engine.judges_answers(store.active)
    assert len(opa.asked) == 2


async def test_an_answer_decision_from_an_unverified_revision_fails_closed(
    engine_for: EngineFor,
) -> None:
    store, _, v2 = two_versions()
    engine, _ = await engine_for(
        store, answer({"allow": False, "reasons": ["leak"]}, v2), answer({"allow": True}, "x")
    )
    denied = await engine.decide_answer(EncodedInput.of({"response": {"text": "k"}}))
    assert (denied.allow, denied.reasons, denied.version.version) == (False, ["leak"], 2)
    with pytest.raises(PolicyUnavailable, match="unverified"):
        await engine.decide_answer(EncodedInput.of({"response": {"text": "k"}}))


async def test_a_spent_budget_is_a_429_with_retry_after(engine_for: EngineFor) -> None:
    store, _, v2 = two_versions()
    spent = {"allow": False, "reasons": ["budget spent"], "status": 429, "retry_after_s": 16.2}
    engine, _ = await engine_for(
        store,
        answer(spent, v2),
        answer({**spent, "status": 418}, v2),
        answer({**spent, "retry_after_s": 0}, v2),
        answer({"allow": False, "reasons": ["x"], "status": 429}, v2),
    )
    decision, _ = await engine.decide(FACTS, ANONYMOUS)
    assert (decision.allow, decision.status, decision.retry_after_s) == (False, 429, 17)
    for _ in range(3):
        malformed, _ = await engine.decide(FACTS, ANONYMOUS)
        assert malformed.allow is False and malformed.retry_after_s is None
        assert "status must be 429" in malformed.reasons[0]


def test_usage_is_in_the_input_only_when_counted() -> None:
    store = PolicyStore()
    store.activate(bundle("allow := true"), 1, None)
    assert store.active is not None
    assert "usage" not in build_input(FACTS, ANONYMOUS, store.active)
    counted = dataclasses.replace(FACTS, usage={"caller": {}})
    assert build_input(counted, ANONYMOUS, store.active)["usage"] == {"caller": {}}
