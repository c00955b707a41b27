"""Depth is found on the text, before a recursive parser could overflow the stack."""

from __future__ import annotations

import json
import sys

import pytest

from gateway.exceptions import InvalidBody
from gateway.request.body import parse_json_body
from gateway.request.jsondepth import nested_deeper_than


@pytest.mark.parametrize("depth", [1, 5, 31, 32])
def test_valid_json_at_or_under_the_limit(depth: int) -> None:
    nested = "[" * (depth - 1) + json.dumps(']]]\\"[[{{') + "]" * (depth - 1)
    assert not nested_deeper_than(nested, 32)
    assert nested_deeper_than("[" + nested + "]", depth - 1)


@pytest.mark.parametrize(
    "text", ["[" * 33 + "]" * 33, "[" * 1_000_000, '{"a":' * 50_000, "[}" * 10 + "[" * 40]
)
def test_deeper_than_the_limit(text: str) -> None:
    assert nested_deeper_than(text, 32)


def test_brackets_inside_strings_do_not_count() -> None:
    assert not nested_deeper_than(json.dumps(["[" * 100, "{" * 100]), 2)


def test_unbalanced_closers_are_left_to_the_parser() -> None:
    assert not nested_deeper_than("]" * 1000, 32)


def test_a_deep_body_is_refused_under_the_recursion_limit_chain_libraries_set() -> None:
    """py-evm and py_ecc raise the limit to 100,000: json.loads would then crash, not raise."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(100_000)
    try:
        with pytest.raises(InvalidBody, match="nested deeper"):
            parse_json_body(b'{"a":' + b"[" * 90_000 + b"]" * 90_000 + b"}", max_depth=64)
    finally:
        sys.setrecursionlimit(limit)
