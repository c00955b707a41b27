"""An in-process Ethereum chain (eth-tester on py-evm) for the quickstart and the fast tests.

It mines one block per transaction, and on demand: :meth:`EmbeddedChain.mine`
skips voting delays and periods (counted in blocks) and :meth:`EmbeddedChain.advance_time`
skips the timelock delay (counted in seconds), so a whole governance cycle runs
in about a second. It is not thread-safe: use it from one thread at a time.
"""

from __future__ import annotations

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_tester import EthereumTester, PyEVMBackend
from eth_tester.backends.pyevm.main import get_default_account_keys
from web3 import EthereumTesterProvider, Web3

from gateway.exceptions import ChainError
from gateway.gov.transactions import Sender

ACCOUNT_COUNT = 10
GAS_LIMIT = 10_000_000  # enough for any Agora transaction, deployments included


class EmbeddedChain:
    """A chain whose first accounts are funded (1,000,000 ether each) and whose keys are known.

    With no argument, a fresh chain; with ``w3``, the embedded chain behind it
    (for example the one :func:`gateway.chain.demo.start_embedded_governance` returns).
    """

    def __init__(self, w3: Web3 | None = None) -> None:
        if w3 is None:
            w3 = Web3(EthereumTesterProvider(EthereumTester(PyEVMBackend())))
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
