"""`agora log verify --chain`: which anchors on chain the log files contradict."""

from __future__ import annotations

from gateway.chain.anchors import Anchor
from gateway.transparency.cli import anchored_mismatches
from tests.unit.transparency.test_merkle import grown, mth


def test_anchors_the_files_contradict_are_named() -> None:
    leaves = [f"record {i}".encode() for i in range(12)]
    tree = grown(leaves)

    def anchor(index: int, size: int, root: bytes) -> Anchor:
        return Anchor("o", index, size, root, block_number=100 + index, timestamp=0)

    good = [anchor(0, 5, mth(leaves[:5])), anchor(1, 12, mth(leaves))]
    assert anchored_mismatches(good, 12, tree) == []
    cut = anchored_mismatches([*good, anchor(2, 20, bytes(32))], 12, tree)
    assert len(cut) == 1 and "commits to 20 records but the files hold 12" in cut[0]
    rewritten = anchored_mismatches([anchor(0, 5, mth(leaves[1:6]))], 12, tree)
    assert len(rewritten) == 1 and "block 100" in rewritten[0] and "rewritten" in rewritten[0]
