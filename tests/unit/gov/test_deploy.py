"""Deployment files, governance parameters and the shipped contract artifacts."""

from __future__ import annotations

from pathlib import Path

import pytest
from web3 import Web3

from gateway.chain.artifacts import CONTRACT_NAMES, load_artifact
from gateway.exceptions import ConfigError
from gateway.gov.deploy import Deployment, GovernanceParams
from gateway.gov.tokens import format_tokens

ROOT = Path(__file__).resolve().parents[3]
ADDRESS = Web3.to_checksum_address("0x" + "12" * 20)


def test_the_packaged_artifacts_are_the_committed_ones() -> None:
    for name in CONTRACT_NAMES:
        packaged = ROOT / "gateway" / "chain" / "artifacts" / f"{name}.json"
        assert (
            packaged.read_bytes()
            == (ROOT / "contracts" / "artifacts" / f"{name}.json").read_bytes()
        )
        artifact = load_artifact(name)
        assert artifact.bytecode.startswith("0x") and len(artifact.bytecode) > 1000
        assert any(entry.get("type") == "constructor" for entry in artifact.abi)


def test_a_deployment_file_round_trips_and_names_its_problems(tmp_path: Path) -> None:
    deployment = Deployment(
        chain_id=1337,
        token=ADDRESS,
        timelock=ADDRESS,
        governor=ADDRESS,
        registry=ADDRESS,
        deployer=ADDRESS,
        block_number=3,
        params=GovernanceParams(voting_delay=1, voting_period=5),
    )
    path = tmp_path / "deployment.json"
    deployment.save(path)
    assert Deployment.load(path) == deployment
    path.write_text(deployment.to_json().replace('"governor"', '"gouvernor"'))
    with pytest.raises(
        ConfigError, match=f"deployment file {path} is invalid: KeyError\\('governor'"
    ):
        Deployment.load(path)
    with pytest.raises(ConfigError, match="cannot be read"):
        Deployment.load(tmp_path / "absent.json")


@pytest.mark.parametrize(
    "bad",
    [
        {"voting_period": 0},
        {"quorum_percent": 101},
        {"voting_delay": -1},
        {"proposal_threshold": 2, "initial_supply": 1},
    ],
)
def test_out_of_range_parameters_are_refused(bad: dict[str, int]) -> None:
    with pytest.raises(ConfigError, match=f"governance parameter {next(iter(bad))}="):
        GovernanceParams(**bad)


def test_token_amounts_are_shown_in_whole_tokens() -> None:
    assert format_tokens(1_500_000_000_000_000_000) == "1.5"
    assert format_tokens(4_000 * 10**18) == "4000"
    assert format_tokens(0) == "0"
