"""Usage budgets across replicas: two gateways share one real Redis.

A caller over budget on one gateway is refused on the other; tokens counted
from whole and streamed answers are the stand-in model's own ``usage``; with
Redis stopped, a gateway fails closed (nothing forwarded) or counts locally,
as configured. The default policy's budgets apply (anonymous: 20 requests a
minute).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import DemoModel, RunningGateway, StartGateway
from tests.integration.redis_server import RedisServer
from tests.support import Signer

CHAT = {"model": "demo-small", "messages": [{"role": "user", "content": "count my words please"}]}
ANONYMOUS_PER_MINUTE = 20


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    yield server
    server.stop()


def replicas(
    start_gateway: StartGateway, server: RedisServer, count: int = 2
) -> list[RunningGateway]:
    """Gateways counting in one Redis, under a key prefix of their own."""
    config = {"redis_url": server.url, "key_prefix": f"test:{uuid.uuid4().hex[:8]}:"}
    return [start_gateway(usage=config) for _ in range(count)]


def fresh_minute(needed_s: float = 20) -> None:
    """Wait, if need be, so that the next ``needed_s`` seconds fall in one minute window."""
    left = 60 - time.time() % 60
    if left < needed_s:
        time.sleep(left + 0.1)


def logged(gateway: RunningGateway, decision_id: str) -> dict[str, Any]:
    """The decision record of ``decision_id``, once the log has written it."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for line in gateway.decision_log.read_text().splitlines():
            record: dict[str, Any] = json.loads(line)
            if record["decision_id"] == decision_id and record.get("event") != "outcome":
                return record
        time.sleep(0.05)
    raise AssertionError(f"decision {decision_id} was not logged")


def test_a_caller_over_budget_on_one_replica_is_refused_on_the_other(
    start_gateway: StartGateway, redis_server: RedisServer, demo_model: DemoModel
) -> None:
    first, second = replicas(start_gateway, redis_server)
    fresh_minute()
    before = demo_model.stats()["requests"]
    for i in range(ANONYMOUS_PER_MINUTE):
        with (first if i % 2 else second).client() as client:
            assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
    for gateway in (first, second):
        with gateway.client() as client:
            refused = client.post("/v1/chat/completions", json=CHAT)
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        error = refused.json()["error"]
        assert (error["type"], error["code"]) == ("rate_limit_exceeded", "rate_limit_exceeded")
        assert error["reasons"] == ["the budget of 20 requests per minute is spent for this caller"]
        last = logged(gateway, refused.headers["x-agora-decision-id"])
        assert (last["allow"], last["status"], last["reasons"]) == (False, 429, error["reasons"])
    assert demo_model.stats()["requests"] == before + ANONYMOUS_PER_MINUTE
    # Refused requests are not counted: listing models is never limited, and 429s do not add up.
    with first.client() as client:
        assert client.get("/v1/models").status_code == 200
    with second.admin() as admin:
        metrics = admin.get("/metrics").text
    assert 'agora_decisions_total{api="chat.completions",model="demo-small",' in metrics
    assert 'outcome="denied"' in metrics


def sse_events(response: httpx.Response) -> list[str]:
    return [line[6:] for line in response.iter_lines() if line.startswith("data: ")]


def test_tokens_of_whole_and_streamed_answers_are_the_models_usage(
    start_gateway: StartGateway, redis_server: RedisServer, signer: Signer
) -> None:
    first, second = replicas(start_gateway, redis_server)
    sub = f"tokens-{uuid.uuid4().hex[:8]}"
    token = signer.token(sub=sub, groups=["members"])
    with first.client(token) as client:
        whole = client.post("/v1/chat/completions", json=CHAT)
    assert whole.status_code == 200
    usage = whole.json()["usage"]
    with (
        second.client(token) as client,
        client.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}) as streamed,
    ):
        events = sse_events(streamed)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    # The usage chunk the gateway asked for is not passed on (the others say "usage": null).
    assert chunks and all(c["choices"] and c.get("usage") is None for c in chunks)
    with (
        first.client(token) as client,
        client.stream(
            "POST",
            "/v1/chat/completions",
            json={**CHAT, "stream": True, "stream_options": {"include_usage": True}},
        ) as asked,
    ):
        assert asked.status_code == 200, asked.read()
        asked_events = [json.loads(e) for e in sse_events(asked)[:-1]]
    assert asked_events[-1]["choices"] == [] and asked_events[-1]["usage"] == usage

    expected = {
        "requests": "3",
        "prompt": str(3 * usage["prompt_tokens"]),
        "completion": str(3 * usage["completion_tokens"]),
        "total": str(3 * usage["total_tokens"]),
    }
    store = redis_server.client()
    prefix = first.config["usage"]["key_prefix"]
    (key,) = store.keys(f"{prefix}day:*:sub:{sub}")
    deadline = time.monotonic() + 10
    while store.hgetall(key) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.hgetall(key) == expected
    (group_key,) = store.keys(f"{prefix}minute:*:group:members")
    assert store.hget(group_key, "total") == expected["total"]
    assert 0 < store.ttl(key) <= 86_400 + 300


def test_an_answer_without_usage_counts_an_estimate_and_says_so(
    start_gateway: StartGateway, redis_server: RedisServer, signer: Signer
) -> None:
    (gateway,) = replicas(start_gateway, redis_server, count=1)
    sub = f"cut-{uuid.uuid4().hex[:8]}"
    with (
        gateway.client(signer.token(sub=sub)) as client,
        client.stream(
            "POST", "/v1/chat/completions", json={**CHAT, "stream": True},
            headers={"X-Demo-Fault": "cut"},
        ) as response,
        pytest.raises(httpx.RemoteProtocolError),
    ):  # fmt: skip
        for _ in response.iter_bytes():
            pass
    store = redis_server.client()
    (key,) = store.keys(f"{gateway.config['usage']['key_prefix']}day:*:sub:{sub}")
    deadline = time.monotonic() + 10
    while store.hget(key, "estimated") != "1" and time.monotonic() < deadline:
        time.sleep(0.05)
    counts = store.hgetall(key)
    assert counts["estimated"] == "1"
    assert int(counts["prompt"]) > 0 and int(counts["completion"]) > 0  # body and streamed text
    with gateway.admin() as admin:
        metrics = admin.get("/metrics").text
    assert 'agora_usage_tokens_total{kind="prompt",source="estimated"}' in metrics


def test_redis_stopped_mid_run_fails_closed_or_counts_locally_as_configured(
    start_gateway: StartGateway, redis_server: RedisServer, demo_model: DemoModel
) -> None:
    closed = start_gateway(usage={"redis_url": redis_server.url, "key_prefix": "closed:"})
    local = start_gateway(
        usage={"redis_url": redis_server.url, "key_prefix": "local:", "on_unavailable": "local"}
    )
    fresh_minute()
    for gateway in (closed, local):
        with gateway.client() as client:
            assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
    redis_server.stop()

    before = demo_model.stats()["requests"]
    with closed.client() as client:
        refused = client.post("/v1/chat/completions", json=CHAT)
    assert refused.status_code == 503
    error = refused.json()["error"]
    assert error["code"] == "usage_unavailable"
    assert "usage counters (redis redis://127.0.0.1" in error["message"]
    assert "the request was not forwarded" in error["message"]
    assert demo_model.stats()["requests"] == before  # nothing forwarded unjudged
    assert logged(closed, refused.headers["x-agora-decision-id"])["status"] == 503

    with local.client() as client:
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
    assert demo_model.stats()["requests"] == before + 1

    ready = closed.ready()
    assert ready["ready"] is False
    assert ready["components"]["usage"]["state"] == "error"
    assert local.ready()["components"]["usage"]["state"] == "warn"
    with closed.admin() as admin:
        metrics = admin.get("/metrics").text
    assert 'agora_usage_unavailable_total{action="refused",operation="charge"} 1.0' in metrics

    redis_server.start()
    deadline = time.monotonic() + 15
    status = 0
    while status != 200 and time.monotonic() < deadline:
        with closed.client() as client:
            status = client.post("/v1/chat/completions", json=CHAT).status_code
        time.sleep(0.2)
    assert status == 200
