"""A real ``geth --dev`` node on loopback for the integration suites.

The binary comes from PATH or the tool cache (``scripts/install-tools.sh geth``).
CI installs it, so a missing geth fails the test with instructions, unless
``AGORA_SKIP_GETH=1`` says to skip.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from gateway.chain.rpc import connect
from gateway.exceptions import ChainError
from tests.support import TOOL_BIN, Process, free_port

DEV_CHAIN_ID = 1337
SKIP_ENV = "AGORA_SKIP_GETH"


def geth_binary() -> str:
    """The geth executable; fails (or skips, with AGORA_SKIP_GETH=1) when it is not installed."""
    found = shutil.which("geth") or shutil.which(str(TOOL_BIN / "geth"))
    if found is not None:
        return found
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"geth is not installed and {SKIP_ENV}=1")
    pytest.fail(
        f"geth is not installed (looked on PATH and in {TOOL_BIN}): run "
        f"scripts/install-tools.sh geth, or set {SKIP_ENV}=1 to skip the geth tests"
    )


@dataclass
class GethNode:
    """A running dev node: its JSON-RPC URL, a Web3 on it, and its pre-funded dev account."""

    url: str
    w3: Web3
    process: Process

    def new_account(self, ether: int = 100) -> LocalAccount:
        """A fresh account funded by the dev account (which geth keeps unlocked)."""
        account: LocalAccount = Account.create()
        tx = self.w3.eth.send_transaction(
            {
                "from": self.w3.eth.accounts[0],
                "to": account.address,
                "value": Web3.to_wei(ether, "ether"),
            }
        )
        self.w3.eth.wait_for_transaction_receipt(tx, timeout=30)
        return account

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.process.output().splitlines()[-lines:])


@contextmanager
def start_geth(
    workdir: Path, *, block_period_s: int = 1, datadir: Path | None = None
) -> Iterator[GethNode]:
    """Run ``geth --dev`` on free loopback ports until the context exits.

    ``block_period_s`` makes time pass (a block every period) so that voting
    periods and timelock delays elapse; with ``datadir`` the chain survives a
    restart of the node, otherwise it lives in memory.
    """
    port = free_port()
    args = [
        geth_binary(),
        "--dev",
        f"--dev.period={block_period_s}",
        "--http",
        "--http.addr=127.0.0.1",
        f"--http.port={port}",
        "--http.api=eth,net,web3",
        "--authrpc.addr=127.0.0.1",
        f"--authrpc.port={free_port()}",
        "--ipcdisable",
        "--nodiscover",
        "--maxpeers=0",
        "--port=0",
        "--verbosity=3",
    ]
    if datadir is not None:
        args.append(f"--datadir={datadir}")
    process = Process(args, workdir / "geth.log")
    url = f"http://127.0.0.1:{port}"
    try:
        node = GethNode(url, _wait_for_node(url, process), process)
        yield node
    finally:
        process.stop()


def _wait_for_node(url: str, process: Process, timeout_s: float = 60.0) -> Web3:
    deadline = time.monotonic() + timeout_s
    while True:
        if process.popen.poll() is not None:
            raise RuntimeError(f"geth exited with {process.popen.returncode}:\n{process.output()}")
        try:
            w3 = connect(url, expected_chain_id=DEV_CHAIN_ID, timeout_s=2)
            if w3.eth.accounts:
                return w3
        except ChainError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"geth at {url} not ready after {timeout_s}s:\n{process.output()}")
        time.sleep(0.2)
