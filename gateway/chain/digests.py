"""Bundle digests: ``sha256:<64 hex>`` in Python and in files, ``bytes32`` on chain."""

from __future__ import annotations

import re

from gateway.exceptions import ChainError

PREFIX = "sha256:"
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
ZERO_BYTES32 = bytes(32)


def to_bytes32(digest: str) -> bytes:
    """The ``bytes32`` value stored on chain for ``digest``."""
    if not _DIGEST.fullmatch(digest):
        raise ChainError(f"{digest!r} is not a bundle digest (expected sha256:<64 lower-case hex>)")
    return bytes.fromhex(digest.removeprefix(PREFIX))


def from_bytes32(value: bytes) -> str:
    """The ``sha256:<hex>`` string for a ``bytes32`` read from chain."""
    if len(value) != 32:
        raise ChainError(f"expected 32 bytes for a digest, got {len(value)}")
    return PREFIX + value.hex()
