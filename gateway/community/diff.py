"""A file-by-file diff of two policy bundles, so that a voter sees exactly what would change."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

Change = Literal["added", "removed", "changed", "unchanged"]
CONTEXT_LINES = 3
MAX_DIFF_BYTES = 512 * 1024
"""Files larger than this (either side) are reported as changed without lines: a diff's cost
grows faster than the file, and a proposal's bundle is whatever its author made it."""


@dataclass(frozen=True)
class FileDiff:
    """One file's change, with its unified diff (empty when unchanged, or not text)."""

    path: str
    change: Change
    lines: tuple[str, ...]
    binary: bool = False
    """Changed, but not shown line by line: not UTF-8 text, or too large."""

    @property
    def added(self) -> int:
        return sum(1 for line in self.lines if line.startswith("+") and not line.startswith("+++"))

    @property
    def removed(self) -> int:
        return sum(1 for line in self.lines if line.startswith("-") and not line.startswith("---"))


def diff_bundles(
    old: Mapping[str, bytes], new: Mapping[str, bytes], old_label: str, new_label: str
) -> list[FileDiff]:
    """Every file of either bundle, by path, with what changed from ``old`` to ``new``.

    Files are compared byte for byte; a changed file that is not UTF-8 text, or
    is larger than ``MAX_DIFF_BYTES``, is reported as changed without lines.
    Costs time in proportion to the files: call it off the event loop.
    """
    diffs = []
    for path in sorted(old.keys() | new.keys()):
        before, after = old.get(path), new.get(path)
        if before == after:
            diffs.append(FileDiff(path, "unchanged", ()))
            continue
        change: Change = "added" if before is None else "removed" if after is None else "changed"
        before_text, after_text = _text(before), _text(after)
        if before_text is None or after_text is None:
            diffs.append(FileDiff(path, change, (), binary=True))
            continue
        lines = difflib.unified_diff(
            before_text.splitlines(),
            after_text.splitlines(),
            fromfile=f"{old_label}/{path}" if before is not None else "/dev/null",
            tofile=f"{new_label}/{path}" if after is not None else "/dev/null",
            n=CONTEXT_LINES,
            lineterm="",
        )
        diffs.append(FileDiff(path, change, tuple(lines)))
    return diffs


def _text(content: bytes | None) -> str | None:
    if content is None:
        return ""
    if len(content) > MAX_DIFF_BYTES:
        return None
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError:
        return None
