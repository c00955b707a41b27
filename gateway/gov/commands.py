"""Handlers of ``agora gov``: they connect, act through the library, and print the result.

Each returns an exit code; expected failures raise ``AgoraError`` subclasses,
which the parser's wrapper prints as one line on stderr (exit code 2).
"""

from __future__ import annotations

import json
import os
from argparse import Namespace
from collections.abc import Callable, Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from web3 import Web3

from gateway.chain.errors import parse_address
from gateway.chain.registry import Ratification
from gateway.chain.rpc import connect
from gateway.chain.tokens import TOKEN_SYMBOL
from gateway.chain.voting import VotingModel
from gateway.exceptions import ChainError, ConfigError
from gateway.gov.deploy import (
    Deployment,
    GovernanceParams,
    delegate_votes,
    deploy_governance,
)
from gateway.gov.environment import DEPLOYMENT_ENV, RPC_URL_ENV
from gateway.gov.errors import gov_errors
from gateway.gov.governance import OPEN_STATES, Governance, ProposalState, Support
from gateway.gov.keys import load_account
from gateway.gov.membership import Change, Membership
from gateway.gov.transactions import Sender
from gateway.pinning.bundle import load_bundle


def deploy(args: Namespace) -> int:
    if args.out is not None and args.out.exists():
        raise ConfigError(f"{args.out} exists: it may hold a deployment; choose another --out")
    params = GovernanceParams(
        voting_delay=args.voting_delay,
        voting_period=args.voting_period,
        timelock_delay=args.timelock_delay,
        quorum_percent=args.quorum_percent,
        proposal_threshold=args.proposal_threshold,
        initial_supply=args.supply,
        voting=VotingModel(args.voting),
        membership_authority=args.membership_authority,
        initial_members=tuple(args.members),
    )
    w3 = _connect(args, None)
    deployment = deploy_governance(_sender(args, w3), params)
    if args.out is not None:
        deployment.save(args.out)
    if args.json:
        _print_json(asdict(deployment))
        return 0
    print(f"deployed on chain {deployment.chain_id} from block {deployment.block_number}:")
    for role in ("token", "membership", "timelock", "governor", "registry"):
        address = getattr(deployment, role)
        # Under membership voting the governor's token is the membership: shown once.
        if address is not None and not (role == "token" and address == deployment.membership):
            print(f"  {role:10} {address}")
    print(f"voting: {params.voting.value} ({params.voting.summary})")
    if params.voting.has_members:
        members = params.initial_members or (deployment.deployer,)
        authority = params.membership_authority
        print(f"members: {', '.join(members)}")
        print(
            "members are admitted and removed by "
            + ("proposal (the timelock)" if authority == "timelock" else str(authority))
        )
    if params.voting is not VotingModel.MEMBERSHIP:
        print(
            f"{params.initial_supply} {TOKEN_SYMBOL} minted to {deployment.deployer}, "
            "who votes with them until they are transferred"
        )
    if args.out is not None:
        print(f"deployment written to {args.out}; pass it as --deployment or ${DEPLOYMENT_ENV}")
    return 0


def propose(args: Namespace) -> int:
    digest = load_bundle(args.bundle).digest
    w3, governance = _governance(args)
    proposal = governance.propose_ratification(_sender(args, w3), digest, args.uri, args.note)
    if args.json:
        _print_json(
            {
                "proposal_id": proposal.proposal_id,
                "digest": digest,
                "uri": args.uri,
                "vote_start": proposal.vote_start,
                "vote_end": proposal.vote_end,
                "description": proposal.description,
            }
        )
        return 0
    print(f"proposal {proposal.proposal_id}: ratify {digest}")
    print(f"  uri   {args.uri}")
    print(
        f"  vote  opens after block {proposal.vote_start}, closes after block {proposal.vote_end}"
    )
    print(f"next: agora gov vote {proposal.proposal_id} for|against|abstain")
    return 0


def vote(args: Namespace) -> int:
    w3, governance = _governance(args)
    sender = _sender(args, w3)
    _maybe_wait(args, governance, "vote")
    support = Support[args.support.upper()]
    weight = governance.vote(sender, args.proposal_id, support, args.reason)
    if args.json:
        _print_json({"proposal_id": args.proposal_id, "support": args.support, "weight": weight})
        return 0
    print(
        f"voted {args.support} on proposal {args.proposal_id} "
        f"with {governance.voting_model.format_weight(weight)}"
    )
    return 0


def queue(args: Namespace) -> int:
    w3, governance = _governance(args)
    sender = _sender(args, w3)
    _maybe_wait(args, governance, "queue")
    eta = governance.queue(sender, args.proposal_id)
    if args.json:
        _print_json({"proposal_id": args.proposal_id, "eta": eta})
        return 0
    print(f"proposal {args.proposal_id} queued; it can be executed from {_time(eta)}")
    print(f"next: agora gov execute {args.proposal_id}")
    return 0


def execute(args: Namespace) -> int:
    w3, governance = _governance(args)
    sender = _sender(args, w3)
    _maybe_wait(args, governance, "execute")
    ratification = governance.execute(sender, args.proposal_id)
    if args.json:
        _print_json(
            {
                "proposal_id": args.proposal_id,
                "ratification": asdict(ratification) if ratification else None,
            }
        )
        return 0
    if ratification is None:
        print(f"proposal {args.proposal_id} executed (it ratified no policy)")
    else:
        print(f"proposal {args.proposal_id} executed: {_describe(ratification)}")
    return 0


def status(args: Namespace) -> int:
    w3, governance = _governance(args)
    current = governance.registry.current()
    with gov_errors("reading the chain head"):
        head, chain_id = int(w3.eth.block_number), int(w3.eth.chain_id)
    rows = []
    for proposal in governance.proposals():
        state = governance.state(proposal.proposal_id)
        if args.all or state in OPEN_STATES:
            pid = proposal.proposal_id
            rows.append((proposal, state, governance.tally(pid), governance.eta(pid)))
    voting = _voting(governance)
    if args.json:
        _print_json(
            {
                "chain_id": chain_id,
                "block": head,
                "registry": governance.registry.address,
                "governor": governance.governor_address,
                "voting": voting,
                "current": asdict(current) if current else None,
                "proposals": [
                    {
                        "proposal_id": p.proposal_id,
                        "state": state.label,
                        "digest": p.digest,
                        "uri": p.uri,
                        "vote_start": p.vote_start,
                        "vote_end": p.vote_end,
                        "votes": {
                            "for": t.votes_for,
                            "against": t.votes_against,
                            "abstain": t.votes_abstain,
                            "quorum": t.quorum,
                        },
                        "eta": eta or None,
                        "description": p.description,
                    }
                    for p, state, t, eta in rows
                ],
            }
        )
        return 0
    print(f"chain {chain_id} at block {head}; registry {governance.registry.address}")
    print(f"voting: {voting['model']} ({governance.voting_model.summary})" + _members_line(voting))
    print(f"policy in force: {_describe(current) if current else 'none ratified yet'}")
    print(f"{'all' if args.all else 'open'} proposals: {len(rows) or 'none'}")
    weight = governance.voting_model.format_weight
    for p, state, t, eta in rows:
        what = f"ratify {p.digest} ({p.uri or '-'})" if p.digest else p.description.splitlines()[0]
        print(f"  #{p.proposal_id} {state.label}: {what}")
        print(
            f"      for {weight(t.votes_for)}, against {weight(t.votes_against)}, "
            f"abstain {weight(t.votes_abstain)}; quorum {weight(t.quorum)}; "
            f"voting in blocks {p.vote_start + 1}..{p.vote_end}"
            + (f"; executable from {_time(eta)}" if state is ProposalState.QUEUED else "")
        )
    return 0


def delegate(args: Namespace) -> int:
    w3, governance = _governance(args)
    sender = _sender(args, w3)
    delegatee = parse_address(args.address, "delegate") if args.address else sender.address
    delegate_votes(sender, governance.token_address(), delegatee)
    power = governance.voting_power(delegatee)
    if args.json:
        _print_json({"delegator": sender.address, "delegatee": delegatee, "votes": power})
        return 0
    print(
        f"{sender.address} now delegates to {delegatee}, "
        f"who has {governance.voting_model.format_weight(power)} of voting power"
    )
    return 0


def members_list(args: Namespace) -> int:
    _, governance = _governance(args)
    membership = Membership(governance)
    members = membership.members()
    authority = membership.authority()
    if args.json:
        _print_json(
            {
                "membership": membership.address,
                "authority": authority,
                "authority_is_timelock": membership.authority_is_timelock(),
                "members": [asdict(m) for m in members],
            }
        )
        return 0
    by = "proposal (the timelock)" if membership.authority_is_timelock() else authority
    print(f"{len(members)} members of {membership.address}; admitted and removed by {by}")
    for m in members:
        delegation = "votes itself" if m.delegate == m.address else f"delegates to {m.delegate}"
        print(f"  {m.address}  {delegation}, {m.votes} vote(s), member since block {m.since_block}")
    return 0


def members_add(args: Namespace) -> int:
    return _change_membership(args, "add")


def members_remove(args: Namespace) -> int:
    return _change_membership(args, "remove")


def _change_membership(args: Namespace, change: Change) -> int:
    w3, governance = _governance(args)
    done = Membership(governance).change(_sender(args, w3), change, args.address, args.note)
    if args.json:
        _print_json(
            {
                "change": done.change,
                "member": done.member,
                "proposal_id": done.proposal.proposal_id if done.proposal else None,
                "block_number": done.block_number,
            }
        )
        return 0
    verb = "admitted" if change == "add" else "removed"
    if done.proposal is None:
        print(f"{done.member} {verb} in block {done.block_number}")
        return 0
    p = done.proposal
    print(f"proposal {p.proposal_id}: {p.description.splitlines()[0]}")
    print(f"  vote  opens after block {p.vote_start}, closes after block {p.vote_end}")
    print(f"next: agora gov vote {p.proposal_id} for|against|abstain")
    return 0


HANDLERS: Mapping[str, Callable[[Namespace], int]] = {
    "deploy": deploy,
    "propose": propose,
    "vote": vote,
    "queue": queue,
    "execute": execute,
    "status": status,
    "delegate": delegate,
    "members_list": members_list,
    "members_add": members_add,
    "members_remove": members_remove,
}


def _deployment(args: Namespace) -> Deployment | None:
    if args.deployment is not None:
        return Deployment.load(args.deployment)
    from_env = os.environ.get(DEPLOYMENT_ENV)
    return Deployment.load(Path(from_env)) if from_env else None


def _connect(args: Namespace, deployment: Deployment | None) -> Web3:
    url = args.rpc_url or os.environ.get(RPC_URL_ENV)
    if not url:
        raise ConfigError(f"no chain to talk to: pass --rpc-url URL or set {RPC_URL_ENV}")
    expected = args.chain_id
    if deployment is not None:
        if expected is not None and expected != deployment.chain_id:
            raise ChainError(
                f"wrong network: --chain-id {expected} but the deployment file is for chain "
                f"{deployment.chain_id}"
            )
        expected = deployment.chain_id
    return connect(url, expected_chain_id=expected)


def _governance(args: Namespace) -> tuple[Web3, Governance]:
    deployment = _deployment(args)
    governor = args.governor or (deployment.governor if deployment else None)
    registry = args.registry or (deployment.registry if deployment else None)
    if governor is None or registry is None:
        raise ConfigError(
            f"which contracts? pass --deployment FILE (or set {DEPLOYMENT_ENV}), "
            "or both --governor and --registry"
        )
    from_block = args.from_block
    if from_block is None:
        from_block = deployment.block_number if deployment else 0
    w3 = _connect(args, deployment)
    governance = Governance(w3, governor, registry, from_block)
    governance.check()
    return w3, governance


def _sender(args: Namespace, w3: Web3) -> Sender:
    return Sender(w3, load_account(args.keystore))


def _voting(governance: Governance) -> dict[str, object]:
    """The voting model as ``status --json`` reports it (what the community page shows)."""
    model = governance.voting_model
    voting: dict[str, object] = {"model": model.value, "token": governance.token_address()}
    if model.has_members:
        membership = Membership(governance)
        voting["membership"] = membership.address
        voting["members"] = len(membership.admitted())
        voting["membership_authority"] = membership.authority()
        voting["authority_is_timelock"] = membership.authority_is_timelock()
    return voting


def _members_line(voting: Mapping[str, object]) -> str:
    if "members" not in voting:
        return ""
    by = "proposal" if voting["authority_is_timelock"] else voting["membership_authority"]
    return f"; {voting['members']} members, admitted by {by}"


def _maybe_wait(
    args: Namespace, governance: Governance, step: Literal["vote", "queue", "execute"]
) -> None:
    if args.wait is not None:
        governance.wait_until(args.proposal_id, step, args.wait)


def _describe(ratification: Ratification) -> str:
    return (
        f"version {ratification.version}, {ratification.digest}, uri {ratification.uri or '-'}, "
        f"ratified in block {ratification.block_number}"
    )


def _time(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def _print_json(value: object) -> None:
    print(json.dumps(value, indent=2))
