"""The decision log writer: ordering, draining, back-pressure, rotation, crash recovery."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import threading
from pathlib import Path
from typing import Any

import pytest

from gateway.config import DecisionLog
from gateway.decisionlog import (
    DecisionEntry,
    DecisionLogError,
    DecisionLogFull,
    DecisionLogWriter,
    UnrecordableDecision,
    build_record,
    seal,
    verify,
)
from gateway.decisionlog import writer as writer_module
from gateway.decisionlog.files import rotated_files
from gateway.exceptions import ConfigError
from gateway.lifecycle import State
from tests.unit.decisionlog.samples import decision as sample
from tests.unit.decisionlog.samples import refusal

ENV = {"AGORA_TEST_CALLER_KEY": "k" * 32}


def decision(i: int = 0, **changes: Any) -> DecisionEntry:
    """Every third decision is a denial, so that counts per outcome are exercised."""
    return refusal(i, **changes) if i % 3 == 0 else sample(i, **changes)


def config(tmp_path: Path, **changes: Any) -> DecisionLog:
    return DecisionLog(
        path=tmp_path / "decisions.jsonl", caller_hash_key_env="AGORA_TEST_CALLER_KEY", **changes
    )


async def started(cfg: DecisionLog) -> DecisionLogWriter:
    writer = DecisionLogWriter(cfg, environ=ENV)
    await writer.start()
    return writer


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def chain_files(tmp_path: Path) -> list[Path]:
    return sorted(tmp_path.glob("*.jsonl"))


def torn_files(tmp_path: Path) -> list[Path]:
    return sorted(tmp_path.glob("*.torn-*"))


@pytest.mark.parametrize("durability", ["record", "batch", "interval"])
async def test_concurrent_submits_form_one_chain(tmp_path: Path, durability: str) -> None:
    writer = await started(config(tmp_path, durability=durability, interval_ms=20))
    await asyncio.gather(*(writer.submit(decision(i)) for i in range(300)))
    await writer.stop()
    result = verify(chain_files(tmp_path))
    assert result.ok, result.first_bad
    assert result.count == writer.count == 300
    assert result.head == writer.head_hash
    assert {r["decision_id"] for r in records(tmp_path / "decisions.jsonl")} == {
        f"d-{i:06d}" for i in range(300)
    }
    assert writer.state is State.STOPPED
    assert writer.write_errors == 0


async def test_stop_drains_every_queued_record(tmp_path: Path) -> None:
    writer = await started(config(tmp_path, queue_size=5000))
    for i in range(2000):
        await writer.submit(decision(i))  # never suspends: the queue has room
    assert writer.queue_depth > 0
    await writer.stop()
    assert writer.queue_depth == 0
    assert len(records(tmp_path / "decisions.jsonl")) == writer.count == 2000
    assert verify(chain_files(tmp_path)).ok


async def test_durable_submit_returns_once_the_record_is_on_disk(tmp_path: Path) -> None:
    writer = await started(config(tmp_path, durability="interval", interval_ms=30))
    await asyncio.wait_for(writer.submit(decision(1), durable=True), timeout=5)
    assert [r["decision_id"] for r in records(tmp_path / "decisions.jsonl")] == ["d-000001"]
    await writer.stop()


async def test_submit_is_refused_when_the_writer_is_not_running(tmp_path: Path) -> None:
    writer = DecisionLogWriter(config(tmp_path), environ=ENV)
    with pytest.raises(DecisionLogError, match="not running"):
        await writer.submit(decision(1))
    await writer.start()
    await writer.stop()
    with pytest.raises(DecisionLogError, match="not running"):
        await writer.submit(decision(1))


async def test_an_invalid_decision_fails_its_own_submit(tmp_path: Path) -> None:
    writer = await started(config(tmp_path))
    bad = {"auth": 0.5, "policy": 1, "upstream": 1, "total": 2}
    with pytest.raises(UnrecordableDecision, match=r"latency_us\.auth"):
        await writer.submit(decision(1, latency_us=bad))
    await writer.submit(decision(2))
    await writer.stop()
    assert writer.count == 1


def test_a_configured_but_empty_caller_key_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="AGORA_TEST_CALLER_KEY"):
        DecisionLogWriter(config(tmp_path), environ={})


class Stall:
    """Holds the writer's worker thread inside its first write until released."""

    def __init__(self, writer: DecisionLogWriter, monkeypatch: pytest.MonkeyPatch) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        flush = writer._flush

        def stalled(force_sync: bool) -> list[asyncio.Future[None]]:
            self.entered.set()
            self.release.wait(10)
            return flush(force_sync)

        monkeypatch.setattr(writer, "_flush", stalled)

    async def until_stalled(self) -> None:
        await asyncio.to_thread(self.entered.wait, 10)


async def test_full_queue_fails_closed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writer = await started(config(tmp_path, queue_size=1, on_full="fail_closed"))
    stall = Stall(writer, monkeypatch)
    await writer.submit(decision(1))
    await stall.until_stalled()  # the writer holds record 1; the queue is empty
    await writer.submit(decision(2))  # fills the queue
    with pytest.raises(DecisionLogFull):
        await writer.submit(decision(3))
    stall.release.set()
    await writer.stop()
    assert [r["decision_id"] for r in records(tmp_path / "decisions.jsonl")] == [
        "d-000001",
        "d-000002",
    ]


async def test_full_queue_blocks_until_there_is_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = await started(config(tmp_path, queue_size=1, on_full="block"))
    stall = Stall(writer, monkeypatch)
    await writer.submit(decision(1))
    await stall.until_stalled()
    await writer.submit(decision(2))
    blocked = asyncio.create_task(writer.submit(decision(3)))  # back-pressure, not refusal
    await asyncio.sleep(0.05)
    assert not blocked.done()
    stall.release.set()
    await asyncio.wait_for(blocked, timeout=5)
    await writer.stop()
    assert writer.count == 3
    assert verify(chain_files(tmp_path)).ok


async def test_stop_waits_for_submits_blocked_on_a_full_queue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = await started(config(tmp_path, queue_size=2, on_full="block"))
    stall = Stall(writer, monkeypatch)
    await writer.submit(decision(0))
    await stall.until_stalled()
    blocked = [asyncio.create_task(writer.submit(decision(i))) for i in range(1, 20)]
    await asyncio.sleep(0.01)
    stopping = asyncio.create_task(writer.stop())
    await asyncio.sleep(0.01)
    stall.release.set()
    await asyncio.gather(stopping, *blocked)
    assert writer.count == 20
    assert verify(chain_files(tmp_path)).count == 20


async def test_a_failed_fsync_is_retried_without_losing_or_duplicating_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = await started(config(tmp_path))
    real_fsync = os.fsync
    failures = [OSError(5, "Input/output error")]

    def flaky_fsync(fd: int) -> None:
        if failures:
            raise failures.pop()
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", flaky_fsync)
    await asyncio.gather(*(writer.submit(decision(i)) for i in range(50)))
    await writer.stop()
    assert writer.write_errors == 1
    assert [r["seq"] for r in records(tmp_path / "decisions.jsonl")] == list(range(1, 51))
    assert verify(chain_files(tmp_path)).ok


async def test_a_second_writer_on_the_same_path_is_refused(tmp_path: Path) -> None:
    writer = await started(config(tmp_path))
    second = DecisionLogWriter(config(tmp_path), environ=ENV)
    with pytest.raises(DecisionLogError, match="in use"):
        await second.start()
    assert second.state is State.ERROR
    assert "in use" in second.detail
    await writer.stop()


async def test_restart_continues_the_chain(tmp_path: Path) -> None:
    for run in range(3):
        writer = await started(config(tmp_path))
        for i in range(10):
            await writer.submit(decision(run * 10 + i))
        await writer.stop()
    result = verify(chain_files(tmp_path))
    assert result.ok
    assert result.count == 30


async def test_rotation_by_size_keeps_one_chain_across_files(tmp_path: Path) -> None:
    writer = await started(config(tmp_path, rotate_bytes=3000))
    for i in range(40):
        await writer.submit(decision(i))
    await writer.stop()
    rotated = rotated_files(tmp_path / "decisions.jsonl")
    assert len(rotated) >= 5
    assert all(p.stat().st_size < 3000 + 1000 for p in rotated)
    assert sorted(p.name for p in rotated) == [p.name for p in rotated]  # names sort in order
    for earlier, later in zip(rotated, [*rotated[1:], tmp_path / "decisions.jsonl"], strict=True):
        assert records(later)[0]["prev"] == records(earlier)[-1]["hash"]
        assert records(later)[0]["seq"] == records(earlier)[-1]["seq"] + 1
    first = records(rotated[0])[0]
    assert rotated[0].name == "decisions.20250101T000000Z-000000000001.jsonl"
    assert first["seq"] == 1
    files = chain_files(tmp_path)
    random.Random(5).shuffle(files)
    result = verify(files)
    assert result.ok, result.first_bad
    assert result.count == 40


async def test_rotation_by_age(tmp_path: Path) -> None:
    writer = await started(config(tmp_path, rotate_s=10))
    for i in range(12):
        await writer.submit(decision(i * 3))  # decision times 0 s, 3 s, 6 s, ...
    await writer.stop()
    rotated = rotated_files(tmp_path / "decisions.jsonl")
    assert [len(records(p)) for p in rotated] == [4, 4]  # 0-9 s, 12-21 s
    assert len(records(tmp_path / "decisions.jsonl")) == 4
    assert verify(chain_files(tmp_path)).count == 12


async def test_restart_after_rotation_continues_from_the_newest_rotated_file(
    tmp_path: Path,
) -> None:
    writer = await started(config(tmp_path, rotate_bytes=3000))
    for i in range(20):
        await writer.submit(decision(i))
    await writer.stop()
    # As after a crash between renaming the current file aside and creating the next one.
    current = tmp_path / "decisions.jsonl"
    first = records(current)[0]
    stamp = first["time"][:19].replace("-", "").replace(":", "")
    current.rename(tmp_path / f"decisions.{stamp}Z-{first['seq']:012d}.jsonl")
    writer = await started(config(tmp_path, rotate_bytes=3000))
    await writer.submit(decision(20))
    await writer.stop()
    assert records(current)[0]["seq"] == 21
    assert verify(chain_files(tmp_path)).count == 21


def torn_piece(seq: int) -> bytes:
    fields = build_record(decision(seq), caller_key=None, include_body=False)
    _, line = seal(fields, seq, "sha256:" + "00" * 32)
    return line[: len(line) // 2]


async def test_recovery_sets_a_torn_last_line_aside_and_continues(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    writer = await started(config(tmp_path))
    for i in range(10):
        await writer.submit(decision(i))
    await writer.stop()
    path = tmp_path / "decisions.jsonl"
    whole = path.stat().st_size
    with path.open("ab") as file:
        file.write(torn_piece(11))  # a crash in the middle of writing record 11
    assert not verify([path]).ok

    with caplog.at_level(logging.WARNING, logger="gateway.decisionlog"):
        writer = await started(config(tmp_path))
    assert f"torn record at byte offset {whole}" in caplog.text
    assert writer.count == 10
    (torn,) = torn_files(tmp_path)
    assert torn.name.startswith("decisions.jsonl.torn-")
    assert torn.read_bytes() == torn_piece(11)
    assert path.stat().st_size == whole
    for i in range(10, 15):
        await writer.submit(decision(i))
    await writer.stop()
    result = verify([path])
    assert result.ok, result.first_bad
    assert [r["seq"] for r in records(path)] == list(range(1, 16))


async def five_lines(tmp_path: Path) -> tuple[Path, list[bytes]]:
    """A stopped log of five records: its path and its lines, newlines kept, to damage."""
    writer = await started(config(tmp_path))
    for i in range(5):
        await writer.submit(decision(i))
    await writer.stop()
    path = tmp_path / "decisions.jsonl"
    return path, path.read_bytes().splitlines(keepends=True)


async def test_recovery_refuses_a_complete_last_line_that_is_not_a_valid_record(
    tmp_path: Path,
) -> None:
    path, lines = await five_lines(tmp_path)
    lines[-1] = lines[-1].replace(b"d-000004", b"d-000099")  # still ends in a newline
    altered = b"".join(lines)
    path.write_bytes(altered)

    writer = DecisionLogWriter(config(tmp_path), environ=ENV)
    with pytest.raises(DecisionLogError, match="complete but invalid") as caught:
        await writer.start()
    assert "hash mismatch" in str(caught.value)
    assert "the log was altered" in str(caught.value)
    assert "agora log verify" in str(caught.value)
    assert writer.state is State.ERROR
    assert path.read_bytes() == altered  # nothing set aside, nothing cut
    assert not torn_files(tmp_path)


async def test_recovery_refuses_an_invalid_line_before_a_torn_tail(tmp_path: Path) -> None:
    path, lines = await five_lines(tmp_path)
    lines[-1] = lines[-1].replace(b"d-000004", b"d-000099")
    path.write_bytes(b"".join(lines) + torn_piece(6))
    writer = DecisionLogWriter(config(tmp_path), environ=ENV)
    with pytest.raises(DecisionLogError, match="complete but invalid"):
        await writer.start()
    assert not torn_files(tmp_path)


async def test_recovery_refuses_damage_before_the_last_line(tmp_path: Path) -> None:
    path, lines = await five_lines(tmp_path)
    lines[-2] = lines[-2].replace(b"d-000003", b"d-000099")  # not what a crash does
    lines[-1] = lines[-1].replace(b"d-000004", b"d-000099")
    path.write_bytes(b"".join(lines))
    writer = DecisionLogWriter(config(tmp_path), environ=ENV)
    with pytest.raises(DecisionLogError, match="refusing"):
        await writer.start()
    assert not torn_files(tmp_path)


async def test_durable_submits_share_one_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Group commit: the records queued while the disk is busy go down with one fsync."""
    writer = await started(config(tmp_path, durability="record"))
    stall = Stall(writer, monkeypatch)
    fsynced: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        real_fsync(fd)
        fsynced.append(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    first = asyncio.create_task(writer.submit(decision(0), durable=True))
    await stall.until_stalled()  # the writer holds record 0 while 50 more arrive
    waiting = [asyncio.create_task(writer.submit(decision(i), durable=True)) for i in range(1, 51)]
    await asyncio.sleep(0.05)
    assert not any(task.done() for task in [first, *waiting])
    stall.release.set()
    await asyncio.wait_for(asyncio.gather(first, *waiting), timeout=10)
    assert len(fsynced) == 2  # one for record 0, one for the 50 that queued behind it
    assert writer.syncs == 2
    assert len(records(tmp_path / "decisions.jsonl")) == 51
    await writer.stop()


async def test_a_large_stored_body_is_checked_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = await started(config(tmp_path, include_body=True))
    threads: list[str] = []
    build = writer_module.prepare_record

    def watched(*args: Any, **kwargs: Any) -> tuple[dict[str, object], bytes]:
        threads.append(threading.current_thread().name)
        return build(*args, **kwargs)

    monkeypatch.setattr(writer_module, "prepare_record", watched)
    await writer.submit(decision(1, body={"messages": [{"content": "hi"}]}))
    await writer.submit(decision(2, body={"input": [0.5] * 50_000}))
    await writer.stop()
    assert threads[0] == threading.main_thread().name
    assert threads[1] != threading.main_thread().name
    assert records(tmp_path / "decisions.jsonl")[1]["body"] == {"input": [0.5] * 50_000}
