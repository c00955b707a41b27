"""The recorder's API for the request path: refused, admit (before forwarding), finished."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.answers.judge import Verdict
from gateway.auth import Caller
from gateway.config import DecisionLog
from gateway.decisionlog import (
    DecisionLogError,
    DecisionLogFull,
    DecisionLogUnavailable,
    UnrecordableDecision,
    input_sha256,
    stats,
)
from gateway.decisionlog import recorder as recorder_module
from gateway.decisionlog.recorder import DecisionRecorder, Outcome
from gateway.lifecycle import State
from gateway.metrics import GatewayMetrics
from gateway.pinning.store import PolicyVersion
from gateway.policy.encoded import EncodedInput
from gateway.policy.engine import Decision
from gateway.policy.input import RequestFacts

VERSION = PolicyVersion(version=4, digest="sha256:" + "4f" * 32, source="test", archive=b"")


@pytest.fixture(autouse=True)
def caller_hash_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGORA_CALLER_KEY", "a test key of the caller hash")


def request(i: int = 0, allow: bool = True, document: Any = None) -> Outcome:
    """The outcome of request ``i`` after its policy decision, as the request path fills it."""
    facts = RequestFacts(
        api="chat.completions", model="demo-small", stream=False,
        body={"model": "demo-small", "messages": [{"role": "user", "content": f"hello {i}"}]},
        method="POST", path="/v1/chat/completions", query={}, headers={}, upstream="demo",
    )  # fmt: skip
    reasons = [] if allow else ["model not allowed"]
    return Outcome(
        decision_id=f"req-{i:04d}",
        facts=facts,
        caller=Caller(authenticated=True, sub=f"user-{i % 3}"),
        started_ns=time.perf_counter_ns(),
        auth_ns=20_000,
        policy_ns=400_000,
        decision=Decision(allow=allow, reasons=reasons, version=VERSION),
        input_document={"request": facts.body, "n": i} if document is None else document,
    )


def verdict(allow: bool, failed: str | None = None) -> Verdict:
    """Response policy's word on an answer of 30 characters, all sent when allowed."""
    judged = Verdict(holdback=True, checkpoints=2, allow=allow, version=VERSION, failed=failed)
    judged.reasons = [] if allow else ["answer matches deny term private-key"]
    judged.document = EncodedInput.of({"response": {"text": "x" * 30}})
    judged.chars_judged = 30 if allow else 10
    judged.chars_sent = 30 if allow else 10
    return judged


async def test_an_answer_gets_a_response_record_named_by_the_request(tmp_path: Path) -> None:
    recorder, metrics = await recorder_for(tmp_path)
    outcome = request(1)
    await recorder.admit(outcome)
    await recorder.answered(outcome, Verdict(holdback=True), 200)  # nothing judged: no record
    await recorder.answered(outcome, verdict(allow=False), 200)
    await recorder.finished(outcome, 200, ["policy_denied"])
    await recorder.stop()
    written = lines(tmp_path)
    assert [(r["decision_id"], r["event"]) for r in written] == [
        ("req-0001", "decision"), ("req-0001", "response"), ("req-0001", "outcome"),
    ]  # fmt: skip
    answer = written[1]
    assert answer["allow"] is False and answer["status"] == 200
    assert answer["reasons"] == ["answer matches deny term private-key"]
    assert answer["response"] == {
        "outcome": "denied", "checkpoints": 2, "final": False, "holdback": True,
        "chars_sent": 10, "sent_unjudged": None,
    }  # fmt: skip
    assert answer["input_sha256"] == input_sha256({"response": {"text": "x" * 30}})
    sample = metrics.registry.get_sample_value(
        "agora_answer_decisions_total",
        {"outcome": "denied", "api": "chat.completions", "policy_version": "4"},
    )
    assert sample == 1.0


async def recorder_for(tmp_path: Path, **changes: Any) -> tuple[DecisionRecorder, GatewayMetrics]:
    metrics = GatewayMetrics()
    recorder = DecisionRecorder(DecisionLog(path=tmp_path / "decisions.jsonl", **changes), metrics)
    await recorder.start()
    return recorder, metrics


def lines(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp_path / "decisions.jsonl").read_bytes().splitlines()]


def decisions_total(metrics: GatewayMetrics, outcome: str) -> float:
    labels = {"outcome": outcome, "api": "chat.completions", "model": "demo-small"}
    value = metrics.registry.get_sample_value(
        "agora_decisions_total", {**labels, "policy_version": "4"}
    )
    return value or 0.0


async def test_the_decision_is_on_disk_before_admit_returns_under_durability_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder, _ = await recorder_for(tmp_path, durability="record")
    synced_sizes: list[int] = []
    real_fsync = os.fsync

    def watching_fsync(fd: int) -> None:
        real_fsync(fd)
        synced_sizes.append(os.fstat(fd).st_size)

    monkeypatch.setattr(os, "fsync", watching_fsync)
    outcome = request(1)
    await recorder.admit(outcome, obligations={"max_tokens": 256})
    # Nothing else has run since admit returned: this is what the request forwards after.
    on_disk = (tmp_path / "decisions.jsonl").read_bytes()
    (record,) = [json.loads(line) for line in on_disk.splitlines()]
    assert synced_sizes and synced_sizes[-1] == len(on_disk)
    assert record["event"] == "decision"
    assert (record["allow"], record["status"]) == (True, None)
    assert record["obligations"] == {"max_tokens": 256}
    assert record["decision_id"] == "req-0001"
    assert record["latency_us"]["upstream"] == 0
    assert record["input_sha256"] == input_sha256(outcome.input_document)
    await recorder.stop()


async def test_admit_returns_once_queued_under_batch_durability(tmp_path: Path) -> None:
    recorder, _ = await recorder_for(tmp_path, durability="batch")
    await recorder.admit(request(1))
    assert recorder.writer.queue_depth == 1  # the writer has not run yet
    await recorder.stop()
    assert [r["decision_id"] for r in lines(tmp_path)] == ["req-0001"]


async def test_an_allowed_request_gets_a_decision_then_an_outcome(tmp_path: Path) -> None:
    recorder, metrics = await recorder_for(tmp_path)
    outcome = request(1)
    await recorder.admit(outcome)
    outcome.upstream_ns = 3_000_000
    await recorder.finished(outcome, 502, ["upstream: connection reset"])
    await recorder.stop()
    decision, ended = lines(tmp_path)
    assert ended["event"] == "outcome"
    assert (ended["allow"], ended["status"]) == (None, 502)
    assert ended["reasons"] == ["upstream: connection reset"]
    assert ended["latency_us"]["upstream"] == 3000
    assert ended["latency_us"]["total"] >= decision["latency_us"]["total"]
    for same in ("decision_id", "policy", "caller_sub_hash", "api", "model", "upstream",
                 "input_sha256"):  # fmt: skip
        assert ended[same] == decision[same]
    assert decisions_total(metrics, "allowed") == 1  # one decision, counted once
    assert stats([tmp_path / "decisions.jsonl"])["totals"]["upstream_failed"] == 1


async def test_a_refusal_is_one_record_and_never_says_allow(tmp_path: Path) -> None:
    recorder, metrics = await recorder_for(tmp_path)
    await recorder.refused(request(1, allow=False), 403, ["model not allowed"])
    # Allowed by policy, then refused because its decision could not be logged.
    await recorder.refused(request(2), 503, ["decision log queue is full"])
    await recorder.stop()
    denied, failed = lines(tmp_path)
    assert (denied["event"], denied["allow"], denied["status"]) == ("decision", False, 403)
    assert (failed["event"], failed["allow"], failed["status"]) == ("decision", False, 503)
    assert decisions_total(metrics, "denied") == decisions_total(metrics, "failed_closed") == 1
    assert decisions_total(metrics, "allowed") == 0


async def test_admit_refuses_when_the_queue_is_full_and_must_fail_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder, metrics = await recorder_for(tmp_path, queue_size=1, on_full="fail_closed")
    entered, release = threading.Event(), threading.Event()
    flush = recorder.writer._flush

    def stalled(force_sync: bool) -> list[asyncio.Future[None]]:
        entered.set()
        release.wait(10)
        return flush(force_sync)

    monkeypatch.setattr(recorder.writer, "_flush", stalled)
    await recorder.admit(request(1))
    await asyncio.to_thread(entered.wait, 10)  # the writer holds record 1
    await recorder.admit(request(2))  # fills the queue
    refused = request(3)
    with pytest.raises(DecisionLogFull):
        await recorder.admit(refused)
    assert not refused.admitted
    assert metrics.registry.get_sample_value("agora_decision_log_admission_failures_total") == 1
    assert recorder.state is State.WARN  # shown in /readyz for a while
    assert "an allowed request was refused 0 s ago" in recorder.detail
    assert decisions_total(metrics, "allowed") == 2
    release.set()
    await recorder.stop()
    assert [r["decision_id"] for r in lines(tmp_path)] == ["req-0001", "req-0002"]


async def test_admit_refuses_when_the_writer_is_not_running(tmp_path: Path) -> None:
    metrics = GatewayMetrics()
    recorder = DecisionRecorder(DecisionLog(path=tmp_path / "decisions.jsonl"), metrics)
    with pytest.raises(DecisionLogUnavailable, match="not running"):
        await recorder.admit(request(1))
    await recorder.start()
    await recorder.stop()
    with pytest.raises(DecisionLogUnavailable, match="not running"):
        await recorder.admit(request(2))
    assert metrics.registry.get_sample_value("agora_decision_log_admission_failures_total") == 2
    await recorder.refused(request(3), 503, ["the decision log writer is not running"])  # no raise
    assert metrics.registry.get_sample_value("agora_decision_log_submit_errors_total") == 1


class FullDisk:
    """``os.fsync`` failing with ENOSPC until ``failing`` is cleared."""

    def __init__(self) -> None:
        self.failing = True
        self._fsync = os.fsync

    def __call__(self, fd: int) -> None:
        if self.failing:
            raise OSError(28, "No space left on device")
        self._fsync(fd)


def full_disk(monkeypatch: pytest.MonkeyPatch) -> FullDisk:
    """From now on the disk is full, until the returned ``failing`` is cleared."""
    disk = FullDisk()
    monkeypatch.setattr(os, "fsync", disk)
    return disk


async def test_admit_refuses_while_the_disk_is_failing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder, _ = await recorder_for(tmp_path, durability="batch")
    disk = full_disk(monkeypatch)
    await recorder.refused(request(1, allow=False), 403, ["no"])
    for _ in range(500):  # the write fails, and is retried with back-off
        if recorder.state is State.ERROR:
            break
        await asyncio.sleep(0.01)
    with pytest.raises(DecisionLogUnavailable, match="failing"):
        await recorder.admit(request(2))
    await recorder.refused(request(3), 503, ["the decision log is failing"])  # still queued
    disk.failing = False
    await recorder.stop()
    assert [r["decision_id"] for r in lines(tmp_path)] == ["req-0001", "req-0003"]


async def test_a_request_waiting_for_its_fsync_is_not_held_while_the_disk_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder, metrics = await recorder_for(tmp_path, durability="record")
    disk = full_disk(monkeypatch)
    allowed = request(1)
    started = time.monotonic()
    with pytest.raises(DecisionLogUnavailable, match="failed before this decision was on disk"):
        await recorder.admit(allowed)  # queued, then the fsync fails: not forwarded
    await recorder.refused(allowed, 503, ["the decision log failed"])
    await recorder.refused(request(2, allow=False), 403, ["no"])  # queued; returns
    assert time.monotonic() - started < 2.0, "nobody waits for the disk to recover"
    assert metrics.registry.get_sample_value("agora_decision_log_admission_failures_total") == 1
    disk.failing = False
    await recorder.stop()
    records = [(r["decision_id"], r["event"], r["allow"], r["status"]) for r in lines(tmp_path)]
    assert records == [
        ("req-0001", "decision", True, None),
        ("req-0001", "outcome", None, 503),  # allowed, then not forwarded: it says so
        ("req-0002", "decision", False, 403),
    ]
    assert stats([tmp_path / "decisions.jsonl"])["totals"]["upstream_failed"] == 1


@pytest.mark.parametrize(
    "document", [{"x": float("nan")}, {"x": {1, 2}}, {"x": 10**400}], ids=["nan", "set", "bigint"]
)
async def test_admit_refuses_a_decision_whose_record_cannot_be_built(
    tmp_path: Path, document: Any
) -> None:
    recorder, _ = await recorder_for(tmp_path)
    with pytest.raises(UnrecordableDecision):
        await recorder.admit(request(1, document=document))
    with pytest.raises(DecisionLogError):  # the same, for callers catching the family
        await recorder.admit(request(2, document=document))
    await recorder.stop()
    assert recorder.writer.count == 0


def threads_calling(monkeypatch: pytest.MonkeyPatch, name: str) -> list[str]:
    """Wrap the recorder module's function ``name``: the list gets the thread of each call."""
    threads: list[str] = []
    original = getattr(recorder_module, name)

    def watched(value: Any) -> str:
        threads.append(threading.current_thread().name)
        result: str = original(value)
        return result

    monkeypatch.setattr(recorder_module, name, watched)
    return threads


async def test_a_large_input_is_hashed_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder, _ = await recorder_for(tmp_path)
    digest = recorder_module.input_sha256
    threads = threads_calling(monkeypatch, "input_sha256")
    small, large = request(1), request(2, document={"input": [0.1 + i for i in range(60_000)]})
    await recorder.admit(small)
    await recorder.admit(large)
    await recorder.finished(large, 200, [])  # reuses the hash: not computed again
    await recorder.stop()
    assert threads[0] == threading.main_thread().name
    assert threads[1] != threading.main_thread().name
    assert len(threads) == 2
    assert lines(tmp_path)[1]["input_sha256"] == digest(large.input_document)


async def test_an_answer_is_hashed_from_its_encoded_input_and_off_the_loop_when_large(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder, _ = await recorder_for(tmp_path)
    threads = threads_calling(monkeypatch, "canonical_sha256")
    request_input = EncodedInput.of({"api": "chat.completions", "n": 1})
    answers = [{"text": "short"}, {"text": "x" * 100_000}]
    for i, answer in enumerate(answers):
        outcome = request(i)
        await recorder.admit(outcome)
        judged = verdict(allow=True)
        judged.document = request_input.with_response(answer)
        await recorder.answered(outcome, judged, 200)
    await recorder.stop()
    assert threads[0] == threading.main_thread().name
    assert threads[1] != threading.main_thread().name
    written = [r for r in lines(tmp_path) if r["event"] == "response"]
    assert [r["input_sha256"] for r in written] == [
        input_sha256({"api": "chat.completions", "n": 1, "response": answer}) for answer in answers
    ]


async def test_finished_needs_an_admitted_decision_and_writes_one_outcome(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    recorder, _ = await recorder_for(tmp_path)
    await recorder.finished(request(1), 200, [])
    assert "without an admitted decision" in caplog.text
    outcome = request(2)
    await recorder.admit(outcome)
    await recorder.finished(outcome, 200, [])
    await recorder.finished(outcome, 200, [])  # a second call adds nothing
    await recorder.stop()
    assert [(r["decision_id"], r["event"]) for r in lines(tmp_path)] == [
        ("req-0002", "decision"),
        ("req-0002", "outcome"),
    ]


async def test_published_counts_equal_the_recount_of_the_files(tmp_path: Path) -> None:
    recorder, _ = await recorder_for(tmp_path, durability="record")
    outcomes = [request(i) for i in range(6)]
    for outcome in outcomes:
        await recorder.admit(outcome)
    await recorder.answered(outcomes[0], verdict(allow=True), 200)
    await recorder.finished(outcomes[0], 200, [])
    await recorder.answered(outcomes[1], verdict(allow=False), 200)
    await recorder.finished(outcomes[1], 200, ["policy_denied"])
    await recorder.answered(outcomes[2], verdict(allow=True, failed="OPA is unreachable"), 200)
    await recorder.finished(outcomes[2], 504, ["upstream: timed out"])
    await recorder.refused(request(7, allow=False), 403, ["no"])
    await recorder.refused(request(8), 503, ["decision log is full"])
    # outcomes 3 to 5 are in flight: incomplete until they finish.
    await recorder.stop()
    writer = recorder.writer
    published = recorder.counts.snapshot(writer.count, writer.head_hash)
    recount = stats([tmp_path / "decisions.jsonl"])
    assert published == recount
    assert recount["totals"] == {
        "allowed": 6, "denied": 1, "failed_closed": 1, "total": 8,
        "forwarded_ok": 2, "upstream_failed": 1, "incomplete": 3,
        "answers_allowed": 1, "answers_denied": 1, "answers_failed_closed": 1,
    }  # fmt: skip

    # After a restart the counts start from the files, incomplete decisions included.
    recorder, _ = await recorder_for(tmp_path)
    late = request(9)
    await recorder.admit(late)
    await recorder.finished(late, 200, [])
    await recorder.stop()
    writer = recorder.writer
    published = recorder.counts.snapshot(writer.count, writer.head_hash)
    assert published == stats([tmp_path / "decisions.jsonl"])
    assert published["totals"]["incomplete"] == 3
    assert published["totals"]["forwarded_ok"] == 3
