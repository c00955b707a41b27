"""The RFC 6962 Merkle tree over the decision log, kept incrementally, and its proofs.

Leaf hash ``SHA-256(0x00 || leaf)``, node hash ``SHA-256(0x01 || left || right)``,
the tree of ``n`` leaves split at the largest power of two below ``n``, as in
RFC 6962 section 2.1 (RFC 9162 section 2.1). Proofs are RFC 6962's audit paths
and consistency proofs, in the order Go's ``golang.org/x/mod/sumdb/tlog`` and
every other RFC 6962 verifier reads them.

The tree keeps every leaf hash (32 bytes per leaf) and the hash of every
complete subtree of height :data:`STORED_HEIGHT` or more (one hash per 64
leaves): about 32.5 MB per million leaves. A subtree lower than that is
recomputed from its leaves when a proof needs it (at most 127 node hashes), so
a proof costs at most a few thousand hashes and never a pass over the log.
Appending a leaf costs its hash and, on average, one node hash: the compact
range (the roots of the complete subtrees that make up the tree, left
to right) is merged as the binary representation of the size carries.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable, Sequence

HASH_SIZE = 32
STORED_HEIGHT = 7
"""Complete subtrees of 2**7 = 128 leaves or more are stored; lower ones are recomputed."""

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""The root hash of the empty tree (RFC 6962: the hash of the empty string)."""

_sha256 = hashlib.sha256


def leaf_hash(leaf: bytes) -> bytes:
    """``SHA-256(0x00 || leaf)``."""
    return _sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``."""
    return _sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n > 1): where RFC 6962 splits a tree."""
    return 1 << ((n - 1).bit_length() - 1)


class MerkleTree:
    """An append-only RFC 6962 tree; safe to append from one thread and prove from another."""

    def __init__(self) -> None:
        self._leaves = bytearray()
        self._levels: list[bytearray] = [bytearray() for _ in range(64)]
        self._range: list[bytes] = []
        """Roots of the complete subtrees making up the tree, largest (leftmost) first."""
        self._size = 0
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        return self._size

    def append(self, hashes: Iterable[bytes]) -> None:
        """Add leaves by their leaf hashes (:func:`leaf_hash`)."""
        with self._lock:
            leaves, levels, compact = self._leaves, self._levels, self._range
            size = self._size
            for value in hashes:
                leaves += value
                size += 1
                carry, height = size, 0
                while not carry & 1:  # each trailing zero of the new size completes a subtree
                    value = _sha256(b"\x01" + compact.pop() + value).digest()
                    height += 1
                    if height >= STORED_HEIGHT:
                        levels[height] += value
                    carry >>= 1
                compact.append(value)
            self._size = size

    def root(self, size: int | None = None) -> bytes:
        """The root hash of the tree of the first ``size`` leaves (default: all)."""
        with self._lock:
            if size is None or size == self._size:
                if not self._range:
                    return EMPTY_ROOT
                value = self._range[-1]
                for left in reversed(self._range[:-1]):
                    value = node_hash(left, value)
                return value
            self._check_size(size)
            return EMPTY_ROOT if size == 0 else self._hash(0, size)

    def leaf(self, index: int) -> bytes:
        """The leaf hash at ``index``."""
        with self._lock:
            if not 0 <= index < self._size:
                raise IndexError(f"no leaf {index} in a tree of {self._size}")
            return bytes(self._leaves[index * HASH_SIZE : (index + 1) * HASH_SIZE])

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """The audit path of leaf ``index`` in the tree of ``size`` leaves (RFC 6962 PATH)."""
        with self._lock:
            self._check_size(size)
            if not 0 <= index < size:
                raise ValueError(f"index {index} is not in a tree of size {size}")
            return self._path(index, 0, size)

    def consistency_proof(self, first: int, second: int) -> list[bytes]:
        """The proof that the tree of ``first`` leaves is a prefix of that of ``second``.

        RFC 6962 PROOF(m, D[n]); empty when ``first`` is 0 or equals ``second``.
        """
        with self._lock:
            self._check_size(second)
            if not 0 <= first <= second:
                raise ValueError(f"sizes must satisfy 0 <= from <= to, not {first} and {second}")
            if first in (0, second):
                return []
            return self._subproof(first, 0, second, True)

    def _check_size(self, size: int) -> None:
        if not 0 <= size <= self._size:
            raise ValueError(f"tree size {size} is beyond the {self._size} leaves in the log")

    def _path(self, index: int, lo: int, hi: int) -> list[bytes]:
        if hi - lo == 1:
            return []
        k = _split(hi - lo)
        if index < lo + k:
            return [*self._path(index, lo, lo + k), self._hash(lo + k, hi)]
        return [*self._path(index, lo + k, hi), self._hash(lo, lo + k)]

    def _subproof(self, m: int, lo: int, hi: int, whole: bool) -> list[bytes]:
        n = hi - lo
        if m == n:
            return [] if whole else [self._hash(lo, hi)]
        k = _split(n)
        if m <= k:
            return [*self._subproof(m, lo, lo + k, whole), self._hash(lo + k, hi)]
        return [*self._subproof(m - k, lo + k, hi, False), self._hash(lo, lo + k)]

    def _hash(self, lo: int, hi: int) -> bytes:
        """MTH of leaves ``lo..hi-1``; ``lo`` is a multiple of the largest power of two below."""
        n = hi - lo
        if n & (n - 1) == 0:
            return self._complete(n.bit_length() - 1, lo)
        k = _split(n)
        return node_hash(self._hash(lo, lo + k), self._hash(lo + k, hi))

    def _complete(self, height: int, lo: int) -> bytes:
        """The root of the complete subtree of ``2**height`` leaves starting at ``lo``."""
        if height == 0:
            return bytes(self._leaves[lo * HASH_SIZE : (lo + 1) * HASH_SIZE])
        if height >= STORED_HEIGHT:
            at = (lo >> height) * HASH_SIZE
            return bytes(self._levels[height][at : at + HASH_SIZE])
        start, end = lo * HASH_SIZE, (lo + (1 << height)) * HASH_SIZE
        view = memoryview(self._leaves)[start:end]
        row = [view[i : i + HASH_SIZE].tobytes() for i in range(0, end - start, HASH_SIZE)]
        while len(row) > 1:
            row = [node_hash(row[i], row[i + 1]) for i in range(0, len(row), 2)]
        return row[0]


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> bool:
    """Whether ``proof`` shows leaf hash ``leaf`` at ``index`` in the tree ``(size, root)``.

    RFC 9162 section 2.1.3.2.
    """
    if not 0 <= index < size:
        return False
    fn, sn, value = index, size - 1, leaf
    for sibling in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            value = node_hash(sibling, value)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            value = node_hash(value, sibling)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and value == root


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> bool:
    """Whether ``proof`` shows the tree ``(first, first_root)`` is a prefix of ``(second, ...)``.

    RFC 9162 section 2.1.4.2; a tree of size 0 is a prefix of every tree, and
    equal sizes need equal roots and an empty proof.
    """
    if not 0 <= first <= second:
        return False
    if first == 0:
        return not proof
    if first == second:
        return not proof and first_root == second_root
    if not proof:
        return False
    path = list(proof)
    if first & (first - 1) == 0:
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for value in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(value, fr)
            sr = node_hash(value, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, value)
        fn, sn = fn >> 1, sn >> 1
    return fr == first_root and sr == second_root and sn == 0


__all__ = [
    "EMPTY_ROOT",
    "MerkleTree",
    "leaf_hash",
    "node_hash",
    "verify_consistency",
    "verify_inclusion",
]
