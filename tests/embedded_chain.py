"""An in-process Ethereum chain (eth-tester on py-evm) for the fast tests of the contracts,
``agora gov``'s library and the gateway's registry reader.

It mines one block per transaction, and on demand: :meth:`EmbeddedChain.mine`
skips voting delays and periods (counted in blocks) and :meth:`EmbeddedChain.advance_time`
skips the timelock delay (counted in seconds), so a whole governance cycle runs
in about a second. It is not thread-safe: use it from one thread at a time.
Test-only: py-evm raises the interpreter's recursion limit to 100,000 when imported.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from eth_abi.abi import encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_tester import EthereumTester, PyEVMBackend
from eth_tester.backends.pyevm.main import get_default_account_keys
from eth_tester.exceptions import TransactionFailed, ValidationError
from web3 import EthereumTesterProvider, Web3
from web3.types import RPCEndpoint, RPCError, RPCResponse

from demo.devchain import ratify_by_vote
from gateway.chain.registry import Ratification
from gateway.exceptions import ChainError
from gateway.gov.deploy import Deployment, GovernanceParams, deploy_governance
from gateway.gov.governance import Governance
from gateway.gov.transactions import Sender
from gateway.pinning.bundle import load_bundle

ACCOUNT_COUNT = 10
GAS_LIMIT = 10_000_000  # enough for any Agora transaction, deployments included
EXECUTION_REVERTED = 3  # geth's and anvil's JSON-RPC error code for a revert
_ERROR_STRING_SELECTOR = bytes.fromhex("08c379a0")  # Error(string)


class NodeLikeProvider(EthereumTesterProvider):
    """eth-tester answering failures as a JSON-RPC node does, so that web3 raises what it
    raises against geth or anvil: a revert is error 3 with the revert data, a refused
    transaction an error with the node's message."""

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        try:
            return super().make_request(method, params)
        except TransactionFailed as exc:
            return {"jsonrpc": "2.0", "id": 0, "error": revert_error(exc)}
        except ValidationError as exc:
            return {"jsonrpc": "2.0", "id": 0, "error": {"code": -32000, "message": str(exc)}}


def revert_error(exc: TransactionFailed) -> RPCError:
    """A revert as a node reports it. web3's eth-tester provider re-raises a revert as
    ``execution reverted: <reason>``: the ``Error(string)`` text, or the repr of the raw
    revert data (``b'...'``) for custom errors."""
    text = str(exc.args[0] if exc.args else exc)
    reason = text.removeprefix("execution reverted").removeprefix(":").strip()
    if reason in ("", "None", "b''"):
        return {"code": EXECUTION_REVERTED, "message": "execution reverted"}
    if reason.startswith(("b'", 'b"')):
        raw = ast.literal_eval(reason)
        return {
            "code": EXECUTION_REVERTED,
            "message": "execution reverted",
            "data": "0x" + raw.hex(),
        }
    data = _ERROR_STRING_SELECTOR + encode(["string"], [reason])
    return {
        "code": EXECUTION_REVERTED,
        "message": f"execution reverted: {reason}",
        "data": "0x" + data.hex(),
    }


def dev_address(index: int) -> str:
    """The address of funded account ``index`` of every embedded chain (without starting one)."""
    return str(Account.from_key(get_default_account_keys(index + 1)[index].to_bytes()).address)


class EmbeddedChain:
    """A chain whose first accounts are funded (1,000,000 ether each) and whose keys are known.

    With no argument, a fresh chain; with ``w3``, the embedded chain behind it
    (for example the one :func:`start_embedded_governance` returns).
    """

    def __init__(self, w3: Web3 | None = None) -> None:
        if w3 is None:
            w3 = Web3(NodeLikeProvider(EthereumTester(PyEVMBackend())))
        provider = w3.provider
        if not isinstance(provider, EthereumTesterProvider) or provider.ethereum_tester is None:
            raise ChainError("this Web3 instance is not backed by the embedded chain")
        self.w3 = w3
        self.tester: EthereumTester = provider.ethereum_tester
        self.accounts: tuple[LocalAccount, ...] = tuple(
            Account.from_key(key.to_bytes()) for key in get_default_account_keys(ACCOUNT_COUNT)
        )

    def sender(self, index: int = 0) -> Sender:
        """A transaction sender for funded account ``index``."""
        return Sender(self.w3, self.accounts[index], gas_limit=GAS_LIMIT)

    @property
    def block_number(self) -> int:
        return int(self.w3.eth.block_number)

    def mine(self, blocks: int = 1) -> None:
        """Mine ``blocks`` empty blocks (voting delays and periods count blocks)."""
        if blocks > 0:
            self.tester.mine_blocks(blocks)

    def mine_until(self, block_number: int) -> None:
        """Mine until the latest block is ``block_number`` (no-op if already past it)."""
        self.mine(block_number - self.block_number)

    def advance_time(self, seconds: int) -> None:
        """Mine a block ``seconds`` after the latest one (timelock delays count seconds)."""
        self.advance_time_to(self._latest_timestamp() + seconds)

    def advance_time_to(self, timestamp: int) -> None:
        """Mine a block whose timestamp is at least ``timestamp``, if the latest is earlier."""
        if self._latest_timestamp() < timestamp:
            # eth-tester 0.14 stamps the mined block one second before the requested time.
            self.tester.time_travel(timestamp + 1)

    def _latest_timestamp(self) -> int:
        return int(self.w3.eth.get_block("latest")["timestamp"])


# Blocks are mined on demand: a whole cycle takes about a second.
FAST_RULES = GovernanceParams(voting_delay=1, voting_period=30, timelock_delay=10)


def start_embedded_governance(
    bundle_path: Path, uri: str, params: GovernanceParams = FAST_RULES
) -> tuple[Web3, Deployment, Ratification]:
    """A fresh embedded chain with the contracts deployed and ``bundle_path`` ratified as version 1.

    The deployer (the chain's first account) holds and delegates all the votes.
    """
    chain = EmbeddedChain()
    deployment = deploy_governance(chain.sender(), params)
    return chain.w3, deployment, ratify_embedded(chain.w3, deployment, bundle_path, uri)


def ratify_embedded(
    w3: Web3, deployment: Deployment, bundle_path: Path, uri: str, note: str = ""
) -> Ratification:
    """Ratify another bundle on the embedded chain behind ``w3``, voting with the deployer."""
    chain = EmbeddedChain(w3)
    deployer = next((a for a in chain.accounts if a.address == deployment.deployer), None)
    if deployer is None:
        raise ChainError("the deployment was not made by an account of the embedded chain")
    sender = chain.sender(chain.accounts.index(deployer))
    governance = Governance.from_deployment(w3, deployment)
    digest = load_bundle(bundle_path).digest
    return ratify_by_vote(chain, governance, sender, digest, uri, note)
