"""``<log path>.checkpoints``: the checkpoints signed over a decision log, in order, and the
cosignatures witnesses handed in for them.

JSON Lines, appended and fsynced: ``{"checkpoint": "<signed note>"}`` for each
checkpoint, ``{"size": N, "cosignature": "<signature line>"}`` for each
cosignature taken. A crash can only leave an unterminated last line: a
checkpoint that was never served (it is published once on disk); it is dropped.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from gateway.decisionlog.errors import DecisionLogError
from gateway.decisionlog.files import fsync_dir
from gateway.transparency.checkpoint import Checkpoint, SignedCheckpoint
from gateway.transparency.note import Note

logger = logging.getLogger("agora.transparency")

Entry = SignedCheckpoint | tuple[int, str]
"""A signed checkpoint, or a cosignature: the size of its checkpoint and its line."""


class CheckpointFile:
    """The checkpoints file beside one decision log."""

    def __init__(self, log_path: Path) -> None:
        self.path = log_path.with_name(log_path.name + ".checkpoints")

    def read(self) -> Iterator[Entry]:
        """The entries in order; raise DecisionLogError for a line that is not one."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        whole = data[: data.rfind(b"\n") + 1]
        if len(whole) < len(data):
            logger.warning("%s: dropping an unterminated last line", self.path)
            with open(self.path, "r+b") as file:
                file.truncate(len(whole))
                os.fsync(file.fileno())
        for number, line in enumerate(whole.splitlines(), 1):
            try:
                entry = json.loads(line)
                if "checkpoint" in entry:
                    note = Note.parse(entry["checkpoint"])
                    yield SignedCheckpoint(Checkpoint.parse(note.text), note)
                else:
                    yield int(entry["size"]), str(entry["cosignature"])
            except (ValueError, KeyError, TypeError) as exc:
                message = f"{self.path}:{number}: not a checkpoint entry ({exc})"
                raise DecisionLogError(message) from None

    def append_checkpoint(self, signed: SignedCheckpoint) -> None:
        self._append({"checkpoint": str(signed.note)})

    def append_cosignature(self, size: int, line: str) -> None:
        self._append({"size": size, "cosignature": line})

    def _append(self, entry: dict[str, object]) -> None:
        data = memoryview((json.dumps(entry, ensure_ascii=False) + "\n").encode())
        created = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            while data:
                data = data[os.write(fd, data) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            fsync_dir(self.path.parent)


__all__ = ["CheckpointFile", "Entry"]
