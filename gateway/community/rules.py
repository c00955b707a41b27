"""A policy bundle as people read it: each rule file's purpose and reasons, the data as tables.

Read from the bundle's own files, nothing else: the first comment block of each
Rego file (what its rules are for), the reason sentences its deny rules give
(``sprintf`` templates, ``msg := "..."`` and ``contains "..."`` messages, with
``%s``/``%v`` standing for the request's values; a template of fewer than three
words is a label, not a reason), and every ``data.json`` turned into tables (model lists,
caps, patterns). Tests (``*_test.rego``, ``tests/``) are left out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

_SPRINTF = re.compile(r'sprintf\(\s*"((?:[^"\\]|\\.)*)"')
_MESSAGE = re.compile(r'\b(?:msg\s*:?=|contains)\s*"((?:[^"\\]|\\.)*)"')
_PACKAGE = re.compile(r"^package\s+([\w.]+)", re.MULTILINE)
_VERB = re.compile(r"%[-+# 0-9.]*[a-zA-Z]")
_WORD = re.compile(r"[A-Za-z]{2,}")
MIN_WORDS = 3
"""A reason is a sentence: a template with fewer words (``"%s: %s"``, a label) is not one."""


@dataclass(frozen=True)
class RuleFile:
    """One Rego file of the bundle: its package, what its comments say, the reasons it gives."""

    path: str
    package: str
    summary: str
    reasons: tuple[str, ...]
    source: str


@dataclass(frozen=True)
class Table:
    """A table of a ``data.json``: a caption, column names and rows of text cells."""

    caption: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class ReadableBundle:
    rule_files: tuple[RuleFile, ...]
    tables: tuple[Table, ...]


def readable(files: Mapping[str, bytes]) -> ReadableBundle:
    """The rule files and data tables of a bundle's files (paths relative to its root)."""
    rule_files = []
    tables: list[Table] = []
    for path in sorted(files):
        pure = PurePosixPath(path)
        if _is_test(pure):
            continue
        text = files[path].decode("utf-8", errors="replace")
        if pure.suffix == ".rego":
            rule_files.append(_rule_file(path, text))
        elif pure.name == "data.json":
            try:
                data = json.loads(text)
            except ValueError:
                continue
            tables.extend(data_tables(data, str(pure.parent)))
    return ReadableBundle(tuple(rule_files), tuple(tables))


def _is_test(path: PurePosixPath) -> bool:
    return path.name.endswith("_test.rego") or "tests" in path.parts[:-1]


def _rule_file(path: str, text: str) -> RuleFile:
    package = _PACKAGE.search(text)
    reasons = []
    for pattern in (_SPRINTF, _MESSAGE):
        for match in pattern.finditer(text):
            reason = match.group(1).replace('\\"', '"')
            words = _WORD.findall(_VERB.sub(" ", reason))
            if len(words) >= MIN_WORDS and reason not in reasons:
                reasons.append(reason)
    return RuleFile(
        path=path,
        package=package.group(1) if package else "",
        summary=_first_comment_block(text),
        reasons=tuple(reasons),
        source=text,
    )


def _first_comment_block(text: str) -> str:
    """The first run of ``#`` comment lines, without METADATA annotations' markers."""
    block: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            content = stripped[1:].removeprefix(" ")
            if content.strip() != "METADATA":
                block.append(content)
        elif block:
            break
    return "\n".join(block).strip()


def data_tables(data: Any, where: str) -> list[Table]:
    """``data.json`` as tables: settings (scalars and lists), each mapping, each list of objects."""
    if not isinstance(data, dict):
        return [Table(where, ("value",), ((_cell(data),),))]
    settings: list[tuple[str, ...]] = []
    tables = []
    for key, value in data.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            columns = tuple(dict.fromkeys(k for item in value for k in item))
            rows = tuple(tuple(_cell(item.get(c)) for c in columns) for item in value)
            tables.append(Table(f"{where}: {key}", columns, rows))
        elif isinstance(value, dict):
            rows = tuple((path, _cell(v)) for path, v in _flatten(value))
            tables.append(Table(f"{where}: {key}", ("key", "value"), rows))
        else:
            settings.append((key, _cell(value)))
    if settings:
        tables.insert(0, Table(f"{where}: settings", ("setting", "value"), tuple(settings)))
    return tables


def _flatten(value: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, item in value.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(item, dict) and item:
            rows.extend(_flatten(item, path))
        else:
            rows.append((path, item))
    return rows


def _cell(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(_cell(v) for v in value) if value else "(none)"
    if isinstance(value, str):
        return value
    return json.dumps(value)
