"""RFC 8785 (JCS) canonical JSON, without recursion, and a bound on what to encode inline.

Records and policy input documents are hashed in canonical form. Input comes
from request bodies, so the encoder must hold up against them: no recursion
(a deeply nested body cannot exhaust the stack) and a quick number format
(a body of floats must not take seconds). :func:`costly_to_encode` tells the
caller when a value is big enough to encode off the event loop.
"""

from __future__ import annotations

import math
from _json import make_encoder
from collections.abc import Iterable, Iterator, Mapping
from itertools import chain, repeat
from json.encoder import encode_basestring
from typing import Any, cast

_MAX_SAFE_INT = 2**53 - 1
_C_DEPTH = 200
"""Deepest nesting handed to the C encoder, which recurses (and stops at the recursion limit)."""


def _not_plain(value: object) -> object:
    raise TypeError(f"{type(value).__name__} is not a JSON value")


# The C encoder of json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False),
# made once (JSONEncoder.encode makes a new one per call). No circular-reference markers and
# no NaN check: it only gets values that _plain accepted (finite, no deeper than _C_DEPTH).
_sorted_compact = make_encoder(
    None, _not_plain, encode_basestring, None, ":", ",", True, False, True
)

_INLINE_BUDGET = 2_000
"""Work units (one per JSON value, one per 256 characters of text) encoded on the event loop."""


def canonical_json(value: object) -> bytes:
    """RFC 8785 (JCS) serialization of a JSON value, UTF-8.

    The C ``json`` encoder with sorted keys already produces JCS for values
    without floats outside [1e-4, 1e16) or with an integral value, integers
    beyond 2**53 - 1, object keys outside the Basic Multilingual Plane (Python
    sorts keys by code point, JCS by UTF-16 code unit), or deep nesting:
    records are such values, and take that fast path. Anything else goes
    through an iterative encoder. Raise TypeError or ValueError for what JSON
    cannot hold (NaN, non-string keys, lone surrogates, cycles, other types).
    """
    plain = plain_json(value)
    return _encode(value).encode() if plain is None else plain


def plain_json(value: object) -> bytes | None:
    """The canonical JSON of ``value`` when the C encoder writes it (see :func:`canonical_json`),
    else None.

    Those bytes are also ``json.dumps`` of the value but for key order and
    non-ASCII characters left unescaped: the same JSON value to any reader, so
    they can be sent where JSON is read (OPA's input) as well as hashed.
    Raise ValueError for a lone surrogate.
    """
    if not _plain(value):
        return None
    return "".join(_sorted_compact(value, 0)).encode()


def costly_to_encode(value: object) -> bool:
    """Whether encoding ``value`` may hold the event loop for more than a fraction of a ms.

    Walks at most a bounded part of the value, so the answer itself is cheap.
    """
    budget = _INLINE_BUDGET
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is str:
            budget -= len(cast(str, item)) >> 8
        elif kind is list or kind is tuple:
            budget -= len(cast("list[object]", item))
            stack.extend(cast("list[object]", item))
        elif kind is dict or (kind is not int and kind is not float and isinstance(item, Mapping)):
            mapping = cast("Mapping[object, object]", item)
            budget -= len(mapping)  # its members, charged before they are looked at
            if budget < 0:
                return True
            for key, member in mapping.items():
                budget -= len(key) >> 8 if isinstance(key, str) else 0
                stack.append(member)
        if budget < 0:
            return True
    return False


def _plain(value: object) -> bool:
    """Whether the C encoder's output for ``value`` is already JCS.

    Exact types only: anything unusual (subclasses, tuples of odd things) takes
    the general encoder, which decides for itself.
    """
    stack: list[tuple[object, int]] = [([value], -1)]
    while stack:
        container, depth = stack.pop()
        if depth >= _C_DEPTH:
            return False
        if type(container) is dict:
            for key in container:
                if type(key) is not str or not (key.isascii() or max(key) < "\U00010000"):
                    return False
            members: Iterable[object] = container.values()
        else:
            members = cast("list[object]", container)
        for member in members:
            kind = type(member)
            if kind is str or kind is bool or member is None:
                continue
            if kind is int:
                if not -_MAX_SAFE_INT <= cast(int, member) <= _MAX_SAFE_INT:
                    return False
            elif kind is float:
                # repr and ECMAScript agree on non-integral numbers both write without exponent.
                number = cast(float, member)
                if not (1e-4 <= abs(number) < 1e16 and not number.is_integer()):
                    return False
            elif kind is dict or kind is list:
                stack.append((member, depth + 1))
            else:
                return False
    return True


def _encode(value: object) -> str:
    """JCS text of ``value`` with an explicit stack: depth is bounded by memory, not recursion."""
    out: list[str] = []
    # Open containers: their remaining (separator, member) pairs, closing bracket, id.
    stack: list[tuple[Iterator[tuple[str, Any]], str, int]] = []
    open_ids: set[int] = set()
    item: Any = value
    while True:
        kind = type(item)
        if kind is str:
            out.append(encode_basestring(item))
        elif kind is float:
            out.append(_number(item))
        elif item is None:
            out.append("null")
        elif item is True:
            out.append("true")
        elif item is False:
            out.append("false")
        elif isinstance(item, str):
            out.append(encode_basestring(item))
        elif isinstance(item, int):
            out.append(_integer(item))
        elif isinstance(item, float):
            out.append(_number(item))
        elif isinstance(item, (dict, list, tuple, Mapping)):
            if id(item) in open_ids:
                raise ValueError("circular reference")
            open_ids.add(id(item))
            if isinstance(item, (dict, Mapping)):
                out.append("{")
                stack.append((_members(item), "}", id(item)))
            else:
                out.append("[")
                separators = chain(("",), repeat(","))
                stack.append((zip(separators, item, strict=False), "]", id(item)))
        else:
            raise TypeError(f"{type(item).__name__} is not a JSON value")
        while stack:
            members, close, ident = stack[-1]
            following = next(members, None)
            if following is not None:
                separator, item = following
                out.append(separator)
                break
            out.append(close)
            open_ids.discard(ident)
            stack.pop()
        else:
            return "".join(out)


def _members(mapping: Mapping[Any, Any]) -> Iterator[tuple[str, Any]]:
    """An object's members in JCS order (UTF-16 code units of the keys), with their separators."""
    if not all(isinstance(key, str) for key in mapping):
        raise TypeError("JSON object keys must be strings")
    keys = sorted(mapping, key=lambda k: k.encode("utf-16-be", "surrogatepass"))
    prefixes = ("," if index else "" for index in range(len(keys)))
    return (
        (prefix + encode_basestring(key) + ":", mapping[key])
        for prefix, key in zip(prefixes, keys, strict=True)
    )


def _integer(value: int) -> str:
    # JSON numbers are IEEE doubles in JCS: a larger integer is written as the
    # double it parses to, as an ECMAScript implementation would.
    if -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT:
        return str(int(value))
    try:
        return _number(float(value))
    except OverflowError:
        raise ValueError("integer too large for a JSON number") from None


def _number(x: float) -> str:
    """ECMAScript Number::toString (ECMA-262 7.1.12.1), which RFC 8785 prescribes.

    ``repr`` gives the shortest digits that round-trip, as ECMAScript requires;
    only their layout differs, and only where one of them uses an exponent.
    """
    if not math.isfinite(x):
        raise ValueError(f"{x} is not a JSON number")
    if x == 0:
        return "0"
    text = repr(x)
    if "e" not in text:  # 1e-4 <= |x| < 1e16: the same layout but for a trailing ".0"
        return text[:-2] if text.endswith(".0") else text
    mantissa, _, exponent = text.partition("e")
    sign = ""
    if mantissa[0] == "-":
        sign, mantissa = "-", mantissa[1:]
    digits = mantissa.replace(".", "").rstrip("0")
    point = int(exponent) + 1  # |x| = 0.<digits> * 10**point
    if len(digits) <= point <= 21:
        return sign + digits + "0" * (point - len(digits))
    if 0 < point <= 21:
        return sign + digits[:point] + "." + digits[point:]
    if -6 < point <= 0:
        return sign + "0." + "0" * -point + digits
    mantissa = digits if len(digits) == 1 else digits[0] + "." + digits[1:]
    return f"{sign}{mantissa}e{point - 1:+d}"
