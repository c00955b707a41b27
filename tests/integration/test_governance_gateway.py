"""The gateway enforcing what an embedded chain ratified (the quickstart's setup)."""

from __future__ import annotations

from pathlib import Path

from gateway.pinning.bundle import load_bundle
from tests.integration.conftest import StartGateway

ROOT = Path(__file__).resolve().parents[2]
CHAT = {"model": "demo-small", "messages": [{"role": "user", "content": "Hello"}]}


def test_embedded_chain_ratifies_the_default_policy(start_gateway: StartGateway) -> None:
    gateway = start_gateway(
        policy={"bundle": str(ROOT / "policies"), "opa": "managed", "timeout_ms": 1000},
        governance={"chain": "embedded", "confirmations": 0, "poll_s": 0.5},
    )
    ready = gateway.ready()
    with gateway.client() as client:
        response = client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 200
    assert response.headers["x-agora-policy-version"] == "1"
    assert response.headers["x-agora-policy-digest"] == load_bundle(ROOT / "policies").digest
    assert ready["policy"]["ratified_block"] > 0
    assert ready["components"]["chain"]["state"] == "ok"
