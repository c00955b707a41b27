"""Admission control: the concurrency bound, the queue, its timeout, what a shed request gets."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from gateway.exceptions import Overloaded
from gateway.metrics import REQUESTS_SHED, GatewayMetrics
from gateway.serving.admission import QUEUE_FULL, QUEUE_TIMEOUT, AdmissionControl, LargeBodyGate


class HeldApp:
    """An ASGI app whose requests stay in flight until released, one by one or all."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.release = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.started.append(scope["path"])
        await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


class Sent:
    """What a request got back."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)

    @property
    def status(self) -> int:
        status: int = self.messages[0]["status"]
        return status

    @property
    def headers(self) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.messages[0]["headers"]}

    @property
    def json(self) -> Any:
        return json.loads(b"".join(m.get("body", b"") for m in self.messages[1:]))


async def never_receive() -> Message:
    raise AssertionError("a shed request's body must not be read")


def http_scope(path: str = "/v1/chat/completions") -> Scope:
    return {"type": "http", "method": "POST", "path": path, "headers": []}


def middleware(
    app: HeldApp, shed: list[str], max_concurrent: int = 1, max_queued: int = 0, timeout: float = 5
) -> AdmissionControl:
    return AdmissionControl(
        app,
        max_concurrent=max_concurrent,
        max_queued=max_queued,
        queue_timeout_s=timeout,
        on_shed=shed.append,
    )


async def call(admission: AdmissionControl, path: str) -> Sent:
    sent = Sent()
    await admission(http_scope(path), never_receive, sent)
    return sent


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_requests_within_the_limit_go_through() -> None:
    app, shed = HeldApp(), list[str]()
    admission = middleware(app, shed, max_concurrent=2)
    app.release.set()
    first, second = await asyncio.gather(call(admission, "/a"), call(admission, "/b"))
    assert first.status == second.status == 200
    assert shed == [] and admission.in_flight == 0


async def test_beyond_the_limit_with_no_queue_is_shed_at_once_with_retry_after() -> None:
    app, shed = HeldApp(), list[str]()
    admission = middleware(app, shed, max_concurrent=1, max_queued=0)
    held = asyncio.create_task(call(admission, "/held"))
    await settle()
    started = time.monotonic()
    refused = await call(admission, "/refused")
    assert time.monotonic() - started < 0.1
    assert refused.status == 503
    assert refused.headers["retry-after"] == "1"
    assert refused.json["error"]["type"] == "overloaded"
    assert refused.json["error"]["code"] == "overloaded"
    assert refused.json["error"]["message"]
    assert app.started == ["/held"], "a shed request never reaches the app"
    assert shed == [QUEUE_FULL]
    app.release.set()
    assert (await held).status == 200


async def test_a_queued_request_takes_the_slot_a_finished_one_frees() -> None:
    app, shed = HeldApp(), list[str]()
    admission = middleware(app, shed, max_concurrent=1, max_queued=2)
    first = asyncio.create_task(call(admission, "/first"))
    await settle()
    second = asyncio.create_task(call(admission, "/second"))
    third = asyncio.create_task(call(admission, "/third"))
    await settle()
    assert app.started == ["/first"]
    assert admission.in_flight == 1 and admission.queued == 2
    app.release.set()
    assert [r.status for r in await asyncio.gather(first, second, third)] == [200, 200, 200]
    assert app.started == ["/first", "/second", "/third"], "the queue is first come, first served"
    assert shed == [] and admission.in_flight == 0 and admission.queued == 0


async def test_a_full_queue_sheds_at_once() -> None:
    app, shed = HeldApp(), list[str]()
    admission = middleware(app, shed, max_concurrent=1, max_queued=1)
    held = asyncio.create_task(call(admission, "/held"))
    await settle()
    queued = asyncio.create_task(call(admission, "/queued"))
    await settle()
    refused = await call(admission, "/refused")
    assert refused.status == 503 and shed == [QUEUE_FULL]
    app.release.set()
    assert (await held).status == (await queued).status == 200


async def test_a_request_that_waits_too_long_is_shed_at_the_queue_timeout() -> None:
    app, shed = HeldApp(), list[str]()
    admission = middleware(app, shed, max_concurrent=1, max_queued=4, timeout=0.2)
    held = asyncio.create_task(call(admission, "/held"))
    await settle()
    started = time.monotonic()
    refused = await call(admission, "/late")
    assert 0.19 <= time.monotonic() - started < 1.0
    assert refused.status == 503 and refused.headers["retry-after"] == "1"
    assert shed == [QUEUE_TIMEOUT]
    assert admission.queued == 0
    app.release.set()
    await held
    assert admission.in_flight == 0


async def test_a_cancelled_waiter_leaves_no_slot_behind() -> None:
    app, shed = HeldApp(), list[str]()
    admission = middleware(app, shed, max_concurrent=1, max_queued=2)
    held = asyncio.create_task(call(admission, "/held"))
    await settle()
    gone = asyncio.create_task(call(admission, "/gone"))
    await settle()
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    app.release.set()
    await held
    assert admission.in_flight == 0 and admission.queued == 0
    assert (await call(admission, "/next")).status == 200


async def test_other_scopes_pass_through() -> None:
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    admission = AdmissionControl(
        app, max_concurrent=1, max_queued=0, queue_timeout_s=1, on_shed=lambda reason: None
    )
    await admission({"type": "lifespan"}, never_receive, Sent())
    assert seen == ["lifespan"]


async def test_shed_requests_are_counted_by_reason() -> None:
    metrics = GatewayMetrics()
    app = HeldApp()
    admission = AdmissionControl(
        app,
        max_concurrent=1,
        max_queued=0,
        queue_timeout_s=1,
        on_shed=lambda reason: metrics.shed.labels(reason).inc(),
    )
    metrics.in_flight.set_function(lambda: admission.in_flight)
    held = asyncio.create_task(call(admission, "/held"))
    await settle()
    await call(admission, "/refused")
    await call(admission, "/refused")
    sample = metrics.registry.get_sample_value
    assert sample(f"{REQUESTS_SHED}_total", {"reason": QUEUE_FULL}) == 2
    assert sample("agora_requests_in_flight") == 1
    app.release.set()
    await held


def test_limits_must_make_sense() -> None:
    with pytest.raises(ValueError, match="max_concurrent"):
        AdmissionControl(
            HeldApp(), max_concurrent=0, max_queued=0, queue_timeout_s=1, on_shed=print
        )


async def test_large_bodies_take_turns_and_small_ones_pass() -> None:
    gate = LargeBodyGate(limit=1, threshold_bytes=100, timeout_s=0.05)
    async with gate.turn(1_000):
        async with gate.turn(10):  # small: no turn needed
            pass
        with pytest.raises(Overloaded):
            async with gate.turn(1_000):
                pass
    async with gate.turn(1_000):  # the turn was given back
        pass
