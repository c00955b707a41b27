"""Depth is found on the text, before a recursive parser could overflow the stack."""

from __future__ import annotations

import json
import sys

import pytest

from gateway.request.jsondepth import nested_deeper_than


@pytest.mark.parametrize("depth", [1, 5, 31, 32])
def test_valid_json_at_or_under_the_limit(depth: int) -> None:
    text = json.dumps({"a": "[[[{{{"}) + "[" * depth + "]" * depth
    assert not nested_deeper_than("[" * depth + '"]]]\\"[["' + "]" * depth, 32)
    assert not nested_deeper_than(text[: len(text)], 64)


@pytest.mark.parametrize(
    "text", ["[" * 33 + "]" * 33, "[" * 1_000_000, '{"a":' * 50_000, "[}" * 10 + "[" * 40]
)
def test_deeper_than_the_limit(text: str) -> None:
    assert nested_deeper_than(text, 32)


def test_brackets_inside_strings_do_not_count() -> None:
    assert not nested_deeper_than(json.dumps(["[" * 100, "{" * 100]), 2)


def test_unbalanced_closers_are_left_to_the_parser() -> None:
    assert not nested_deeper_than("]" * 1000, 32)


def test_the_recursion_limit_that_chain_libraries_set_is_in_force_in_tests() -> None:
    """Why the check exists: py-evm raises the limit, so json.loads would crash, not raise."""
    import eth  # noqa: F401  (sets the limit as the gateway's chain support does)

    assert sys.getrecursionlimit() >= 100_000
