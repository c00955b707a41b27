"""Shipping the decision log: a real writer, a real receiver on loopback, the sink between them."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.config import DecisionLog, LogShip
from gateway.decisionlog import DecisionLogWriter, build_record, canonical_json, seal
from gateway.decisionlog.events import event_json, opa_event
from gateway.decisionlog.files import rotated_files
from gateway.decisionlog.ship import LogShipper, read_position, state_path
from gateway.exceptions import ConfigError
from gateway.lifecycle import State
from tests.support import free_port
from tests.unit.decisionlog.samples import decision, refusal

ENV = {"AGORA_TEST_CALLER_KEY": "k" * 32, "AGORA_TEST_SHIP_TOKEN": "Bearer s3cret"}


class Receiver:
    """An HTTP endpoint that collects OPA-style decision-log uploads, and can be taken down."""

    def __init__(self) -> None:
        self.port = free_port()
        self.batches: list[list[dict[str, Any]]] = []
        self.requests: list[web.Request] = []
        self.answer = 200
        self.delay_s = 0.0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/logs"

    @property
    def events(self) -> list[dict[str, Any]]:
        return [event for batch in self.batches for event in batch]

    async def _upload(self, request: web.Request) -> web.Response:
        self.requests.append(request)
        await asyncio.sleep(self.delay_s)
        if self.answer != 200:
            return web.Response(status=self.answer, text="not now")
        assert request.headers["Content-Encoding"] == "gzip"
        assert request.headers["Content-Type"] == "application/json"
        # Read the body as sent: the gzip'd JSON array.
        raw = await request.content.read()
        self.batches.append(json.loads(gzip.decompress(raw)))
        return web.Response(status=200)

    async def up(self) -> None:
        app = web.Application()
        app.router.add_post("/logs", self._upload)
        self._runner = web.AppRunner(app, auto_decompress=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def down(self) -> None:
        assert self._runner is not None
        await self._runner.cleanup()
        self._runner = None


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    await found.up()
    yield found
    if found._runner is not None:
        await found.down()


def log_config(tmp_path: Path, **changes: Any) -> DecisionLog:
    return DecisionLog(
        path=tmp_path / "decisions.jsonl", caller_hash_key_env="AGORA_TEST_CALLER_KEY", **changes
    )


def ship_config(receiver: Receiver, **changes: Any) -> LogShip:
    settings: dict[str, Any] = {
        "url": receiver.url,
        "interval_s": 0.02,
        "backoff_max_s": 0.05,
        "timeout_s": 2.0,
        **changes,
    }
    return LogShip.model_validate(settings)


async def writer_for(config: DecisionLog) -> DecisionLogWriter:
    writer = DecisionLogWriter(config, environ=ENV)
    await writer.start()
    return writer


def shipper_for(
    writer: DecisionLogWriter, config: DecisionLog, ship: LogShip, **kwargs: Any
) -> LogShipper:
    return LogShipper(
        ship, config.path, decision_path="agora/main", head=lambda: writer.count, environ=ENV,
        **kwargs,
    )  # fmt: skip


async def write(writer: DecisionLogWriter, start: int, stop: int) -> None:
    for i in range(start, stop):
        await writer.submit(refusal(i) if i % 3 == 0 else decision(i))


async def until(condition: Any) -> None:
    async with asyncio.timeout(10):
        while not condition():  # noqa: ASYNC110 (polling the sink from outside)
            await asyncio.sleep(0.01)


def seqs(events: list[dict[str, Any]]) -> list[int]:
    return [event["seq"] for event in events]


async def test_batches_arrive_gzipped_in_order_and_complete(
    tmp_path: Path, receiver: Receiver
) -> None:
    config = log_config(tmp_path)
    writer = await writer_for(config)
    ship = ship_config(
        receiver, batch_records=7, labels={"cluster": "eu-1"},
        headers_env={"Authorization": "AGORA_TEST_SHIP_TOKEN"},
    )  # fmt: skip
    shipper = shipper_for(writer, config, ship)
    await shipper.start()
    await write(writer, 0, 50)
    await until(lambda: shipper.shipped_seq == 50)
    await shipper.stop()
    await writer.stop()

    assert seqs(receiver.events) == list(range(1, 51))
    assert all(1 <= len(batch) <= 7 for batch in receiver.batches)
    assert receiver.requests[0].headers["Authorization"] == "Bearer s3cret"
    lines = config.path.read_bytes().splitlines()
    for event, line in zip(receiver.events, lines, strict=True):
        record = json.loads(line)
        assert event["record"] == record
        # The receiver can check the chain from the events alone.
        unhashed = {k: v for k, v in event["record"].items() if k != "hash"}
        assert event["hash"] == "sha256:" + hashlib.sha256(canonical_json(unhashed)).hexdigest()
        assert event["decision_id"] == record["decision_id"]
        assert event["path"] == "agora/main"
        assert event["timestamp"] == record["time"]
        assert event["bundles"] == {"agora": {"revision": "v3+sha256:" + "ab" * 32}}
        assert event["result"]["allow"] == record["allow"]
        assert event["erased"] == ["/input"] and "input" not in event
        assert event["input_sha256"] == record["input_sha256"]
        assert event["labels"]["cluster"] == "eu-1" and event["labels"]["app"] == "agora"
    assert [e["prev"] for e in receiver.events[1:]] == [e["hash"] for e in receiver.events[:-1]]
    assert read_position(state_path(ship, config.path)) == shipper.position
    assert shipper.shipped_records == 50 and shipper.failures == 0 and shipper.lag == 0
    assert shipper.state is State.STOPPED


async def test_batch_bytes_bound_a_batch(tmp_path: Path, receiver: Receiver) -> None:
    config = log_config(tmp_path)
    writer = await writer_for(config)
    shipper = shipper_for(writer, config, ship_config(receiver, batch_bytes=4096))
    await write(writer, 0, 40)
    await shipper.start()
    await until(lambda: shipper.shipped_seq == 40)
    await shipper.stop()
    await writer.stop()
    assert seqs(receiver.events) == list(range(1, 41))
    assert len(receiver.batches) > 1
    for batch in receiver.batches:
        assert len(json.dumps(batch, separators=(",", ":")).encode()) <= 4096


async def test_receiver_down_then_back_loses_nothing_and_blocks_nothing(
    tmp_path: Path, receiver: Receiver
) -> None:
    config = log_config(tmp_path)
    writer = await writer_for(config)
    shipper = shipper_for(writer, config, ship_config(receiver, batch_records=10))
    await shipper.start()
    await write(writer, 0, 20)
    await until(lambda: shipper.shipped_seq == 20)

    await receiver.down()
    started = time.perf_counter()
    await write(writer, 20, 120)
    submitting = time.perf_counter() - started
    await until(lambda: shipper.failures >= 3)
    assert shipper.state is State.WARN
    assert "failing for" in shipper.detail and "100 behind" in shipper.detail
    assert shipper.shipped_seq == 20 and shipper.lag == 100
    assert not shipper.gates_readiness
    assert submitting < 1.0, "the request side waited for the receiver"

    receiver.answer = 503  # back, but refusing for a while
    await receiver.up()
    await until(lambda: len(receiver.requests) >= 3)
    assert shipper.shipped_seq == 20
    receiver.answer = 200
    await until(lambda: shipper.shipped_seq == 120)
    assert shipper.state is State.OK
    await shipper.stop()
    await writer.stop()
    assert seqs(receiver.events) == list(range(1, 121))


async def test_a_restarted_sink_resumes_after_its_position(
    tmp_path: Path, receiver: Receiver
) -> None:
    config = log_config(tmp_path)
    writer = await writer_for(config)
    ship = ship_config(receiver, batch_records=5)
    first = shipper_for(writer, config, ship)
    await first.start()
    await write(writer, 0, 12)
    await until(lambda: first.shipped_seq == 12)
    await first.stop()

    await write(writer, 12, 30)  # written while no sink runs
    second = shipper_for(writer, config, ship)
    await second.start()
    assert second.shipped_seq == 12
    await until(lambda: second.shipped_seq == 30)
    await second.stop()
    await writer.stop()
    assert seqs(receiver.events) == list(range(1, 31))


async def test_stop_ships_what_the_writer_flushes_last(tmp_path: Path, receiver: Receiver) -> None:
    """Stopped after the writer (as the gateway stops them), the sink sends the last records."""
    config = log_config(tmp_path)
    writer = await writer_for(config)
    shipper = shipper_for(writer, config, ship_config(receiver, interval_s=30))
    await shipper.start()
    await write(writer, 0, 25)
    await writer.stop()
    await shipper.stop()
    assert seqs(receiver.events) == list(range(1, 26))


async def test_a_backlog_does_not_hold_up_a_shutdown(tmp_path: Path, receiver: Receiver) -> None:
    config = log_config(tmp_path)
    writer = await writer_for(config)
    await write(writer, 0, 200)
    await writer.stop()
    receiver.delay_s = 0.02
    ship = ship_config(receiver, batch_records=1, timeout_s=0.3)
    shipper = shipper_for(writer, config, ship)
    await shipper.start()
    started = time.perf_counter()
    await shipper.stop()
    assert time.perf_counter() - started < 1.0
    assert 0 < shipper.shipped_seq < 200
    assert read_position(state_path(ship, config.path)) == shipper.position
    again = shipper_for(writer, config, ship_config(receiver, batch_records=100))
    await again.start()
    await until(lambda: again.shipped_seq == 200)
    await again.stop()
    assert seqs(receiver.events)[-1] == 200 and set(seqs(receiver.events)) == set(range(1, 201))


async def test_rotated_files_are_followed(tmp_path: Path, receiver: Receiver) -> None:
    config = log_config(tmp_path, rotate_bytes=2048)
    writer = await writer_for(config)
    shipper = shipper_for(writer, config, ship_config(receiver, batch_records=3))
    await shipper.start()
    for i in range(60):
        await write(writer, i, i + 1)
        if i % 7 == 0:
            await asyncio.sleep(0.03)
    await until(lambda: shipper.shipped_seq == 60)
    await shipper.stop()
    await writer.stop()
    assert len(rotated_files(config.path)) > 3
    assert seqs(receiver.events) == list(range(1, 61))


async def test_a_replaced_log_is_not_shipped_as_its_continuation(
    tmp_path: Path, receiver: Receiver
) -> None:
    config = log_config(tmp_path)
    writer = await writer_for(config)
    ship = ship_config(receiver)
    first = shipper_for(writer, config, ship)
    await first.start()
    await write(writer, 0, 10)
    await until(lambda: first.shipped_seq == 10)
    await first.stop()
    await writer.stop()

    config.path.unlink()  # a new log, shorter than what was shipped
    writer = await writer_for(config)
    await write(writer, 100, 104)
    await until(lambda: writer.count == 4)
    second = shipper_for(writer, config, ship)
    await second.start()
    await until(lambda: second.state is State.ERROR)
    assert "the log ends at seq 4" in second.detail
    await write(writer, 104, 115)  # now longer: seq 10 differs from what was shipped
    await until(lambda: writer.count == 15)
    await second.stop()
    third = shipper_for(writer, config, ship)
    await third.start()
    await until(lambda: third.state is State.ERROR)
    assert "replaced or altered" in third.detail
    await third.stop()
    await writer.stop()
    assert seqs(receiver.events) == list(range(1, 11))


async def test_a_torn_line_set_aside_by_the_writer_is_skipped(
    tmp_path: Path, receiver: Receiver
) -> None:
    config = log_config(tmp_path)
    writer = await writer_for(config)
    await write(writer, 0, 5)
    await writer.stop()
    with open(config.path, "ab") as file:  # noqa: ASYNC230 (a crash, mid-write)
        file.write(b'{"allow":false,"torn":')
    shipper = shipper_for(writer, config, ship_config(receiver))
    await shipper.start()  # reads the torn bytes before the writer cuts them
    await until(lambda: shipper.shipped_seq == 5)
    writer = await writer_for(config)  # sets the torn line aside, writes from there
    await write(writer, 5, 12)
    await until(lambda: shipper.shipped_seq == 12)
    assert shipper.state is State.OK
    await shipper.stop()
    await writer.stop()
    assert seqs(receiver.events) == list(range(1, 13))


async def test_a_position_that_cannot_be_kept_sends_the_batch_again(
    tmp_path: Path, receiver: Receiver
) -> None:
    config = log_config(tmp_path)
    writer = await writer_for(config)
    state_dir = tmp_path / "state"  # missing for now: the position cannot be written
    ship = ship_config(receiver, state_path=state_dir / "ship.json")
    shipper = shipper_for(writer, config, ship)
    await write(writer, 0, 3)
    await shipper.start()
    await until(lambda: shipper.failures >= 2)
    assert shipper.state is State.WARN and "cannot keep the position" in shipper.detail
    state_dir.mkdir()
    await until(lambda: shipper.shipped_seq == 3)
    await shipper.stop()
    await writer.stop()
    assert set(seqs(receiver.events)) == {1, 2, 3}  # each at least once, some more
    assert len(receiver.events) > 3
    assert read_position(state_dir / "ship.json") == shipper.position


async def test_a_too_large_answer_halves_the_batch(tmp_path: Path) -> None:
    sizes: list[int] = []

    async def upload(request: web.Request) -> web.Response:
        batch = json.loads(gzip.decompress(await request.content.read()))
        if len(batch) > 4:
            return web.Response(status=413)
        sizes.append(len(batch))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/", upload)
    runner = web.AppRunner(app, auto_decompress=False)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        config = log_config(tmp_path)
        writer = await writer_for(config)
        ship = LogShip.model_validate(
            {"url": f"http://127.0.0.1:{port}/", "batch_records": 16, "interval_s": 0.02}
        )
        shipper = shipper_for(writer, config, ship)
        await write(writer, 0, 20)
        await shipper.start()
        await until(lambda: shipper.shipped_seq == 20)
        await shipper.stop()
        await writer.stop()
    finally:
        await runner.cleanup()
    assert sum(sizes) == 20 and max(sizes) == 4


def test_the_receiver_is_reached_over_https_or_on_loopback() -> None:
    with pytest.raises(ValueError, match="must use https"):
        LogShip.model_validate({"url": "http://logs.example/v1/decisions"})
    assert LogShip.model_validate({"url": "https://logs.example/v1/decisions"}).url.host
    assert LogShip.model_validate({"url": "http://[::1]:2020/"}).url.host


def test_a_header_variable_must_be_set(tmp_path: Path) -> None:
    ship = LogShip.model_validate(
        {"url": "http://127.0.0.1:1/", "headers_env": {"Authorization": "AGORA_UNSET_TOKEN"}}
    )
    with pytest.raises(ConfigError, match=r"decision_log\.ship\.headers_env\.Authorization"):
        LogShipper(ship, tmp_path / "d.jsonl", decision_path="agora/main", head=int, environ={})


def test_a_stored_body_is_the_input_and_the_checkpoint_goes_along() -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    fields = build_record(decision(1, body=body), caller_key=b"k", include_body=True)
    digest, line = seal(fields, 1, None)
    note = "agora.example/log\n1\nAAAA\n\n\u2014 agora sig\n"
    record = json.loads(line)
    event = opa_event(record, path="agora/main", labels={"id": "a"}, checkpoint=note)
    assert event["checkpoint"] == note and event["hash"] == digest
    assert event["input"]["body"] == body and "erased" not in event
    # What the sink sends: the same event, the log line spliced in as its record.
    sent = event_json(record, line[:-1], path="agora/main", labels={"id": "a"}, checkpoint=note)
    assert json.loads(sent) == event
