"""The gateway enforcing what a dev chain (anvil) ratified: the quickstart's setup, by hand."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from demo.devchain import Anvil
from demo.quickstart import start_governance
from gateway.pinning.bundle import load_bundle
from tests.integration.conftest import StartGateway
from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]
CHAT = {"model": "demo-small", "messages": [{"role": "user", "content": "Hello"}]}


@pytest.fixture(scope="module")
def anvil(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Anvil]:
    chain = Anvil.start(free_port(), tmp_path_factory.mktemp("anvil"))
    try:
        yield chain
    finally:
        chain.stop()


def test_the_gateway_enforces_the_version_ratified_on_anvil(
    start_gateway: StartGateway, anvil: Anvil
) -> None:
    deployment, ratified = start_governance(anvil, ROOT / "policies")
    gateway = start_gateway(
        governance={
            "rpc_urls": [anvil.url],
            "registry": deployment.registry,
            "chain_id": deployment.chain_id,
            "confirmations": 0,
            "poll_s": 0.5,
        },
    )
    ready = gateway.ready()
    with gateway.client() as client:
        response = client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 200
    assert response.headers["x-agora-policy-version"] == "1"
    assert response.headers["x-agora-policy-digest"] == load_bundle(ROOT / "policies").digest
    assert ready["policy"]["ratified_block"] == ratified.block_number
    assert ready["components"]["chain"]["state"] == "ok"
