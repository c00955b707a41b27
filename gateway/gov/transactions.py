"""Sending transactions: signed locally by one account, then awaited until mined.

Signing locally works the same against geth, a hosted provider or eth-tester,
and no node ever holds the key. Every call is simulated first (by gas
estimation, or by ``eth_call`` when a fixed gas limit is set), so a revert is
reported with its decoded reason before anything is broadcast.
"""

from __future__ import annotations

from typing import Any, cast

from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from web3 import Web3
from web3.contract.contract import ContractConstructor, ContractFunction
from web3.types import TxParams, TxReceipt

from gateway.chain.artifacts import Artifact
from gateway.exceptions import ChainError
from gateway.gov.errors import gov_errors

DEFAULT_RECEIPT_TIMEOUT_S = 120.0


class Sender:
    """Signs and sends transactions from one account and waits for their receipts."""

    def __init__(
        self,
        w3: Web3,
        account: LocalAccount,
        receipt_timeout_s: float = DEFAULT_RECEIPT_TIMEOUT_S,
        gas_limit: int | None = None,
    ) -> None:
        """``gas_limit`` skips gas estimation, which py-evm does slowly (a binary search
        of dozens of executions); real nodes estimate natively, so leave it ``None`` there."""
        self.w3 = w3
        self.account = account
        self.receipt_timeout_s = receipt_timeout_s
        self.gas_limit = gas_limit

    @property
    def address(self) -> ChecksumAddress:
        return self.account.address

    def send(self, call: ContractFunction | ContractConstructor, action: str) -> TxReceipt:
        """Simulate, sign, send and await ``call``; ``ChainError`` naming ``action`` on failure."""
        with gov_errors(action):
            tx = self._base_tx()
            if self.gas_limit is None:
                tx = call.build_transaction(tx)
            else:
                if isinstance(call, ContractFunction):
                    call.call(tx)
                tx = call.build_transaction({**tx, "gas": self.gas_limit})
            signed = self.account.sign_transaction(cast(dict[str, Any], tx))
            tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
            receipt = self.w3.eth.wait_for_transaction_receipt(
                tx_hash, timeout=self.receipt_timeout_s, poll_latency=0.1
            )
        if receipt["status"] != 1:
            raise ChainError(f"{action}: transaction {tx_hash.to_0x_hex()} reverted")
        return receipt

    def deploy(self, artifact: Artifact, *args: Any) -> ChecksumAddress:
        """Deploy ``artifact`` with constructor ``args``; the new contract's address."""
        contract = self.w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
        receipt = self.send(contract.constructor(*args), f"deploying {artifact.name}")
        address = receipt["contractAddress"]
        if address is None:
            raise ChainError(f"deploying {artifact.name}: the receipt names no contract address")
        return address

    def _base_tx(self) -> TxParams:
        return {
            "from": self.address,
            "nonce": self.w3.eth.get_transaction_count(self.address, "pending"),
            "chainId": self.w3.eth.chain_id,
        }
