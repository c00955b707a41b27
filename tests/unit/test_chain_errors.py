"""Chain failures become ChainError with messages a person can act on; digests and keys."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from eth_account import Account
from eth_utils.crypto import keccak
from web3.exceptions import ContractCustomError

from gateway.chain.digests import from_bytes32, to_bytes32
from gateway.chain.errors import check_chain_id, parse_address, require_contract
from gateway.chain.rpc import connect
from gateway.exceptions import ChainError, ConfigError
from gateway.gov.environment import KEYSTORE_PASSWORD_ENV, PRIVATE_KEY_ENV
from gateway.gov.errors import defeated_reason, describe_revert
from gateway.gov.keys import load_account
from tests.embedded_chain import EmbeddedChain

DIGEST = "sha256:" + "0123456789abcdef" * 4
KEY = "0x" + "11" * 32


def test_digests_round_trip_and_reject_malformed_values() -> None:
    assert from_bytes32(to_bytes32(DIGEST)) == DIGEST
    assert to_bytes32(DIGEST) == bytes.fromhex("0123456789abcdef" * 4)
    for bad in ("0123", "sha256:" + "AB" * 32, "sha512:" + "ab" * 32, "sha256:" + "ab" * 31):
        with pytest.raises(ChainError, match="is not a bundle digest"):
            to_bytes32(bad)
    with pytest.raises(ChainError, match="expected 32 bytes"):
        from_bytes32(b"\x01")


def custom_error(signature: str, encoded_args: bytes = b"") -> ContractCustomError:
    data = "0x" + (keccak(text=signature)[:4] + encoded_args).hex()
    return ContractCustomError(data, data=data)


def test_custom_errors_of_the_contracts_are_decoded_into_sentences() -> None:
    caller = "0x" + "00" * 12 + "ab" * 20
    exc = custom_error("NotTimelock(address)", bytes.fromhex(caller[2:]))
    message = describe_revert(exc)
    assert message.startswith("only the governance timelock may ratify a policy")
    assert "0xABaBaBaBABabABabAbAbABAbABabababaBaBABaB" in message  # checksummed
    state = custom_error(
        "GovernorUnexpectedProposalState(uint256,uint8,bytes32)",
        (7).to_bytes(32, "big") + (3).to_bytes(32, "big") + (1 << 4).to_bytes(32, "big"),
    )
    assert describe_revert(state) == "proposal 7 is Defeated, this needs it Succeeded"
    assert "unknown error 0xdeadbeef" in describe_revert(ContractCustomError("x", "0xdeadbeef"))


def test_a_defeat_is_explained_by_quorum_or_by_the_count() -> None:
    unit = 10**18
    assert "below quorum (30 AGORA of the 40 AGORA needed voted" in defeated_reason(
        1, 20 * unit, 0, 10 * unit, 40 * unit
    )
    assert "in favour (50 AGORA for, 60.5 AGORA against)" in defeated_reason(
        1, 50 * unit, 60_500_000_000_000_000_000, 0, 40 * unit
    )


def test_wrong_network_and_missing_contracts_are_named() -> None:
    w3 = EmbeddedChain().w3
    actual = check_chain_id(w3, None)
    assert check_chain_id(w3, actual) == actual
    with pytest.raises(ChainError, match=f"wrong network: the node reports chain id {actual}"):
        check_chain_id(w3, 1)
    with pytest.raises(
        ChainError, match="no contract at 0x000000000000000000000000000000000000dEaD"
    ):
        require_contract(w3, parse_address("0x" + "00" * 18 + "dead", "x"), "PolicyRegistry")
    with pytest.raises(ChainError, match="registry address 'nope' is not an Ethereum address"):
        parse_address("nope", "registry address")


def test_an_unreachable_node_is_reported_as_such() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ChainError, match="JSON-RPC endpoint is unreachable \\(Connection refused"):
        connect(f"http://127.0.0.1:{port}", timeout_s=2)
    with pytest.raises(ChainError, match="must start with http"):
        connect("ws://127.0.0.1:1")


def test_keys_come_from_the_environment_or_a_keystore(tmp_path: Path) -> None:
    expected = Account.from_key(KEY).address
    assert load_account(environ={PRIVATE_KEY_ENV: KEY}).address == expected
    with pytest.raises(ConfigError, match=f"no signing key: set {PRIVATE_KEY_ENV}"):
        load_account(environ={})
    with pytest.raises(ConfigError, match="is not a valid private key"):
        load_account(environ={PRIVATE_KEY_ENV: "0x1234"})

    keystore = tmp_path / "key.json"
    keystore.write_text(json.dumps(Account.encrypt(bytes.fromhex(KEY[2:]), "s3cret", iterations=2)))
    env = {KEYSTORE_PASSWORD_ENV: "s3cret", PRIVATE_KEY_ENV: "0x" + "22" * 32}
    assert load_account(keystore, env).address == expected  # the keystore wins
    with pytest.raises(ConfigError, match="cannot be decrypted"):
        load_account(keystore, {KEYSTORE_PASSWORD_ENV: "wrong"})
    with pytest.raises(ConfigError, match="cannot be read"):
        load_account(tmp_path / "missing.json", env)
