"""Reading the chain for the page: ratified versions and proposals, on the embedded chain."""

from __future__ import annotations

from pathlib import Path

from gateway.chain.voting import VotingModel
from gateway.community.proposals import ChainReader
from gateway.gov.governance import Governance, Support
from gateway.pinning.bundle import load_bundle
from tests.embedded_chain import EmbeddedChain, start_embedded_governance


def bundle(root: Path, name: str) -> Path:
    path = root / name
    (path / "agora").mkdir(parents=True)
    (path / ".manifest").write_text('{"roots": ["agora"]}')
    (path / "agora" / "main.rego").write_text(f'package agora.main\n\nname := "{name}"\n')
    return path


def test_versions_and_proposals_with_votes_quorum_and_deadlines(tmp_path: Path) -> None:
    first = bundle(tmp_path, "one")
    w3, deployment, ratified = start_embedded_governance(first, first.as_uri())
    chain = EmbeddedChain(w3)
    governance = Governance.from_deployment(w3, deployment)
    second = bundle(tmp_path, "two")
    proposal = governance.propose_ratification(
        chain.sender(), load_bundle(second).digest, second.as_uri(), "open the big model"
    )
    chain.mine_until(proposal.vote_start + 1)
    governance.vote(chain.sender(), proposal.proposal_id, Support.FOR)
    reader = ChainReader(w3, deployment.registry, deployment.governor, deployment.block_number)

    view = reader.read()

    (version,) = view.versions
    assert (version.version, version.digest, version.block_number) == (
        1, ratified.digest, ratified.block_number,
    )  # fmt: skip
    assert version.transaction.startswith("0x") and len(version.transaction) == 66
    executed, current = view.proposals
    assert executed.state == "Executed" and not executed.open
    assert executed.digest == ratified.digest
    assert current.proposal_id == str(proposal.proposal_id)
    assert (current.state, current.open) == ("Active", True)
    assert (current.digest, current.uri) == (load_bundle(second).digest, second.as_uri())
    assert view.voting is VotingModel.TOKEN
    assert current.votes_for == "1000000 AGORA" and current.votes_against == "0 AGORA"
    assert current.quorum == "40000 AGORA"  # 4 % of the supply, in whole tokens
    assert current.deadline_block == proposal.vote_end
    assert "open the big model" in current.description
    assert view.head_block >= proposal.vote_start + 1
    # A proposal that can no longer change is read once.
    assert reader.read().proposals[0] is executed
