"""Reading the chain back from its files, from a given ``seq`` on, while the writer appends.

A reader of the log (the shipping sink) never talks to the writer: it follows
the files. It finds the file that holds the record it wants (rotated files are
named after their first ``seq``), reads whole lines only (a line without its
newline is still being written, or is a torn write that the writer will set
aside), and when it reaches the end of a file that the writer has since
rotated away, goes on in the next one. Every record it hands out is checked
for its place in the chain: the expected ``seq``, and a ``prev`` that links it
to the record before, so that a reader resuming after a restart notices a log
that was replaced or cut instead of shipping another chain.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from gateway.decisionlog.errors import DecisionLogError
from gateway.decisionlog.files import first_seq_in_name, rotated_files

_CHUNK = 1 << 20
_SHA256 = re.compile(r"sha256:[0-9a-f]{64}")


class Entry(NamedTuple):
    """A record of the chain, and its line in the file (without the newline)."""

    record: dict[str, Any]
    line: bytes


class TailError(DecisionLogError):
    """The records wanted are not in the files, or the files do not continue the chain."""


class ChainTail:
    """Records of the chain whose current file is ``path``, from ``next_seq`` on.

    ``prev`` is the ``hash`` of record ``next_seq - 1`` (None when ``next_seq``
    is 1, or when the first record found is taken on trust: ``trust_first``).
    Not thread-safe: one call at a time (the sink calls it from a worker thread).
    """

    def __init__(
        self, path: Path, next_seq: int, prev: str | None, *, trust_first: bool = False
    ) -> None:
        self._path = path
        self._next_seq = next_seq
        self._prev = prev
        self._trust_first = trust_first
        self._file: BinaryIO | None = None
        self._file_name = path
        self._finished: tuple[int, int] | None = None
        """Device and inode of the last file read to its end after its rotation."""
        self._buffer = b""
        self._at = 0
        """Where the unread part of ``_buffer`` starts."""
        self._confirmed = next_seq == 1 or trust_first
        """Whether the files were seen to hold record ``next_seq - 1`` (or to start after it)."""
        self.last_seen = 0
        """The highest ``seq`` read from the files so far."""

    @property
    def next_seq(self) -> int:
        return self._next_seq

    def read(self, limit: int) -> list[Entry]:
        """Up to ``limit`` records written since the last call, in chain order, with their lines.

        Returns an empty list when nothing new is complete yet. Raise TailError
        when the record wanted is not in the files (archived away, or the log
        was replaced by a shorter one) or a record does not continue the chain.
        """
        found: list[Entry] = []
        while len(found) < limit:
            if self._file is None and not self._open_next():
                break
            line = self._line()
            if line is None:
                if not self._rotated_away():
                    self._check_position()
                    break
                line = self._line()  # written between the last read and the rename
                if line is None:
                    self._finish()
                    continue
            record = self._check(line)
            if record is not None:
                found.append(Entry(record, line))
        return found

    def close(self) -> None:
        self._close()

    def _line(self) -> bytes | None:
        """The next whole line of the open file (without its newline), or None for now."""
        assert self._file is not None
        while True:
            end = self._buffer.find(b"\n", self._at)
            if end >= 0:
                line, self._at = self._buffer[self._at : end], end + 1
                return line
            chunk = self._file.read(_CHUNK)
            if not chunk:
                self._unread_partial_line()
                return None
            self._buffer, self._at = self._buffer[self._at :] + chunk, 0

    def _unread_partial_line(self) -> None:
        """At the end of the file, go back to the start of an unfinished line: read it anew later.

        The writer may cut the file there (it sets aside a torn last line when it
        starts, and cuts back to the last fsync after a failed write, then writes
        the same records again), so bytes of an unfinished line are never kept.
        """
        assert self._file is not None
        if len(self._buffer) > self._at:
            self._file.seek(self._at - len(self._buffer), os.SEEK_CUR)
        self._buffer, self._at = b"", 0

    def _check_position(self) -> None:
        """At the end of the current file: it must have held the record read before ``next_seq``."""
        if not self._confirmed:
            raise TailError(
                f"{self._path}: the log ends at seq {self.last_seen}, but it was read up to seq "
                f"{self._next_seq - 1} before: the log was cut or replaced"
            )

    def _check(self, line: bytes) -> dict[str, Any] | None:
        """The record on ``line`` if it is the one wanted next; None for one before it."""
        record = self._parse(line)
        seq = record["seq"]
        self.last_seen = max(self.last_seen, seq)
        if seq < self._next_seq:
            if seq != self._next_seq - 1:
                return None
            self._confirmed = True
            if self._prev is not None and record["hash"] != self._prev:
                raise TailError(
                    f"{self._file_name}: record {seq} has hash {record['hash']}, not {self._prev} "
                    "as when it was read before: the log was replaced or altered"
                )
            return None
        if seq != self._next_seq:
            raise TailError(
                f"{self._file_name}: expected seq {self._next_seq}, found {seq}: "
                f"records {self._next_seq} to {seq - 1} are not in the files"
            )
        if record["prev"] != self._prev and not self._trust_first:
            raise TailError(
                f"{self._file_name}: record {seq} does not link to the record before it "
                f"(prev {record['prev']}, expected {self._prev}): the log was replaced or altered"
            )
        self._trust_first, self._confirmed = False, True
        self._next_seq, self._prev = seq + 1, record["hash"]
        return record

    def _parse(self, line: bytes) -> dict[str, Any]:
        """A record as the writer writes it: JSON with ``seq``, ``prev`` and ``hash`` last.

        The links are checked here; each record's hash is not recomputed (the
        writer made it a moment ago; the receiver, holding the record, and
        ``agora log verify`` check it), which makes following the log about
        twice as fast.
        """
        try:
            record = json.loads(line)
        except ValueError:
            raise TailError(f"{self._file_name}: bad JSON: the log was altered") from None
        if not isinstance(record, dict) or not _links_ok(record, line):
            raise TailError(f"{self._file_name}: not a record of the chain: the log was altered")
        return record

    def _rotated_away(self) -> bool:
        """Whether the open file is no longer the current file: the writer rotated it."""
        assert self._file is not None
        try:
            current = os.stat(self._path)
        except FileNotFoundError:
            return True
        opened = os.fstat(self._file.fileno())
        return (current.st_dev, current.st_ino) != (opened.st_dev, opened.st_ino)

    def _open_next(self) -> bool:
        """Open the file that holds ``next_seq`` (or would: the current file); False for none yet.

        That is the last file whose first record is at or before ``next_seq``.
        Raise TailError when every file starts after it (records archived away).
        """
        candidates: list[tuple[int, Path]] = []
        for rotated in rotated_files(self._path):
            first = first_seq_in_name(rotated)
            if first is not None:
                candidates.append((first, rotated))
        current_first = self._first_seq(self._path)
        if current_first is not None:
            candidates.append((current_first, self._path))
        if not candidates:
            if self._next_seq > 1 and not self._trust_first:
                raise TailError(
                    f"{self._path}: no records in the files, but the chain was read up to "
                    f"seq {self._next_seq - 1}: the log was replaced or removed"
                )
            return False
        before = [c for c in candidates if c[0] <= self._next_seq]
        if not before:
            earliest = min(candidates)[0]
            if self._trust_first and self._prev is None:
                self._next_seq = earliest
                before = [min(candidates)]
            else:
                raise TailError(
                    f"{self._path}: the files start at seq {earliest}; records "
                    f"{self._next_seq} to {earliest - 1} are not in them (archived or removed)"
                )
        first, chosen = max(before)
        try:
            file = open(chosen, "rb")  # noqa: SIM115 (closed by _close)
        except FileNotFoundError:
            return False  # rotated between the listing and the open: try again next time
        opened = os.fstat(file.fileno())
        if (opened.st_dev, opened.st_ino) == self._finished:
            file.close()
            return False  # read to its end already; the file after it is not there yet
        if first >= self._next_seq:
            self._confirmed = True  # record next_seq - 1 is before this file: prev links them
        self._file, self._file_name, self._buffer, self._at = file, chosen, b"", 0
        return True

    def _first_seq(self, path: Path) -> int | None:
        try:
            with open(path, "rb") as file:
                first = file.readline()
        except FileNotFoundError:
            return None
        if not first.endswith(b"\n"):
            return None
        seq: int = self._parse(first[:-1])["seq"]
        return seq

    def _finish(self) -> None:
        """Close a file read to its end after its rotation: the chain goes on in the next one."""
        assert self._file is not None
        opened = os.fstat(self._file.fileno())
        self._finished = (opened.st_dev, opened.st_ino)
        self._close()

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._buffer, self._at = b"", 0


def _links_ok(record: dict[str, Any], line: bytes) -> bool:
    """``seq``, ``prev`` and ``hash`` of the right types, and ``hash`` last on the line."""
    seq, prev, digest = record.get("seq"), record.get("prev"), record.get("hash")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        return False
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        return False
    return (prev is None or isinstance(prev, str)) and line.endswith(
        b',"hash":"' + digest.encode() + b'"}'
    )
