"""A throw-away dev chain for the quickstart: Foundry's ``anvil`` on loopback, and a vote on it.

anvil is a real node: the gateway and ``agora gov`` talk to it over JSON-RPC
exactly as they would to any other. It mines a block when a transaction
arrives and one every second, so that voting periods (in blocks) and the
timelock delay (in seconds) pass on their own; :func:`ratify_by_vote`
fast-forwards them with anvil's ``anvil_mine`` and ``evm_increaseTime`` for the
first ratification, so the quickstart starts in seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.types import RPCEndpoint

from gateway.chain.errors import chain_errors
from gateway.chain.registry import Ratification
from gateway.chain.rpc import connect
from gateway.exceptions import ChainError, ConfigError
from gateway.gov.governance import Governance, Support
from gateway.gov.transactions import Sender

START_TIMEOUT_S = 15.0
BLOCK_TIME_S = 1


def anvil_binary() -> str:
    """The anvil executable, from PATH or the tool cache; else ``ConfigError`` saying how to
    install it."""
    cache = Path(os.environ.get("AGORA_CACHE", Path.home() / ".cache" / "agora")) / "bin"
    found = shutil.which("anvil") or shutil.which("anvil", path=str(cache))
    if found is None:
        raise ConfigError(
            f"anvil (the quickstart's dev chain) is not installed, on PATH or in {cache}: "
            "run scripts/install-tools.sh anvil (make run does)"
        )
    return found


class FastForward(Protocol):
    """A chain whose blocks and clock can be moved forward on demand (a dev chain)."""

    def mine_until(self, block_number: int) -> None: ...

    def advance_time_to(self, timestamp: int) -> None: ...


@dataclass
class Anvil:
    """A running anvil: its JSON-RPC URL, a Web3 on it, and its first funded dev account.

    The dev accounts' keys are anvil's well-known test keys: public, never to be
    used on a real network.
    """

    url: str
    w3: Web3
    account: LocalAccount
    process: subprocess.Popen[bytes]

    @classmethod
    def start(cls, port: int, workdir: Path, host: str = "127.0.0.1") -> Anvil:
        """Start anvil on ``host:port``, its log in ``workdir/anvil.log``; return once it answers.

        It runs in a session of its own, so that Ctrl-C stops the gateway first
        and the chain last (:meth:`stop`).
        """
        accounts = workdir / "anvil-accounts.json"
        accounts.unlink(missing_ok=True)
        url = f"http://{host}:{port}"
        with (workdir / "anvil.log").open("wb") as log:
            process = subprocess.Popen(
                [
                    anvil_binary(),
                    "--host", host,
                    "--port", str(port),
                    "--block-time", str(BLOCK_TIME_S),
                    "--mixed-mining",  # and a block as soon as a transaction arrives
                    "--config-out", str(accounts),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        try:
            w3 = _wait_until_it_answers(url, process, workdir / "anvil.log", accounts)
            key = json.loads(accounts.read_text(encoding="utf-8"))["private_keys"][0]
        except BaseException:
            _stop(process)
            raise
        return cls(url, w3, Account.from_key(key), process)

    @property
    def private_key(self) -> str:
        return "0x" + bytes(self.account.key).hex()

    def sender(self) -> Sender:
        return Sender(self.w3, self.account)

    def mine_until(self, block_number: int) -> None:
        """Mine until the latest block is ``block_number`` (voting delays and periods count
        blocks)."""
        with chain_errors("mining blocks on anvil"):
            missing = block_number - int(self.w3.eth.block_number)
            if missing > 0:
                self.w3.manager.request_blocking(RPCEndpoint("anvil_mine"), [missing])

    def advance_time_to(self, timestamp: int) -> None:
        """Mine a block stamped at least ``timestamp`` (the timelock delay counts seconds)."""
        with chain_errors("moving anvil's clock"):
            latest = int(self.w3.eth.get_block("latest")["timestamp"])
            if latest < timestamp:
                self.w3.manager.request_blocking(
                    RPCEndpoint("evm_increaseTime"), [timestamp - latest]
                )
                self.w3.manager.request_blocking(RPCEndpoint("evm_mine"), [])

    def stop(self) -> None:
        _stop(self.process)


def ratify_by_vote(
    chain: FastForward,
    governance: Governance,
    sender: Sender,
    digest: str,
    uri: str,
    note: str = "",
) -> Ratification:
    """Ratify ``digest`` through the whole cycle (propose, vote, queue, execute), voting with
    ``sender``, which must hold enough votes, and fast-forwarding ``chain`` past each wait."""
    proposal = governance.propose_ratification(sender, digest, uri, note)
    # Reads see the latest block, so go one block past each boundary.
    chain.mine_until(proposal.vote_start + 1)
    governance.vote(sender, proposal.proposal_id, Support.FOR)
    chain.mine_until(proposal.vote_end + 1)
    eta = governance.queue(sender, proposal.proposal_id)
    chain.advance_time_to(eta)
    ratification = governance.execute(sender, proposal.proposal_id)
    if ratification is None:
        raise ChainError(f"proposal {proposal.proposal_id} executed without ratifying anything")
    return ratification


def _wait_until_it_answers(
    url: str, process: subprocess.Popen[bytes], log: Path, accounts: Path
) -> Web3:
    """A Web3 on ``url`` once this anvil answers there (it writes ``accounts`` when it is up:
    an answer without them could come from another node that holds the port)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            raise ChainError(
                f"anvil could not start on {url} (exit code {process.returncode}): "
                + " / ".join(tail)
                + " (is another node, or another quickstart, using the port? pass --rpc-port)"
            )
        try:
            if accounts.is_file():
                return connect(url, timeout_s=2)
        except ChainError:
            pass
        if time.monotonic() > deadline:
            raise ChainError(f"anvil did not answer on {url} within {START_TIMEOUT_S:.0f} s")
        time.sleep(0.1)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
