"""Where the records of one chain live: the current file and its rotated files.

The current file is the configured path (``decisions.jsonl``). A rotated file
sits beside it as ``decisions.<YYYYmmddTHHMMSS>Z-<first seq, 12 digits>.jsonl``,
named after its first record, so that names sort in chain order.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Iterable
from pathlib import Path

from gateway.decisionlog.errors import DecisionLogError

SEQ_DIGITS = 12


def rotated_name(path: Path, first_time: str, first_seq: int) -> Path:
    """The name a rotated file gets, from its first record's ``time`` and ``seq``."""
    stamp = first_time[:19].replace("-", "").replace(":", "") + "Z"
    return path.with_name(f"{path.stem}.{stamp}-{first_seq:0{SEQ_DIGITS}d}{path.suffix}")


def rotated_files(path: Path) -> list[Path]:
    """The rotated files of the chain whose current file is ``path``, in chain order."""
    pattern = re.compile(
        rf"{re.escape(path.stem)}\.\d{{8}}T\d{{6}}Z-(\d{{{SEQ_DIGITS},}}){re.escape(path.suffix)}"
    )
    found: list[tuple[int, Path]] = []
    try:
        names = os.listdir(path.parent)
    except FileNotFoundError:
        return []
    for name in names:
        match = pattern.fullmatch(name)
        if match:
            found.append((int(match.group(1)), path.with_name(name)))
    return [p for _, p in sorted(found)]


def first_seq_in_name(path: Path) -> int | None:
    """The first seq a rotated file's name declares, or None for other names."""
    match = re.search(rf"\.\d{{8}}T\d{{6}}Z-(\d{{{SEQ_DIGITS},}})\.[^.]*$", path.name)
    return int(match.group(1)) if match else None


PATHS_HELP = "log files, or directories standing for their *.jsonl files; any order"
"""The help text of a command-line argument that :func:`expand` reads."""


def expand(paths: Iterable[Path]) -> list[Path]:
    """Files named on a command line: a directory stands for its ``*.jsonl`` files.

    Duplicates are dropped. Raise DecisionLogError for a path that does not exist
    or a directory without log files.
    """
    files: dict[Path, None] = {}
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.glob("*.jsonl") if p.is_file())
            if not found:
                raise DecisionLogError(f"{path}: no *.jsonl files in this directory")
            files.update(dict.fromkeys(found))
        elif path.is_file():
            files[path] = None
        else:
            raise DecisionLogError(f"{path}: no such file or directory")
    unique: dict[Path, Path] = {}
    for file in files:
        unique.setdefault(file.resolve(), file)
    return list(unique.values())


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new file in ``directory`` survive a crash."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def lock_exclusively(path: Path) -> int:
    """Take ``<path>.lock`` for this process alone: one writer per log; the descriptor to close."""
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DecisionLogError(
            f"decision log {path} is in use by another writer; "
            "give each gateway process its own decision_log.path"
        ) from None
    return fd
