"""Every decision becomes evidence: counts, drains, crashes, and the published figures agree."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

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
    assert f"OK: {decisions} records" in verified.stdout


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
