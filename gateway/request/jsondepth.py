"""How deep JSON text nests, found without parsing it.

The standard library's parser recurses once per level in C. Libraries that the
chain support imports (py-evm, py_ecc) raise the interpreter's recursion limit
to 100,000, and then a body, a token header or a key set nested that deep
overflows the C stack: a crash of the whole gateway, not an exception. Text
from outside is checked here before any recursive parser sees it.
"""

from __future__ import annotations

import re

_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_INNERMOST_PAIR = re.compile(r"\[\]|\{\}")


def nested_deeper_than(text: str, limit: int) -> bool:
    """Whether brackets outside strings nest deeper than ``limit``, found without parsing.

    Each pass removes the innermost pairs, so valid JSON nested ``d`` levels
    deep is empty after ``d`` passes (each one a regular-expression scan in C).
    """
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    for _level in range(limit):
        if not brackets:
            return False
        brackets, removed = _INNERMOST_PAIR.subn("", brackets)
        if not removed:
            return _openers_deeper_than(brackets, limit)  # unbalanced: not JSON
    return bool(brackets)


def _openers_deeper_than(brackets: str, limit: int) -> bool:
    """For unbalanced brackets: whether openers run deeper than ``limit`` before it shows.

    The parser recurses into every opener before it can find the body invalid.
    """
    depth = 0
    for char in brackets:
        depth += 1 if char in "[{" else -1
        if depth > limit:
            return True
        if depth < 0:
            return False
    return False
