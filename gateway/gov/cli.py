"""The ``agora gov`` command group: deploy the contracts, propose, vote, queue, execute, status,
members.

Only the argument parsing lives here, so that building the ``agora`` parser stays
fast; the handlers (and web3) load when a ``gov`` command runs
(:mod:`gateway.gov.commands`, which never imports this module). Keys are read
from ``AGORA_GOV_PRIVATE_KEY`` or a ``--keystore`` file, never from the command line.
"""

from __future__ import annotations

import argparse
import sys
from importlib.util import find_spec
from pathlib import Path

from gateway.exceptions import AgoraError
from gateway.gov.anchor_cli import register as register_anchor
from gateway.gov.environment import (
    DEPLOYMENT_ENV,
    KEYSTORE_PASSWORD_ENV,
    PRIVATE_KEY_ENV,
    RPC_URL_ENV,
)

# Fail at registration, like a top-level import would, when the chain extra is
# missing: the caller then offers `pip install 'agora-gateway[chain]'`.
for _module in ("web3", "eth_account"):
    if find_spec(_module) is None:
        raise ModuleNotFoundError(f"No module named {_module!r}", name=_module)

DEFAULT_WAIT_S = 3600.0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``gov`` and its subcommands; each sets ``func`` to a handler returning an exit code."""
    network = argparse.ArgumentParser(add_help=False)
    group = network.add_argument_group("network and contracts")
    group.add_argument(
        "--rpc-url", metavar="URL", help=f"JSON-RPC endpoint of the chain (default: ${RPC_URL_ENV})"
    )
    group.add_argument(
        "--chain-id", type=int, metavar="ID", help="refuse to act unless the node reports this id"
    )
    network.add_argument("--json", action="store_true", help="print machine-readable JSON")

    contracts = argparse.ArgumentParser(add_help=False)
    group = contracts.add_argument_group("which deployment")
    group.add_argument(
        "--deployment",
        type=Path,
        metavar="FILE",
        help=f"JSON file written by `agora gov deploy --out` (default: ${DEPLOYMENT_ENV})",
    )
    group.add_argument("--governor", metavar="ADDRESS", help="AgoraGovernor address")
    group.add_argument("--registry", metavar="ADDRESS", help="PolicyRegistry address")
    group.add_argument(
        "--from-block",
        type=int,
        metavar="N",
        help="where to start looking for proposals (default: the deployment's block, else 0)",
    )

    signer = argparse.ArgumentParser(add_help=False)
    group = signer.add_argument_group("signing key (never on the command line)")
    group.add_argument(
        "--keystore",
        type=Path,
        metavar="FILE",
        help=f"encrypted JSON keystore; password from ${KEYSTORE_PASSWORD_ENV} "
        f"(default: the hex key in ${PRIVATE_KEY_ENV})",
    )

    waiting = argparse.ArgumentParser(add_help=False)
    waiting.add_argument(
        "--wait",
        type=float,
        nargs="?",
        const=DEFAULT_WAIT_S,
        metavar="SECONDS",
        help=f"if it is too early, wait (up to {DEFAULT_WAIT_S:.0f} s, or SECONDS) and then act",
    )

    gov = subparsers.add_parser(
        "gov",
        help="community governance on chain: ratify policy versions by vote",
        description="Propose, vote on, and enact the policy bundle the gateway enforces. "
        "See docs/governance.md.",
    )
    commands = gov.add_subparsers(title="commands", metavar="COMMAND", required=True)

    deploy = commands.add_parser(
        "deploy",
        parents=[network, signer],
        help="deploy token, timelock, governor and registry; print their addresses",
        description="Deploy the governance contracts. The deployer receives the whole token "
        "supply (delegated to itself) and keeps no special power over the registry.",
    )
    rules = deploy.add_argument_group("rules of the vote")
    rules.add_argument(
        "--voting-delay",
        type=int,
        default=7200,
        metavar="BLOCKS",
        help="blocks between a proposal and the opening of its vote (7200)",
    )
    rules.add_argument(
        "--voting-period",
        type=int,
        default=50400,
        metavar="BLOCKS",
        help="blocks the vote stays open (50400)",
    )
    rules.add_argument(
        "--timelock-delay",
        type=int,
        default=86400,
        metavar="SECONDS",
        help="seconds between queueing a passed proposal and executing it (86400)",
    )
    rules.add_argument(
        "--quorum-percent",
        type=int,
        default=4,
        metavar="PERCENT",
        help="share of the supply that must vote for or abstain (4)",
    )
    rules.add_argument(
        "--proposal-threshold",
        type=int,
        default=0,
        metavar="TOKENS",
        help="voting power needed to make a proposal (0)",
    )
    rules.add_argument(
        "--supply",
        type=int,
        default=1_000_000,
        metavar="TOKENS",
        help="tokens minted to the deployer (1000000; token and quadratic voting)",
    )
    rules.add_argument(
        "--voting",
        choices=["token", "membership", "quadratic", "membership-quadratic"],
        default="token",
        help="how votes weigh: one token one vote (token, the default), one member one vote "
        "(membership), the square root of the tokens (quadratic), or that among members "
        "only (membership-quadratic)",
    )
    rules.add_argument(
        "--membership-authority",
        default="timelock",
        metavar="timelock|ADDRESS",
        help="voting with members: who admits and removes members; timelock (the default) "
        "makes each admission a proposal",
    )
    rules.add_argument(
        "--member",
        action="append",
        default=[],
        metavar="ADDRESS",
        dest="members",
        help="voting with members: a first member (repeat; default: the deployer alone)",
    )
    deploy.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help="write the deployment (addresses, chain id, rules) to FILE",
    )
    _set_handler(deploy, "deploy")

    propose = commands.add_parser(
        "propose",
        parents=[network, contracts, signer],
        help="propose to ratify a policy bundle (computes its digest)",
    )
    propose.add_argument(
        "--bundle", type=Path, required=True, metavar="DIR", help="the bundle directory or .tar.gz"
    )
    propose.add_argument(
        "--uri", required=True, help="where gateways fetch the bundle (https://, file://)"
    )
    propose.add_argument(
        "--note", default="", help="rationale appended to the proposal's description"
    )
    _set_handler(propose, "propose")

    vote = commands.add_parser(
        "vote", parents=[network, contracts, signer, waiting], help="vote on a proposal"
    )
    vote.add_argument("proposal_id", type=int, metavar="ID")
    vote.add_argument("support", choices=["for", "against", "abstain"])
    vote.add_argument("--reason", default="", help="reason recorded with the vote")
    _set_handler(vote, "vote")

    for name, text in (
        ("queue", "queue a passed proposal in the timelock"),
        ("execute", "execute a queued proposal once the timelock delay is over"),
    ):
        step = commands.add_parser(name, parents=[network, contracts, signer, waiting], help=text)
        step.add_argument("proposal_id", type=int, metavar="ID")
        _set_handler(step, name)

    status = commands.add_parser(
        "status",
        parents=[network, contracts],
        help="the ratified policy version and the open proposals",
    )
    status.add_argument("--all", action="store_true", help="list closed proposals too")
    _set_handler(status, "status")

    delegate = commands.add_parser(
        "delegate",
        parents=[network, contracts, signer],
        help="make your tokens count as votes (for yourself, or for ADDRESS)",
    )
    delegate.add_argument(
        "address",
        nargs="?",
        metavar="ADDRESS",
        help="who votes with your tokens (default: yourself)",
    )
    _set_handler(delegate, "delegate")
    register_anchor(commands, network, signer)

    members = commands.add_parser(
        "members",
        help="voting with members: list, admit and remove members",
        description="Under --voting membership (or membership-quadratic), only members vote. "
        "Admitting or removing a member is a proposal when the timelock is the membership "
        "authority, or the authority's own transaction.",
    )
    verbs = members.add_subparsers(title="commands", metavar="COMMAND", required=True)
    listing = verbs.add_parser(
        "list", parents=[network, contracts], help="the members, with their vote's delegate"
    )
    _set_handler(listing, "members_list")
    for verb, text in (
        ("add", "admit ADDRESS (a proposal, or the authority's transaction)"),
        ("remove", "remove ADDRESS (a proposal, or the authority's transaction)"),
    ):
        change = verbs.add_parser(verb, parents=[network, contracts, signer], help=text)
        change.add_argument("address", metavar="ADDRESS")
        change.add_argument(
            "--note", default="", help="rationale appended to the proposal's description"
        )
        _set_handler(change, f"members_{verb}")


def _set_handler(parser: argparse.ArgumentParser, name: str) -> None:
    def handler(args: argparse.Namespace) -> int:
        from gateway.gov.commands import HANDLERS

        try:
            return HANDLERS[name](args)
        except AgoraError as exc:
            print(f"agora gov: error: {exc}", file=sys.stderr)
            return 2

    parser.set_defaults(func=handler)
