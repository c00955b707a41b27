"""Checking a decision log from its files alone, and recounting it.

Files may be named in any order: they are put in chain order by the ``seq`` of
their first record. Every line must be a valid record (hash, canonical form),
``seq`` must go up by one from 1, and every ``prev`` must be the ``hash`` of the
record before it, across file boundaries. Files are streamed line by line.

Only one kind of damage can come from a crash: an unterminated last line of
the last file (a write cut short), which the writer sets aside when it
starts. Any other bad line means the files were altered.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.decisionlog.errors import DecisionLogError, RecordError
from gateway.decisionlog.files import first_seq_in_name
from gateway.decisionlog.record import parse_line
from gateway.decisionlog.tally import LogStats, Tally

_SEQ = re.compile(rb'"seq":(\d+)')


@dataclass(frozen=True)
class BadRecord:
    """The first line that breaks the chain."""

    file: Path
    line: int
    """1-based line number in ``file``."""
    seq: int | None
    """The ``seq`` the line claims, when it can be read."""
    reason: str
    torn: bool = False
    """An unterminated last line of the last file: a write cut by a crash, not an alteration."""

    def __str__(self) -> str:
        seq = "?" if self.seq is None else self.seq
        return f"{self.file}:{self.line} (seq {seq}): {self.reason}"

    @property
    def diagnosis(self) -> str:
        """What the bad line means for the log: a crash's torn write, or tampering."""
        if self.torn:
            return "a write cut short by a crash; the gateway sets it aside when it starts"
        return "a complete line that is not a valid link of the chain: the log was altered"


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of :func:`verify`: what was verified, up to the first bad record if any."""

    count: int
    """Records verified (all of them when ``ok``)."""
    head: str | None
    """``hash`` of the last verified record."""
    files: tuple[Path, ...]
    """The files in chain order."""
    first_bad: BadRecord | None

    @property
    def ok(self) -> bool:
        return self.first_bad is None


class ChainBroken(DecisionLogError):
    """The files do not form a valid chain; counts from them would not be evidence."""

    def __init__(self, bad: BadRecord) -> None:
        super().__init__(f"the decision log chain is broken at {bad}")
        self.bad = bad


def verify(paths: Iterable[Path], *, partial: bool = False) -> VerifyResult:
    """Check every hash and link of the chain stored in ``paths`` (any order).

    The chain must start at the first record ever (seq 1, prev null) unless
    ``partial``: then the files are a later part of it (older files archived),
    and the first record is taken on trust.
    """
    return _scan(paths, partial, lambda record: None)


def stats(
    paths: Iterable[Path],
    *,
    partial: bool = False,
    also: Callable[[dict[str, Any]], None] | None = None,
) -> LogStats:
    """Counts per policy version and outcome, from files that verify; raise ChainBroken.

    See :mod:`gateway.decisionlog.tally` for what each figure counts. ``also``
    sees every record too (the figures of :mod:`gateway.decisionlog.figures`).
    """
    tally = Tally()

    def visit(record: dict[str, Any]) -> None:
        tally.add_record(record)
        if also is not None:
            also(record)

    result = _scan(paths, partial, visit)
    if result.first_bad is not None:
        raise ChainBroken(result.first_bad)
    return tally.snapshot(result.count, result.head)


def chain_order(paths: Iterable[Path]) -> list[Path]:
    """Files in chain order: by their first record's ``seq``, else the seq in a rotated name.

    Empty files (a current file just after rotation) and unreadable ones go last.
    """
    keyed = []
    for path in paths:
        first = _first_line_seq(path)
        if first is None:
            first = first_seq_in_name(path)
        keyed.append(((first is None, first or 0, path.name), path))
    return [path for _, path in sorted(keyed)]


def _scan(
    paths: Iterable[Path], partial: bool, visit: Callable[[dict[str, Any]], None]
) -> VerifyResult:
    files = tuple(chain_order(paths))
    count = 0
    head: str | None = None
    expected: int | None = None if partial else 1
    for path in files:
        with open(path, "rb") as file:
            for number, raw in enumerate(file, 1):
                try:
                    record = _read(raw)
                    _check_link(record, expected, head, first=count == 0, partial=partial)
                except _Broken as exc:
                    torn = not raw.endswith(b"\n") and path == files[-1]
                    bad = BadRecord(path, number, exc.seq, exc.reason, torn)
                    return VerifyResult(count, head, files, bad)
                visit(record)
                count += 1
                head = record["hash"]
                expected = record["seq"] + 1
    return VerifyResult(count, head, files, None)


class _Broken(Exception):
    def __init__(self, reason: str, seq: int | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.seq = seq


def _read(raw: bytes) -> dict[str, Any]:
    if not raw.endswith(b"\n"):
        raise _Broken("torn line: no trailing newline", _claimed_seq(raw))
    try:
        return parse_line(raw[:-1])
    except RecordError as exc:
        raise _Broken(str(exc), _claimed_seq(raw)) from None


def _check_link(
    record: dict[str, Any], expected: int | None, prev: str | None, *, first: bool, partial: bool
) -> None:
    seq: int = record["seq"]
    if expected is not None and seq != expected:
        hint = " (earlier files missing? see --partial)" if first else ""
        raise _Broken(f"seq gap: expected seq {expected}, found {seq}{hint}", seq)
    if first and not partial and record["prev"] is not None:
        raise _Broken("broken link: the first record must have prev null (see --partial)", seq)
    if record["prev"] != prev and not first:
        raise _Broken("broken link: prev is not the hash of the record before", seq)


def _first_line_seq(path: Path) -> int | None:
    with open(path, "rb") as file:
        line = file.readline()
    try:
        record = json.loads(line)
    except ValueError:
        return None
    seq = record.get("seq") if isinstance(record, dict) else None
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else None


def _claimed_seq(raw: bytes) -> int | None:
    """Best effort: the top-level ``seq`` is the last one in a canonical line (keys sort)."""
    found = _SEQ.findall(raw)
    return int(found[-1]) if found else None
