"""The canonical JSON encoder: equal to the rfc8785 package, iterative, and quick on floats."""

from __future__ import annotations

import random
import struct
from typing import Any

import pytest
import rfc8785

from gateway.decisionlog import canonical_json, input_sha256
from gateway.decisionlog.jcs import costly_to_encode

ALPHABET = 'az AZ09_"\\/\x00\x1f\x7f\b\f\n\r\té中\u2028\ue000\uffff🚀\U0001f600\U00010000'


def random_float(rng: random.Random) -> float:
    while True:
        choice = rng.randrange(4)
        if choice == 0:  # any bit pattern
            value: float = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
            if value == value and abs(value) != float("inf"):
                return value
        elif choice == 1:
            return rng.random() * 10 ** rng.randint(-25, 25) * rng.choice((1, -1))
        elif choice == 2:
            return float(rng.randint(-(10**17), 10**17))
        else:
            return rng.choice((0.0, -0.0, 1e21, 1e-7, 5e-324, 1e16, 1e-4, 0.1, 123.456))


def random_text(rng: random.Random) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randrange(8)))


def random_value(rng: random.Random, depth: int = 0) -> Any:
    """A JSON value: nested objects and arrays of floats, integers, unicode strings, literals."""
    kind = rng.randrange(9 if depth < 6 else 7)
    if kind == 0:
        return random_float(rng)
    if kind == 1:
        return rng.randint(-(2**53 - 1), 2**53 - 1)  # rfc8785 refuses integers beyond
    if kind == 2:
        return rng.randint(-1000, 1000)
    if kind in (3, 4):
        return random_text(rng)
    if kind == 5:
        return rng.choice((None, True, False))
    if kind == 6:
        return rng.choice(([], {}, ""))
    if kind == 7:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(6))]
    return {random_text(rng): random_value(rng, depth + 1) for _ in range(rng.randrange(6))}


@pytest.mark.parametrize("seed", range(40))
def test_generated_values_encode_as_rfc8785_does(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(50):
        value = random_value(rng)
        assert canonical_json(value) == rfc8785.dumps(value), value


@pytest.mark.parametrize(
    "value",
    [
        {"b": 1, "a": [True, False, None, "x"], "": {}},
        {"\U0001f600": 1, "\ue000": 2, "a": 3},  # UTF-16 order differs from code point order
        {"s": '\x00\x1f\b\f\n\r\t"\\/\x7f é 中 🚀'},
        [0.1, 1e21, 1e20, 1e-7, 1e-6, 5e-324, 1.7976931348623157e308, 100.0, -0.0, 1e16, 1e-4],
        [-1e21, -1.5e-7, -123.0, -0.001, 9007199254740993.0, 1.2345678901234567e-300],
        [2**53 - 1, -(2**53 - 1), 0, -1],
        [],
        "plain",
    ],
)
def test_canonical_json_equals_rfc8785(value: Any) -> None:
    assert canonical_json(value) == rfc8785.dumps(value)


def test_canonical_json_formats_random_floats_like_rfc8785() -> None:
    rng = random.Random(8785)
    values = []
    for _ in range(20_000):
        bits = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
        if bits == bits and abs(bits) != float("inf"):
            values.append(bits)
        values.append(rng.random() * 10 ** rng.randint(-12, 25))
        values.append(float(rng.randint(-(10**6), 10**6)))
    assert canonical_json(values) == rfc8785.dumps(values)


def test_integers_beyond_2_53_are_written_as_the_double_they_parse_to() -> None:
    assert canonical_json(2**64) == b"18446744073709552000"
    assert canonical_json([-(2**60)]) == b"[-1152921504606847000]"


@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), {1: "x"}, {"a": {1, 2}}, "\ud800", {"\ud800": 1}, 10**400],
)
def test_canonical_json_rejects_what_json_cannot_hold(value: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        canonical_json(value)


def test_a_cycle_is_refused_and_a_shared_value_is_not() -> None:
    shared = {"x": [1.5]}
    assert canonical_json([shared, shared, 1.0]) == b'[{"x":[1.5]},{"x":[1.5]},1]'
    cycle: list[Any] = [1.0]
    cycle.append(cycle)
    with pytest.raises(ValueError, match="circular"):
        canonical_json(cycle)


def test_10000_deep_nesting_is_encoded_without_recursion() -> None:
    depth = 10_000
    arrays: Any = 0.5
    objects: Any = 1.0
    for _ in range(depth):
        arrays = [arrays]
        objects = {"k": objects}
    assert canonical_json(arrays) == b"[" * depth + b"0.5" + b"]" * depth
    assert canonical_json(objects) == b'{"k":' * depth + b"1" + b"}" * depth
    assert input_sha256({"request": {"body": objects}}).startswith("sha256:")
    assert costly_to_encode(arrays)


def test_a_small_input_is_encoded_inline_and_a_large_one_is_not() -> None:
    chat = {
        "api": "chat.completions",
        "request": {"body": {"model": "m", "messages": [{"role": "user", "content": "hi " * 500}]}},
        "caller": {"sub": "user-1", "groups": ["staff"]},
    }
    assert not costly_to_encode(chat)
    assert costly_to_encode({"input": [0.123456789] * 60_000})  # ~1 MB of floats
    assert costly_to_encode({"prompt": "x" * 1_000_000})  # ~1 MB of text
