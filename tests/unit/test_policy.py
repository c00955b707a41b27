from __future__ import annotations

from typing import Any

import pytest

from gateway.auth import ANONYMOUS
from gateway.bundle import Bundle
from gateway.exceptions import PolicyUnavailable
from gateway.pinning import PolicyStore
from gateway.policy import PolicyEngine, RequestFacts, build_input

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


class ScriptedEngine(PolicyEngine):
    """The engine with OPA replaced by a script of (result, revision) answers."""

    def __init__(self, store: PolicyStore, answers: list[tuple[Any, str | None]]):
        super().__init__("http://127.0.0.1:1", "agora/main", 100, store)
        self.answers = answers
        self.asked: list[int] = []

    async def _query(
        self, document: dict[str, Any] | None, path: str | None = None
    ) -> tuple[Any, str | None]:
        assert document is not None
        self.asked.append(document["policy"]["version"])
        return self.answers.pop(0)


def two_versions() -> tuple[PolicyStore, str, str]:
    store = PolicyStore()
    v1 = store.activate(bundle("allow := true"), 1, None).revision
    v2 = store.activate(bundle("allow := false"), 2, None).revision
    return store, v1, v2


async def test_a_decision_belongs_wholly_to_one_version_during_a_switch() -> None:
    store, v1, v2 = two_versions()
    # The store is on v2 before OPA; OPA switches between the first and second question.
    engine = ScriptedEngine(
        store, [({"allow": True}, v1), ({"allow": False}, v2), ({"allow": False}, v2)]
    )
    decision, document = await engine.decide(FACTS, ANONYMOUS)
    assert engine.asked == [2, 1, 2]
    assert decision.version.version == 2 and document["policy"]["version"] == 2
    assert decision.allow is False


async def test_an_unverified_revision_fails_closed() -> None:
    store, _, _ = two_versions()
    engine = ScriptedEngine(store, [({"allow": True}, "v9+sha256:forged")])
    with pytest.raises(PolicyUnavailable, match="unverified"):
        await engine.decide(FACTS, ANONYMOUS)


async def test_no_decision_fails_closed_and_a_malformed_one_denies() -> None:
    store, _, v2 = two_versions()
    with pytest.raises(PolicyUnavailable, match="no decision"):
        await ScriptedEngine(store, [(None, v2)]).decide(FACTS, ANONYMOUS)
    decision, _ = await ScriptedEngine(store, [({"allow": "yes"}, v2)]).decide(FACTS, ANONYMOUS)
    assert decision.allow is False and "malformed" in decision.reasons[0]


async def test_a_deny_without_reasons_still_gives_one() -> None:
    store, _, v2 = two_versions()
    decision, _ = await ScriptedEngine(store, [({"allow": False}, v2)]).decide(FACTS, ANONYMOUS)
    assert decision.reasons == ["denied by policy"]


async def test_no_active_version_fails_closed() -> None:
    with pytest.raises(PolicyUnavailable, match="no verified policy"):
        await ScriptedEngine(PolicyStore(), []).decide(FACTS, ANONYMOUS)


async def test_opa_unreachable_fails_closed() -> None:
    store, _, _ = two_versions()
    engine = PolicyEngine("http://127.0.0.1:9", "agora/main", 200, store)
    await engine.start()
    try:
        with pytest.raises(PolicyUnavailable, match="unreachable"):
            await engine.decide(FACTS, ANONYMOUS)
    finally:
        await engine.stop()


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
