"""The ``governance`` section: the gateway reads a chain over JSON-RPC, and nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gateway.config import Settings, load_settings
from gateway.exceptions import ConfigError

REGISTRY = "0x" + "11" * 20


def settings_with(tmp_path: Path, governance: dict[str, object]) -> Settings:
    path = tmp_path / "agora.yaml"
    path.write_text(yaml.safe_dump({"auth": {"required": False}, "governance": governance}))
    return load_settings(path, {})


def test_chain_rpc_is_still_accepted_and_is_the_default(tmp_path: Path) -> None:
    nodes = {"rpc_urls": ["http://127.0.0.1:8545"], "registry": REGISTRY}
    for section in ({"chain": "rpc", **nodes}, nodes):
        governance = settings_with(tmp_path, section).governance
        assert governance is not None and governance.chain == "rpc"


def test_chain_embedded_is_an_error_that_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        settings_with(tmp_path, {"chain": "embedded"})
    message = str(refused.value)
    assert "governance.chain: " in message
    assert "embedded was removed" in message and "anvil" in message
    assert "governance.rpc_urls" in message


def test_governance_needs_nodes_and_a_registry(tmp_path: Path) -> None:
    for section in ({}, {"rpc_urls": ["http://127.0.0.1:8545"]}, {"registry": REGISTRY}):
        with pytest.raises(ConfigError, match="governance needs rpc_urls and the registry"):
            settings_with(tmp_path, section)
