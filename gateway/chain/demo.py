"""The embedded governance demo: contracts deployed on the in-process chain, a bundle ratified.

``agora quickstart`` and the fast tests use it. Ratification goes through the
real cycle (propose, vote, queue, execute) with blocks mined and time advanced
on demand, so the gateway sees exactly what it would see on a real chain.
"""

from __future__ import annotations

from pathlib import Path

from web3 import Web3

from gateway.chain.embedded import EmbeddedChain
from gateway.chain.registry import Ratification
from gateway.exceptions import ChainError
from gateway.gov.deploy import Deployment, GovernanceParams, deploy_governance
from gateway.gov.governance import Governance, Support
from gateway.pinning.bundle import load_bundle

# Blocks are mined on demand in tests (a cycle takes about a second); with the quickstart's
# block a second, people have 30 s to vote and wait 10 s of timelock.
EMBEDDED_PARAMS = GovernanceParams(voting_delay=1, voting_period=30, timelock_delay=10)


def start_embedded_governance(
    bundle_path: Path, uri: str, params: GovernanceParams = EMBEDDED_PARAMS
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

    proposal = governance.propose_ratification(sender, load_bundle(bundle_path).digest, uri, note)
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
