"""Every decision becomes evidence: counts, drains, crashes, and the published figures agree."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.decisionlog import stats, verify
from tests.integration.conftest import RunningGateway, StartGateway
from tests.support import TOOL_BIN, Signer, run_agora, wait_for_http

DECISION_STATUSES = {200, 403, 502, 503, 504}


def request_mix(index: int, member_token: str) -> tuple[dict[str, object], dict[str, str]]:
    """Allowed, denied by policy, and allowed-then-upstream-failure requests, interleaved."""
    kind = index % 4
    messages = [{"role": "user", "content": f"request {index}"}]
    if kind == 0:
        return {"model": "demo-large", "messages": messages}, {}  # denied: anonymous
    if kind == 1:
        headers = {"Authorization": f"Bearer {member_token}"}
        return {"model": "dead-model", "messages": messages}, headers  # not a member of admins
    return {"model": "demo-small", "messages": messages}, {}


async def fire(url: str, count: int, concurrency: int, token: str) -> Counter[int]:
    """Send ``count`` requests; the statuses of the responses that came back."""
    statuses: Counter[int] = Counter()
    semaphore = asyncio.Semaphore(concurrency)

    async def one(client: httpx.AsyncClient, index: int) -> None:
        body, headers = request_mix(index, token)
        async with semaphore:
            try:
                response = await client.post("/v1/chat/completions", json=body, headers=headers)
            except httpx.HTTPError:
                return  # the gateway went away before answering: no decision was made
            statuses[response.status_code] += 1

    async with httpx.AsyncClient(base_url=url, timeout=20) as client:
        await asyncio.gather(*(one(client, i) for i in range(count)))
    return statuses


def wait_drained(gateway: RunningGateway) -> dict[str, object]:
    deadline = time.monotonic() + 10
    while True:
        published: dict[str, object] = httpx.get(f"{gateway.url}/transparency").json()
        if published["queue_depth"] == 0 or time.monotonic() > deadline:
            return published
        time.sleep(0.05)


def test_sigterm_loses_no_decision_and_the_published_counts_match_the_log(
    start_gateway: StartGateway, signer: Signer
) -> None:
    gateway = start_gateway()
    token = signer.token(groups=["members"])
    statuses = asyncio.run(fire(gateway.url, 200, 32, token))
    assert statuses[200] and statuses[403]

    published = wait_drained(gateway)
    stats = run_agora("log", "stats", str(gateway.decision_log), "--json")
    assert stats.returncode == 0, stats.stderr
    assert published["log"] == json.loads(stats.stdout)

    # Now a burst with SIGTERM in the middle of it: in-flight requests finish and are logged.
    async def burst_then_terminate() -> Counter[int]:
        task = asyncio.create_task(fire(gateway.url, 300, 32, token))
        await asyncio.sleep(0.3)
        gateway.process.popen.send_signal(signal.SIGTERM)
        return await task

    statuses += asyncio.run(burst_then_terminate())
    # uvicorn drains, then re-raises the signal it caught: a clean exit by SIGTERM.
    assert gateway.process.popen.wait(30) in (0, -signal.SIGTERM)
    decisions = sum(n for status, n in statuses.items() if status in DECISION_STATUSES)
    verified = run_agora("log", "verify", str(gateway.decision_log))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    counted = run_agora("log", "stats", str(gateway.decision_log), "--json")
    totals = json.loads(counted.stdout)["totals"]
    assert totals["total"] == decisions
    assert totals["incomplete"] == 0  # every allowed request that was answered has its outcome


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Connections reset when the gateway is killed: expected here, not worth a traceback."""


class RecordingUpstream:
    """A stand-in model on loopback that remembers the body of every request it receives."""

    def __init__(self, delay_s: float) -> None:
        self.received: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server = _QuietServer(("127.0.0.1", 0), self._handler(delay_s))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self, delay_s: float) -> Callable[..., BaseHTTPRequestHandler]:
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with upstream._lock:
                    upstream.received.append(body)
                time.sleep(delay_s)  # keep requests in flight, as a model does
                answer = json.dumps(
                    {"object": "chat.completion", "model": body.get("model"), "choices": [
                        {"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "ok"}}]}
                ).encode()  # fmt: skip
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture
def recording_upstream() -> Iterator[RecordingUpstream]:
    upstream = RecordingUpstream(delay_s=0.05)
    yield upstream
    upstream.close()


def whole_records(path: Path) -> list[dict[str, Any]]:
    """The records of the complete lines of a log (a SIGKILL may leave the last one torn)."""
    data = path.read_bytes()
    return [json.loads(line) for line in data[: data.rfind(b"\n") + 1].splitlines()]


def test_sigkill_under_load_leaves_no_forwarded_request_out_of_the_log(
    start_gateway: StartGateway, recording_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    """With durability: record, every request the upstream received has its allow decision
    on disk: the decision is fsynced before the request is forwarded, whatever kills the
    gateway. Requests cut by the kill have no outcome record and count as incomplete."""
    gateway = start_gateway(
        upstreams=[{"name": "recorder", "url": recording_upstream.url, "models": ["*"]}],
        decision_log={"durability": "record", "include_body": True},
    )
    answered: Counter[int] = Counter()

    async def one(client: httpx.AsyncClient, index: int, semaphore: asyncio.Semaphore) -> None:
        body = {"model": "demo-small", "messages": [{"role": "user", "content": f"req {index}"}]}
        async with semaphore:
            try:
                response = await client.post("/v1/chat/completions", json=body)
            except httpx.HTTPError:
                return  # the gateway was killed before answering
            answered[response.status_code] += 1

    async def load_then_kill() -> None:
        semaphore = asyncio.Semaphore(32)
        async with httpx.AsyncClient(base_url=gateway.url, timeout=20) as client:
            load = asyncio.gather(*(one(client, i, semaphore) for i in range(3000)))
            await asyncio.sleep(1.5)
            gateway.process.popen.send_signal(signal.SIGKILL)
            await load

    asyncio.run(load_then_kill())
    gateway.process.popen.wait(10)
    received = [body["messages"][0]["content"] for body in recording_upstream.received]
    assert answered[200] >= 32, f"the load did not get going: {answered}"
    assert sum(answered.values()) < 3000, "the gateway was killed after the load, not during it"

    records = whole_records(gateway.decision_log)
    allowed = {
        r["body"]["messages"][0]["content"]
        for r in records
        if r.get("event", "decision") == "decision" and r["allow"] is True
    }
    missing = [content for content in received if content not in allowed]
    assert not missing, f"{len(missing)} of {len(received)} forwarded requests are not logged"
    assert len(received) == len(set(received))

    # The complete lines form a valid chain; at most an unterminated last line is torn.
    result = verify([gateway.decision_log])
    assert result.ok or (result.first_bad is not None and result.first_bad.torn), result
    whole = tmp_path / "whole.jsonl"
    data = gateway.decision_log.read_bytes()
    whole.write_bytes(data[: data.rfind(b"\n") + 1])
    totals = stats([whole])["totals"]
    assert totals["allowed"] == len(allowed)
    assert totals["allowed"] == (
        totals["forwarded_ok"] + totals["upstream_failed"] + totals["incomplete"]
    )


def test_sigkill_mid_write_recovers_and_the_chain_continues(
    start_gateway: StartGateway, signer: Signer
) -> None:
    gateway = start_gateway(decision_log={"durability": "interval"})
    log_path = gateway.decision_log
    token = signer.token(groups=["members"])

    async def load_then_kill() -> None:
        task = asyncio.create_task(fire(gateway.url, 400, 32, token))
        await asyncio.sleep(0.5)
        gateway.process.popen.send_signal(signal.SIGKILL)
        await task

    asyncio.run(load_then_kill())
    gateway.process.popen.wait(10)
    with log_path.open("ab") as log:  # a crash in the middle of a write leaves half a line
        log.write(b'{"allow":true,"api":"chat.completions","caller_sub_hash":null,"dec')
    torn = run_agora("log", "verify", str(log_path))
    assert torn.returncode == 1 and "FAILED" in torn.stdout

    restarted = start_gateway(
        listen=gateway.config["listen"],
        decision_log={"path": str(log_path), "durability": "batch"},
    )
    after = asyncio.run(fire(restarted.url, 40, 8, token))
    assert sum(after.values()) == 40
    wait_drained(restarted)
    restarted.process.stop()
    verified = run_agora("log", "verify", str(log_path))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert list(log_path.parent.glob(f"{log_path.name}.torn-*")), "the torn tail was not kept"


def test_metrics_pass_promtool(gateway: RunningGateway) -> None:
    promtool = shutil.which("promtool") or shutil.which(str(TOOL_BIN / "promtool"))
    if promtool is None:
        if os.environ.get("AGORA_SKIP_PROMTOOL") == "1":
            pytest.skip("promtool is not installed and AGORA_SKIP_PROMTOOL=1")
        pytest.fail("promtool is not installed: run scripts/install-tools.sh promtool")
    with gateway.client() as client, gateway.admin() as admin:
        client.post("/v1/chat/completions", json={"model": "demo-small", "messages": []})
        exposition = admin.get("/metrics").content
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=exposition, capture_output=True, check=False
    )
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()
    for name in (
        b"agora_decisions_total",
        b"agora_decision_duration_seconds_bucket",
        b"agora_upstream_duration_seconds_bucket",
        b"agora_policy_active_version",
        b"agora_policy_active_info",
        b"agora_decision_log_queue_depth",
        b"agora_decision_log_write_errors_total",
    ):
        assert name in exposition


def test_transparency_names_the_policy_in_force(gateway: RunningGateway) -> None:
    wait_for_http(f"{gateway.url}/readyz")
    published = httpx.get(f"{gateway.url}/transparency").json()
    assert published["policy"]["version"] == 1
    assert published["policy"]["digest"].startswith("sha256:")
    assert published["log_verified_at_start"] is True


def test_tampered_log_is_caught(tmp_path: Path, gateway: RunningGateway) -> None:
    with gateway.client() as client:
        for _ in range(3):
            client.post(
                "/v1/chat/completions",
                json={"model": "demo-small", "messages": [{"role": "user", "content": "hi"}]},
            )
    wait_drained(gateway)
    lines = gateway.decision_log.read_bytes().splitlines(keepends=True)
    completed = [json.loads(line) for line in lines if b'"status":200' in line]
    assert completed and all(record["reasons"] == [] for record in completed)
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_bytes(b"".join(lines).replace(b'"allow":true', b'"allow":false', 1))
    result = run_agora("log", "verify", str(tampered))
    assert result.returncode == 1
    assert "tampered.jsonl:1" in result.stdout
