"""Shadow judging: sampling off the hot path, bounded, and counting what a proposal would flip."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.community.shadow import (
    MAX_QUEUED_BYTES,
    Impact,
    ShadowEvaluator,
    ShadowPool,
    Target,
    Verdict,
)
from gateway.config import Shadow


class FakePool(ShadowPool):
    """Decides by the document's model: a stand-in for OPA in unit tests of the evaluator."""

    def __init__(self, denied_models: set[str]):
        super().__init__("opa", "agora/main", 1, 100)
        self.denied = denied_models
        self.asked = 0

    async def decide(
        self, digest: str, files: Mapping[str, bytes], document: Mapping[str, Any]
    ) -> Verdict:
        self.asked += 1
        if document["model"] in self.denied:
            return Verdict(False, (f"no {document['model']}",))
        return Verdict(True)


def document(model: str, region: str | None = None) -> dict[str, Any]:
    claims = {"region": region} if region else {}
    return {
        "model": model,
        "body": {"messages": [{"content": "secret text"}]},
        "caller": {"authenticated": bool(region), "sub": "alice", "claims": claims},
    }


def evaluator(rate: float, draws: list[float], queue_size: int = 100) -> ShadowEvaluator:
    config = Shadow(sample_rate=rate, queue_size=queue_size, examples=2)
    shadow = ShadowEvaluator(config, FakePool({"big"}), "region", rng=iter(draws).__next__)
    shadow.set_targets([Target("7", "sha256:" + "a" * 64, {})])
    return shadow


async def test_only_the_sampled_share_is_queued() -> None:
    shadow = evaluator(0.25, [0.1, 0.3, 0.24, 0.9])
    await shadow.start()
    try:
        offered = [shadow.offer(document("small"), True, []) for _ in range(4)]
        assert offered == [True, False, True, False]
        await shadow.drain()
        assert shadow.impacts["7"].compared == 2
    finally:
        await shadow.stop()


async def test_a_full_queue_drops_and_counts_instead_of_waiting() -> None:
    shadow = evaluator(1.0, [0.0] * 5, queue_size=2)
    await shadow.start()  # the loop gets no turn until the test awaits
    try:
        assert [shadow.offer(document("small"), True, []) for _ in range(3)] == [True, True, False]
        assert (shadow.sampled, shadow.dropped) == (3, 1)
        await shadow.drain()
    finally:
        await shadow.stop()


def test_nothing_is_sampled_without_a_proposal_or_before_start() -> None:
    shadow = evaluator(1.0, [0.0, 0.0])
    assert not shadow.offer(document("small"), True, [])  # not started
    shadow.set_targets([])
    assert not shadow.offer(document("small"), True, [])


async def test_flips_are_counted_by_direction_reason_and_group_with_redacted_examples() -> None:
    shadow = evaluator(1.0, [0.0] * 4)
    await shadow.start()
    try:
        shadow.offer(document("big", "north"), True, [])  # would deny
        shadow.offer(document("small"), False, ["small is closed"])  # would allow
        shadow.offer(document("small", "north"), True, [])  # same
        shadow.offer(document("big"), False, ["big is closed"])  # same (both deny)
        await shadow.drain()
    finally:
        await shadow.stop()
    impact = shadow.as_json()["proposals"][0]
    assert (impact["compared"], impact["would_deny"], impact["would_allow"]) == (4, 1, 1)
    assert impact["by_reason"] == [
        {"reason": "would deny: no big", "count": 1},
        {"reason": "would no longer deny: small is closed", "count": 1},
    ]
    assert impact["by_group"] == {
        "(none)": {"compared": 2, "would_deny": 0, "would_allow": 1},
        "north": {"compared": 2, "would_deny": 1, "would_allow": 0},
    }
    example = impact["examples"][0]["input"]
    assert example["caller"]["sub"] == "<redacted>"
    assert example["caller"]["claims"] == {"region": "north"}
    assert example["body"] == {"messages": [{"content": "<redacted: 11 chars>"}]}


def test_a_proposal_that_changes_its_bundle_starts_counting_again() -> None:
    shadow = evaluator(1.0, [])
    shadow.impacts["7"].would_deny = 5
    shadow.set_targets([Target("7", "sha256:" + "b" * 64, {})])
    assert shadow.impacts["7"].would_deny == 0
    shadow.set_targets([])
    assert shadow.impacts == {}


def test_an_unanswered_shadow_question_is_an_error_not_a_flip() -> None:
    impact = Impact("1", "sha256:" + "c" * 64)
    impact.count(Verdict(True), Verdict(False, error="OPA did not answer"), "(none)", dict)
    assert (impact.errors, impact.compared, impact.would_deny) == (1, 0, 0)


async def test_large_bodies_are_bounded_in_bytes_not_only_in_count() -> None:
    shadow = evaluator(1.0, [0.0] * 4)
    await shadow.start()
    try:
        half = MAX_QUEUED_BYTES // 2
        sizes = [half, half, 1]
        assert [shadow.offer(document("small"), True, [], s) for s in sizes] == [True, True, False]
        await shadow.drain()
        assert shadow.offer(document("small"), True, [], half)  # room again once judged
        await shadow.drain()
    finally:
        await shadow.stop()
