"""Decision ids: random (version 4) UUIDs, one per request, from pooled randomness.

``str(uuid.uuid4())`` reads 16 bytes from the OS (a system call) and builds a
UUID object for each request; reading the OS's randomness 4 KiB at a time and
writing the text directly gives the same ids for a quarter of the CPU.
"""

from __future__ import annotations

import os

_POOL_BYTES = 16 * 256
_VARIANT = "89ab"
"""RFC 4122 variant: ``10`` in the top bits of byte 8, so its first hex digit is one of these."""


class DecisionIds:
    """Random UUIDv4 texts, as ``str(uuid.uuid4())`` writes them.

    Not thread-safe: one instance serves the event loop. A forked child starts
    with a pool of its own, never its parent's ids.
    """

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._pool, self._at = b"", 0

    def next(self) -> str:
        at = self._at
        if at >= len(self._pool):
            self._pool, at = os.urandom(_POOL_BYTES), 0
        self._at = at + 16
        digits = self._pool[at : at + 16].hex()
        variant = _VARIANT[int(digits[16], 16) & 3]
        return (
            f"{digits[:8]}-{digits[8:12]}-4{digits[13:16]}-{variant}{digits[17:20]}-{digits[20:]}"
        )


decision_ids = DecisionIds()
"""The event loop's decision ids."""
