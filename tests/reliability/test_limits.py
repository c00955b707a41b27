"""Limits hold under load: idle connections and slow readers starve nobody; overload is shed early.

- Hundreds of connections that never send a byte, and a stream of clients
  that ask for a large answer and never read it (half again as many as the
  gateway has request slots, over the run), while the steady load runs: every request
  of the load is answered as a healthy gateway answers it. Each client that
  stops reading is cut after ``limits.write_timeout_s``, which frees its slot.
- A burst far beyond ``limits.max_concurrent`` against a slow upstream: the
  excess is shed with 503 ``overloaded`` and ``Retry-After`` before any work
  starts (no policy question, no decision record, nothing forwarded), and
  what was admitted is answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from pathlib import Path

import aiohttp
import pytest

from tests.integration.conftest import DemoModel, StartGateway
from tests.reliability.accounting import Figures, account, log_files, read_log
from tests.reliability.faults import DELAY, FaultProxy, rss_bytes
from tests.reliability.harness import (
    DEADLINE_S,
    RATE,
    assert_nothing_lost_or_let_through,
    observe,
    soak_sections,
)
from tests.reliability.load import CHAT, Load, Result
from tests.security.recording_upstream import RecordingUpstream
from tests.support import free_port

pytestmark = pytest.mark.timeout(90)

LOAD_S = 10.0
MAX_CONCURRENT = 24
IDLE = 300
SLOW_READERS_PER_S = 4.0
"""A new client that never reads every quarter second: 36 over the run, half again the slots."""
WRITE_TIMEOUT_S = 2.0
EMBED_INPUTS = 4000
"""An embeddings answer of about 700 KB: far more than a socket's buffers hold."""


def big_answer_request() -> bytes:
    body = json.dumps({"model": "demo-embed", "input": ["x"] * EMBED_INPUTS}).encode()
    head = (
        "POST /v1/embeddings HTTP/1.1\r\nHost: agora\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def slow_reader(port: int, held: list[socket.socket]) -> None:
    """Ask for a large answer and never read it (a tiny receive buffer, so it backs up at once)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    await asyncio.get_running_loop().sock_sendall(sock, big_answer_request())
    held.append(sock)


async def idle(port: int, held: list[socket.socket]) -> None:
    sock = socket.socket()
    sock.setblocking(False)
    with contextlib.suppress(OSError):
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        held.append(sock)


def test_idle_connections_and_slow_readers_do_not_starve_the_others(
    tmp_path: Path,
    start_gateway: StartGateway,
    recorder: RecordingUpstream,
    demo_model: DemoModel,
    ratified_digest: str,
) -> None:
    sections = soak_sections(recorder.url, tmp_path / "decisions.jsonl", ratified_digest)
    sections["upstreams"].insert(
        0, {"name": "model", "url": demo_model.url, "models": ["demo-embed"]}
    )
    sections["limits"] = {
        "max_concurrent": MAX_CONCURRENT,
        "max_queued": 8,
        "header_timeout_s": 2.0,
        "write_timeout_s": WRITE_TIMEOUT_S,
    }
    gateway = start_gateway(**sections)
    port = int(gateway.url.rsplit(":", 1)[1])
    recorder.take()
    held: list[socket.socket] = []

    async def run() -> tuple[list[Result], int, int]:
        load = Load(gateway.url, RATE, DEADLINE_S)
        loading = asyncio.create_task(load.run(LOAD_S))
        await asyncio.sleep(1.0)
        rss_before = rss_bytes(gateway.process.popen.pid)
        await asyncio.gather(*(idle(port, held) for _ in range(IDLE)))
        while load.now() < LOAD_S - 1.0:
            await slow_reader(port, held)
            await asyncio.sleep(1 / SLOW_READERS_PER_S)
        results = await loading
        await asyncio.sleep(WRITE_TIMEOUT_S)
        return results, rss_before, rss_bytes(gateway.process.popen.pid)

    try:
        results, rss_before, rss_after = asyncio.run(run())
    finally:
        for sock in held:
            sock.close()
    gateway.process.stop()
    figures = Figures(
        "idle-and-slow-readers",
        f"{IDLE} idle connections, then {SLOW_READERS_PER_S:.0f} new clients a second that "
        f"never read their 700 KB answer (max_concurrent {MAX_CONCURRENT})",
        f"{RATE:.0f} req/s, mixed", LOAD_S,
    )  # fmt: skip

    account(figures, results, [r.body for r in recorder.take().requests],
            read_log(log_files(gateway.decision_log)), ratified_digest)  # fmt: skip
    figures.seen = "every request of the load answered as expected"
    figures.recovery_s = 0.0
    figures.write()
    assert_nothing_lost_or_let_through(figures, results)
    wrong = [(r.kind.name, r.status, r.error) for r in results if not r.as_expected]
    assert not wrong, figures.answers
    assert rss_after <= rss_before * 1.5 + 64 * 2**20, (rss_before, rss_after)


BURST = 60
SHED_LIMITS = {"max_concurrent": 4, "max_queued": 4, "queue_timeout_ms": 300}
UPSTREAM_DELAY_S = 1.0


def test_a_burst_beyond_the_limit_is_shed_before_any_work_starts(
    tmp_path: Path,
    start_gateway: StartGateway,
    recorder: RecordingUpstream,
    ratified_digest: str,
) -> None:
    proxy = FaultProxy(
        int(recorder.url.rsplit(":", 1)[1]), delay_s=UPSTREAM_DELAY_S, port=free_port()
    )
    gateway = start_gateway(
        **soak_sections(proxy.url, tmp_path / "decisions.jsonl", ratified_digest,
                        limits=SHED_LIMITS)
    )  # fmt: skip
    recorder.take()

    async def run() -> tuple[list[Result], float, float]:
        await proxy.open()
        await proxy.set(DELAY)  # each admitted request holds its slot for a second
        try:
            async with aiohttp.ClientSession() as admin:
                before = await observe(admin, gateway.admin_url)
                results = await Load(gateway.url, BURST / 0.1, DEADLINE_S).run(0.1, [CHAT])
                after = await observe(admin, gateway.admin_url)
        finally:
            await proxy.close()
        assert before is not None and after is not None
        decided = "agora_decision_duration_seconds_count"
        shed = "agora_requests_shed_total"
        return (
            results,
            after.metric(decided) - before.metric(decided),
            after.metric(shed) - before.metric(shed),
        )

    results, decisions, shed_count = asyncio.run(run())
    gateway.process.stop()
    records = read_log(log_files(gateway.decision_log))
    figures = Figures(
        "burst-shed",
        f"a burst of {BURST} at once, max_concurrent 4 and 4 queued for 300 ms, "
        f"an upstream taking {UPSTREAM_DELAY_S:.0f} s",
        f"{BURST} at once", 0.1,
    )  # fmt: skip

    account(figures, results, [r.body for r in recorder.take().requests], records, ratified_digest)
    shed = [r for r in results if r.status == 503]
    figures.seen = (
        f"{len(shed)} answered 503 overloaded with Retry-After; "
        f"agora_requests_shed_total +{shed_count:.0f}"
    )
    figures.write()

    assert_nothing_lost_or_let_through(figures, results)
    assert {(r.status, r.error_type) for r in results} <= {(200, None), (503, "overloaded")}
    assert len(shed) >= BURST - 8 - 4, figures.answers  # the slots, the queue, and some slack
    assert all(r.retry_after == "1" for r in shed)
    assert shed_count == len(shed)
    # Before any work: no policy question, no decision record, nothing forwarded.
    assert decisions == BURST - len(shed)
    assert figures.forwarded == BURST - len(shed)
    judged = {json.dumps(r.get("body")) for r in records if r.get("event") == "decision"}
    assert len(judged) == BURST - len(shed)
    assert not any(r.case in body for r in shed for body in judged)
