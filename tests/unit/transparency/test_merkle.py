"""The incremental RFC 6962 tree against a naive recursive implementation of RFC 6962."""

from __future__ import annotations

import hashlib
import random

import pytest

from gateway.transparency.merkle import (
    EMPTY_ROOT,
    MerkleTree,
    leaf_hash,
    node_hash,
    verify_consistency,
    verify_inclusion,
)


def mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 section 2.1, as written."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


def path(m: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 6962 section 2.1.1 PATH(m, D[n])."""
    if len(leaves) <= 1:
        return []
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    if m < k:
        return [*path(m, leaves[:k]), mth(leaves[k:])]
    return [*path(m - k, leaves[k:]), mth(leaves[:k])]


def subproof(m: int, leaves: list[bytes], whole: bool) -> list[bytes]:
    """RFC 6962 section 2.1.2 SUBPROOF(m, D[n], b)."""
    n = len(leaves)
    if m == n:
        return [] if whole else [mth(leaves)]
    k = 1 << ((n - 1).bit_length() - 1)
    if m <= k:
        return [*subproof(m, leaves[:k], whole), mth(leaves[k:])]
    return [*subproof(m - k, leaves[k:], False), mth(leaves[:k])]


def grown(leaves: list[bytes]) -> MerkleTree:
    tree = MerkleTree()
    tree.append(leaf_hash(leaf) for leaf in leaves)
    return tree


def test_hashes_are_rfc6962() -> None:
    assert leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    assert node_hash(b"a", b"b") == hashlib.sha256(b"\x01ab").digest()
    assert MerkleTree().root() == EMPTY_ROOT == mth([])


def test_roots_of_every_size_match_the_naive_tree() -> None:
    rng = random.Random(1)
    leaves = [rng.randbytes(rng.randint(0, 40)) for _ in range(600)]
    tree = MerkleTree()
    for n, leaf in enumerate(leaves, 1):
        tree.append([leaf_hash(leaf)])
        assert tree.root() == mth(leaves[:n]), n
    for n in rng.sample(range(601), 60):  # past sizes, through the stored subtrees
        assert tree.root(n) == mth(leaves[:n]), n


@pytest.mark.parametrize("seed", range(6))
def test_proofs_match_the_naive_tree_and_verify(seed: int) -> None:
    rng = random.Random(seed)
    size = rng.choice([1, 2, 3, 127, 128, 129, 255, 256, 257, rng.randint(300, 1500)])
    leaves = [rng.randbytes(8) for _ in range(size)]
    tree = grown(leaves)
    for _ in range(15):
        n = rng.randint(1, size)
        root = mth(leaves[:n])
        m = rng.randrange(n)
        proof = tree.inclusion_proof(m, n)
        assert proof == path(m, leaves[:n])
        assert verify_inclusion(m, n, leaf_hash(leaves[m]), proof, root)
        assert not verify_inclusion(m, n, leaf_hash(b"other"), proof, root)
        if proof:
            assert not verify_inclusion(m, n, leaf_hash(leaves[m]), proof[:-1], root)
        first = rng.randint(1, n)
        consistency = tree.consistency_proof(first, n)
        if first < n:
            assert consistency == subproof(first, leaves[:n], True)
        assert verify_consistency(first, n, mth(leaves[:first]), root, consistency)
        if first < n:
            changed = [*leaves[: first - 1], b"rewritten", *leaves[first:n]]
            assert not verify_consistency(first, n, mth(changed[:first]), root, consistency)
            assert not verify_consistency(first, n, mth(leaves[:first]), mth(changed), consistency)


def test_sizes_beyond_the_tree_are_refused() -> None:
    tree = grown([b"a", b"b", b"c"])
    with pytest.raises(ValueError, match="beyond"):
        tree.inclusion_proof(0, 4)
    with pytest.raises(ValueError, match="not in a tree"):
        tree.inclusion_proof(3, 3)
    with pytest.raises(ValueError):
        tree.consistency_proof(3, 2)
    assert tree.consistency_proof(0, 3) == [] == tree.consistency_proof(3, 3)
    assert verify_consistency(0, 3, EMPTY_ROOT, tree.root(), [])
    assert not verify_consistency(2, 3, tree.root(2), tree.root(), [])
