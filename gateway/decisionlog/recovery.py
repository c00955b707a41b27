"""Finding the head of the chain when a writer starts, after a clean stop or a crash.

A crash can leave the current file's last line half written: the bytes after
the last newline. That piece is copied to ``<path>.torn-<time>`` (never
deleted), the file is cut back to its last whole line, and the chain goes on
from that record. A complete line (ending in a newline) that is not a valid
record is not something a crash leaves: the log was altered, and the writer
refuses to start rather than build on it or hide it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from gateway.decisionlog.errors import DecisionLogError, RecordError
from gateway.decisionlog.files import fsync_dir, rotated_files
from gateway.decisionlog.record import parse_line

logger = logging.getLogger(__name__)

_BLOCK = 64 * 1024


@dataclass(frozen=True)
class Head:
    """Where the chain stands: what the next record gets, and the current file's state."""

    next_seq: int
    prev: str | None
    size: int
    """Bytes of whole records in the current file."""
    file_first: tuple[str, int] | None
    """``time`` and ``seq`` of the current file's first record; None when it is empty."""


def recover(path: Path) -> Head:
    """The head of the chain whose current file is ``path``; set aside a torn tail first.

    When the current file is missing or empty (just rotated), the head is the
    last record of the newest rotated file. Raise DecisionLogError when a record
    the head depends on is damaged.
    """
    try:
        current = open(path, "r+b")  # noqa: SIM115 (a with block follows)
    except FileNotFoundError:
        pass
    else:
        with current:
            last, size = _cut_torn_tail(path, current)
            if last is not None:
                current.seek(0)
                first = _read(path, 0, current.readline().rstrip(b"\n"))
                return Head(last["seq"] + 1, last["hash"], size, (first["time"], first["seq"]))
    for rotated in reversed(rotated_files(path)):
        with open(rotated, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            if size == 0:
                continue
            tail_start, lines = _last_lines(file, size, 1)
            if tail_start != size or not lines:
                raise DecisionLogError(
                    f"{rotated}: the last line is incomplete; run agora log verify"
                )
            last = _read(rotated, *lines[-1])
            return Head(last["seq"] + 1, last["hash"], 0, None)
    return Head(1, None, 0, None)


def _cut_torn_tail(path: Path, file: BinaryIO) -> tuple[dict[str, Any] | None, int]:
    """Set aside an unterminated tail of the current file; its last record and new size.

    The last complete line must be a valid record: raise DecisionLogError if not.
    """
    size = os.fstat(file.fileno()).st_size
    if size == 0:
        return None, 0
    keep, lines = _last_lines(file, size, 1)
    last = _read(path, *lines[-1]) if lines else None
    if keep < size:
        _set_aside(path, file, keep, size)
    os.fsync(file.fileno())  # what a killed writer left in the page cache
    return last, keep


def _set_aside(path: Path, file: BinaryIO, keep: int, size: int) -> None:
    file.seek(keep)
    torn = file.read(size - keep)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    target = path.with_name(f"{path.name}.torn-{stamp}")
    with open(target, "xb") as out:
        out.write(torn)
        out.flush()
        os.fsync(out.fileno())
    fsync_dir(path.parent)
    file.truncate(keep)
    logger.warning(
        "decision log %s: torn record at byte offset %d (%d bytes, no trailing newline) "
        "set aside in %s; the chain continues from the record before it",
        path, keep, size - keep, target,
    )  # fmt: skip


def _last_lines(file: BinaryIO, size: int, count: int) -> tuple[int, list[tuple[int, bytes]]]:
    """Where the unterminated tail starts, and up to ``count`` whole lines before it.

    Lines come as (byte offset, content without newline). Reads backwards in
    growing blocks, so that a large file costs only its tail.
    """
    window = _BLOCK
    while True:
        start = max(0, size - window)
        file.seek(start)
        parts = file.read(size - start).split(b"\n")
        whole = parts[:-1] if start == 0 else parts[1:-1]  # parts[0] may be cut
        if len(whole) >= count or start == 0:
            break
        window *= 2
    tail_start = size - len(parts[-1])
    lines: list[tuple[int, bytes]] = []
    offset = tail_start
    for content in reversed(whole[-count:]):
        offset -= len(content) + 1
        lines.append((offset, content))
    return tail_start, lines[::-1]


def _read(path: Path, offset: int, content: bytes) -> dict[str, Any]:
    """A complete line the head depends on: a valid record, or the log was altered."""
    try:
        return parse_line(content)
    except RecordError as exc:
        raise DecisionLogError(
            f"{path}: the record at byte offset {offset} is complete but invalid ({exc}): "
            "the log was altered (a crash only ever leaves an unterminated last line); "
            "refusing to continue the chain: run agora log verify"
        ) from None
