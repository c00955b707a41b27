"""``agora gov anchor-deploy`` and ``agora gov anchors``: the LogAnchor contract from the shell.

``anchor-deploy`` deploys the contract that holds the decision log's anchored
checkpoints; ``anchors ORIGIN`` lists what is anchored for a log, for anyone
who wants to hold its operator to it. The parser is built without web3; the
handlers load it when they run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from gateway.exceptions import AgoraError, ConfigError
from gateway.gov.environment import RPC_URL_ENV

if TYPE_CHECKING:
    from web3 import Web3

from gateway.transparency.cli import ANCHOR_ENV


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    network: argparse.ArgumentParser,
    signer: argparse.ArgumentParser,
) -> None:
    """Add ``anchor-deploy`` and ``anchors`` to ``agora gov``, with its network and key options."""
    deploy = commands.add_parser(
        "anchor-deploy",
        parents=[network, signer],
        help="deploy the LogAnchor contract that holds the decision log's checkpoints",
        description="Deploy LogAnchor. The admin grants and revokes the right to anchor "
        "(grantRole / revokeRole of ANCHORER_ROLE); the anchorer is the gateway's sending key "
        "(its address).",
    )
    deploy.add_argument(
        "--admin", metavar="ADDRESS", help="who grants the anchorers' role (default: the sender)"
    )
    deploy.add_argument(
        "--anchorer", metavar="ADDRESS", help="the first key allowed to anchor (default: none)"
    )
    deploy.set_defaults(func=_handler(run_deploy))

    listing = commands.add_parser(
        "anchors",
        parents=[network],
        help="list the checkpoints anchored for a log (its origin)",
        description="Every checkpoint anchored for ORIGIN, oldest first: tree size, root hash, "
        "and the block that anchored it.",
    )
    listing.add_argument("origin", metavar="ORIGIN", help="the log's origin (checkpoint line 1)")
    listing.add_argument(
        "--anchor", metavar="ADDRESS", help=f"LogAnchor address (default: ${ANCHOR_ENV})"
    )
    listing.set_defaults(func=_handler(run_anchors))


def run_deploy(args: argparse.Namespace) -> int:
    from gateway.chain.anchors import deploy_anchor
    from gateway.gov.keys import load_account
    from gateway.gov.transactions import Sender

    w3 = _connect(args)
    address = deploy_anchor(Sender(w3, load_account(args.keystore)), args.admin, args.anchorer)
    if args.json:
        print(json.dumps({"anchor": address, "chain_id": int(w3.eth.chain_id)}, indent=2))
    else:
        print(f"LogAnchor deployed at {address} on chain {int(w3.eth.chain_id)}")
        print(f"set it as ${ANCHOR_ENV} or --anchor for `agora gov anchors`")
    return 0


def run_anchors(args: argparse.Namespace) -> int:
    from gateway.chain.anchors import AnchorClient

    address = args.anchor or os.environ.get(ANCHOR_ENV)
    if not address:
        raise ConfigError(f"which contract? pass --anchor ADDRESS or set {ANCHOR_ENV}")
    client = AnchorClient(_connect(args), address)
    client.check()
    anchors = client.anchors(args.origin)
    if args.json:
        rows = [
            {
                "index": a.index,
                "size": a.size,
                "root": a.root.hex(),
                "block_number": a.block_number,
                "timestamp": a.timestamp,
            }
            for a in anchors
        ]
        print(json.dumps({"origin": args.origin, "anchors": rows}, indent=2))
        return 0
    if not anchors:
        print(f"no checkpoint of {args.origin} is anchored")
    for a in anchors:
        when = datetime.fromtimestamp(a.timestamp, UTC).isoformat(timespec="seconds")
        print(f"{a.index:>5}  size {a.size:<12} root {a.root.hex()}  block {a.block_number} {when}")
    return 0


def _connect(args: argparse.Namespace) -> Web3:
    from gateway.chain.rpc import connect

    url = args.rpc_url or os.environ.get(RPC_URL_ENV)
    if not url:
        raise ConfigError(f"no chain to talk to: pass --rpc-url URL or set {RPC_URL_ENV}")
    return connect(url, expected_chain_id=args.chain_id)


def _handler(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """``run``, with the expected failures printed as one line (exit status 2)."""

    def handler(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except AgoraError as exc:
            print(f"agora gov: error: {exc}", file=sys.stderr)
            return 2

    return handler
