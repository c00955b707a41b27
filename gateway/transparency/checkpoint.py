"""C2SP ``tlog-checkpoint``: the note text that commits to one size and root of the tree.

::

    <origin>
    <tree size, decimal>
    <root hash, base64>

The gateway's origin is ``transparency.origin``, by default the name of its
log key.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from gateway.transparency.note import Note, NoteError, Verifier

_SIZE = re.compile(r"0|[1-9][0-9]{0,19}")


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: the log's origin, its size and its root hash."""

    origin: str
    size: int
    root: bytes

    @property
    def text(self) -> str:
        """The note text (``tlog-checkpoint`` body, no extension lines)."""
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Read a checkpoint's note text; extension lines are allowed and ignored. NoteError."""
        lines = text.split("\n")
        if len(lines) < 4 or lines[-1] != "":
            raise NoteError("a checkpoint has an origin, a size and a root hash, each on a line")
        origin, size, root = lines[0], lines[1], lines[2]
        if not origin:
            raise NoteError("a checkpoint's origin line is empty")
        if not _SIZE.fullmatch(size):
            raise NoteError(f"checkpoint tree size {size!r} is not a decimal number")
        try:
            raw = base64.b64decode(root, validate=True)
        except (binascii.Error, ValueError):
            raise NoteError("checkpoint root hash is not base64") from None
        if len(raw) != 32:
            raise NoteError("checkpoint root hash is not 32 bytes")
        return cls(origin, int(size), raw)


@dataclass(frozen=True)
class SignedCheckpoint:
    """A checkpoint and its signed note (the log's signature, then any cosignatures)."""

    checkpoint: Checkpoint
    note: Note

    @classmethod
    def open(cls, message: str, log_key: Verifier, origin: str | None = None) -> SignedCheckpoint:
        """Parse a signed checkpoint and verify the log's signature; raise NoteError.

        With ``origin``, the checkpoint must be of the log of that name.
        """
        note = Note.parse(message)
        note.verified_by(log_key)
        checkpoint = Checkpoint.parse(note.text)
        if origin is not None and checkpoint.origin != origin:
            raise NoteError(f"checkpoint of {checkpoint.origin!r}, not of {origin!r}")
        return cls(checkpoint, note)

    def __str__(self) -> str:
        return str(self.note)


__all__ = ["Checkpoint", "SignedCheckpoint"]
