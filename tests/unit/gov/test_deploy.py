"""Deployment files, governance parameters and the shipped contract artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from web3 import Web3

from gateway.chain.artifacts import CONTRACT_NAMES, load_artifact
from gateway.chain.tokens import format_tokens
from gateway.chain.voting import VotingModel
from gateway.exceptions import ConfigError
from gateway.gov.deploy import Deployment, GovernanceParams

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


def test_a_deployment_file_from_before_voting_models_is_token_voting() -> None:
    """Files written before ``voting`` existed keep loading, as token voting."""
    text = json.dumps(
        {
            "chain_id": 1337,
            "block_number": 3,
            **{k: ADDRESS for k in ("token", "timelock", "governor", "registry", "deployer")},
            "params": {"voting_delay": 1, "voting_period": 5},
        }
    )
    deployment = Deployment.from_json(text, "old.json")
    assert deployment.voting is VotingModel.TOKEN
    assert '"voting": "token"' in deployment.to_json()


def test_weights_are_written_in_each_model_s_units() -> None:
    assert VotingModel.TOKEN.format_weight(1_500_000_000_000_000_000) == "1.5 AGORA"
    assert VotingModel.MEMBERSHIP.format_weight(1) == "1 vote"
    assert VotingModel.MEMBERSHIP.format_weight(3) == "3 votes"
    assert VotingModel.QUADRATIC.format_weight(10**12) == "1000 √AGORA"
    assert VotingModel.QUADRATIC.weight(4 * 10**18) == 2 * 10**9
    assert VotingModel.QUADRATIC.threshold(100) == 10 * 10**9
    assert VotingModel.MEMBERSHIP.threshold(1) == 1
    assert VotingModel.TOKEN.threshold(100) == 100 * 10**18


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
