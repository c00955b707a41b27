"""Checkpoints and holdback on a streamed answer, with a stand-in for response policy.

The stand-in denies any answer whose text holds ``BAD``, and fails (as OPA
down would) once told to; the integration tests run the real bundle in OPA.
"""

from __future__ import annotations

import json
from typing import Any, cast

import pytest

from gateway.answers.judge import AnswerJudge
from gateway.answers.shapes import ChatAnswer
from gateway.answers.stream import AnswerStream
from gateway.exceptions import PolicyUnavailable
from gateway.pinning.store import PolicyVersion
from gateway.policy.encoded import EncodedInput
from gateway.policy.engine import Decision, PolicyEngine
from gateway.upstream.pool import StreamCut

VERSION = PolicyVersion(version=2, digest="sha256:" + "22" * 32, source="test", archive=b"")


class StandInPolicy:
    """``decide_answer`` of PolicyEngine: deny ``BAD``; remember what was asked."""

    def __init__(self) -> None:
        self.asked: list[dict[str, Any]] = []
        self.down = False

    async def decide_answer(self, document: EncodedInput, input_bytes: int = 0) -> Decision:
        if self.down:
            raise PolicyUnavailable("OPA is unreachable")
        asked = json.loads(document.payload())["input"]["response"]
        assert asked == document.document["response"]
        self.asked.append(asked)
        if "BAD" in asked["text"]:
            return Decision(False, ["bad word"], VERSION)
        return Decision(True, [], VERSION)


def chunk(text: str) -> bytes:
    doc = {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
    return b"data: " + json.dumps(doc).encode() + b"\n\n"


ROLE = b'data: {"choices": [{"index": 0, "delta": {"role": "assistant"}}]}\n\n'
STOP = b'data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}\n\n'
DONE = b"data: [DONE]\n\n"


def stream(
    policy: StandInPolicy,
    holdback: bool = True,
    every: int = 10,
    stages: Any = (),
    overlap: int = 0,
) -> tuple[AnswerStream, AnswerJudge]:
    judge = AnswerJudge(
        cast(PolicyEngine, policy),
        EncodedInput.of({"api": "chat.completions"}),
        ChatAnswer(),
        holdback,
    )
    return AnswerStream(stages, judge, every, "d-1", overlap), judge


async def test_a_clean_answer_passes_byte_identical_one_piece_per_upstream_chunk() -> None:
    policy = StandInPolicy()
    answer, judge = stream(policy)
    chunks = [ROLE, chunk("four"), chunk("five5"), chunk("six666"), chunk("x"), STOP + DONE]
    out: list[list[bytes]] = [list(await answer.feed(c)) for c in chunks]
    out.append(list(await answer.end()))
    # The role chunk carries no text: out at once. Text waits for a checkpoint (10 chars).
    assert out == [
        [ROLE],
        [],
        [],
        [chunks[1], chunks[2], chunks[3]],
        [],
        [chunks[4], chunks[5]],
        [],
    ]
    assert b"".join(b"".join(o) for o in out) == b"".join(chunks)
    assert [(a["text"], a["final"]) for a in policy.asked] == [
        ("fourfive5six666", False), ("fourfive5six666x", True)
    ]  # fmt: skip
    assert judge.verdict.final and judge.verdict.chars_sent == 16
    assert judge.verdict.as_record()["sent_unjudged"] is None


async def test_a_violation_split_across_chunks_is_cut_before_it_is_sent() -> None:
    policy = StandInPolicy()
    answer, judge = stream(policy)
    assert await answer.feed(chunk("0123456789")) == [chunk("0123456789")]
    assert await answer.feed(chunk("xB")) == []
    with pytest.raises(StreamCut) as cut:
        await answer.feed(chunk("AD and more"))
    assert cut.value.reason == "policy_denied"
    error = json.loads(cut.value.last.removeprefix(b"data: "))["error"]
    assert error["type"] == "policy_denied" and error["reasons"] == ["bad word"]
    assert error["decision_id"] == "d-1" and error["policy_version"] == 2
    assert judge.verdict.chars_sent == 10 and not judge.verdict.allow


async def test_a_term_straddling_a_checkpoint_is_not_sent_in_part() -> None:
    policy = StandInPolicy()
    answer, judge = stream(policy, overlap=3)
    # The checkpoint at 10 characters allows "0123456xB" + "A"; with an overlap of 3, the
    # chunks holding its last 3 characters ("xB", "A") stay held for the next checkpoint.
    assert await answer.feed(chunk("0123456")) == []
    assert await answer.feed(chunk("xB")) == []
    assert await answer.feed(chunk("A")) == [chunk("0123456")]
    with pytest.raises(StreamCut):
        await answer.feed(chunk("D and the rest"))
    assert judge.verdict.chars_sent == 7  # "B" of "BAD" never left


async def test_the_end_releases_everything_despite_the_overlap() -> None:
    policy = StandInPolicy()
    answer, judge = stream(policy, overlap=100)
    assert await answer.feed(chunk("0123456789")) == []  # allowed, but within the overlap
    assert await answer.feed(STOP + DONE) == [chunk("0123456789"), STOP + DONE]
    assert judge.verdict.final and judge.verdict.chars_sent == 10


async def test_the_end_marker_waits_for_the_final_judgment() -> None:
    policy = StandInPolicy()
    answer, _ = stream(policy, every=1000)
    assert await answer.feed(chunk("fine")) == []
    with pytest.raises(StreamCut):
        await answer.feed(chunk(" BAD") + DONE)


async def test_without_holdback_text_goes_out_at_once_and_is_judged_before_the_next() -> None:
    policy = StandInPolicy()
    answer, judge = stream(policy, holdback=False)
    assert await answer.feed(chunk("BAD words!")) == [chunk("BAD words!")]  # due: 10 chars
    assert policy.asked == []
    with pytest.raises(StreamCut):
        await answer.feed(chunk("next"))
    assert policy.asked[0]["text"] == "BAD words!"
    record = judge.verdict.as_record()
    assert record["chars_sent"] == 10
    assert record["sent_unjudged"] == {"from": 0, "to": 10}
    assert not record["holdback"]


async def test_policy_failing_mid_stream_ends_it_with_an_error() -> None:
    policy = StandInPolicy()
    answer, judge = stream(policy)
    await answer.feed(chunk("0123456789"))
    policy.down = True
    with pytest.raises(StreamCut) as cut:
        await answer.feed(chunk("0123456789"))
    assert cut.value.reason == "policy_unavailable"
    assert b'"type":"policy_unavailable"' in cut.value.last
    assert judge.verdict.outcome == "failed_closed"


async def test_an_event_that_is_not_json_cannot_be_judged() -> None:
    answer, judge = stream(StandInPolicy())
    with pytest.raises(StreamCut) as cut:
        await answer.feed(b"data: plain text\n\n")
    assert cut.value.reason == "answer_unjudgeable"
    assert judge.verdict.outcome == "failed_closed"


class DropUsage:
    """A stage that drops usage-only chunks and counts what it saw."""

    def __init__(self) -> None:
        self.seen = 0

    def observe_body(self, doc: dict[str, Any]) -> None:
        self.seen += 1

    def observe_event(self, doc: dict[str, Any]) -> bool:
        self.seen += 1
        return doc.get("choices") == [] and "usage" in doc


async def test_stages_see_every_event_in_order_and_may_drop_one() -> None:
    usage = b'data: {"choices": [], "usage": {"total_tokens": 3}}\n\n'
    first, second = DropUsage(), DropUsage()
    answer, judge = stream(StandInPolicy(), stages=[first, second])
    assert await answer.feed(chunk("0123456789") + usage) == [chunk("0123456789")]
    assert (first.seen, second.seen) == (2, 2)
    assert judge.answer.usage == {"total_tokens": 3}  # policy still sees the usage


async def test_an_event_the_upstream_never_ended_is_judged_too() -> None:
    policy = StandInPolicy()
    answer, judge = stream(policy, every=1000)
    assert await answer.feed(chunk("fine ")) == []
    unended = chunk("BAD").removesuffix(b"\n\n")  # the body ends inside this event
    assert await answer.feed(unended) == []
    with pytest.raises(StreamCut) as cut:
        await answer.end()
    assert cut.value.reason == "policy_denied" and policy.asked[-1]["text"] == "fine BAD"
    assert judge.verdict.chars_sent == 0


async def test_text_that_cannot_be_read_as_events_is_not_sent() -> None:
    policy = StandInPolicy()
    answer, _ = stream(policy, every=1000)
    lone_cr = chunk("BAD").replace(b"\n", b"\r") * 3  # no line end the splitter knows
    assert b"BAD" not in b"".join(await answer.feed(lone_cr))
    with pytest.raises(StreamCut) as cut:
        await answer.end()
    assert cut.value.reason == "answer_unjudgeable"


async def test_answer_text_after_the_end_of_the_answer_cuts_the_stream() -> None:
    policy = StandInPolicy()
    answer, judge = stream(policy, every=1000)
    assert await answer.feed(chunk("fine") + STOP + DONE) == [chunk("fine") + STOP + DONE]
    assert judge.verdict.final
    with pytest.raises(StreamCut) as cut:
        await answer.feed(chunk("BAD, after [DONE]"))
    assert cut.value.reason == "answer_unjudgeable"
    assert b"after the end of the answer" in cut.value.last
