"""The request body as policy judges it: parsed once, strictly, with no recursion to exhaust.

A body another parser could read differently is refused (400) rather than judged:
bytes that are not UTF-8, duplicate keys (parsers disagree on which one wins;
keys that differ only in case are duplicates to Go's encoding/json), a
top-level field not written in lower case (Go reads ``"N"`` as ``n``),
``NaN``/``Infinity`` or a number too large for a double (``1e400``), unpaired
surrogate escapes, nesting deeper than ``limits.max_json_depth``, a ``stream``
that is not a boolean, or a token or choice count that is not a positive
integer. What passes is forwarded as the very bytes that were parsed, unless an
obligation rewrites it (obligations.py).

The same walk collects ``texts``: every string the model will read (values and
keys), normalised so that look-alike spellings cannot slip past deny patterns.
"""

from __future__ import annotations

import json
import math
import unicodedata
from dataclasses import dataclass
from typing import Any

from gateway.exceptions import InvalidBody
from gateway.request.jsondepth import nested_deeper_than
from gateway.request.target import MODEL_NAME

TOKEN_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
COUNT_FIELDS = ("n", "best_of")
MAX_COUNT = 2**31 - 1


@dataclass(frozen=True)
class JsonBody:
    """A parsed request body and the normalised texts found in it."""

    value: dict[str, Any]
    texts: list[str]


def parse_json_body(raw: bytes, max_depth: int) -> JsonBody:
    """Parse a JSON object body strictly; raise InvalidBody naming the fault."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidBody("the request body is not UTF-8 text") from None
    if nested_deeper_than(text, max_depth):
        raise InvalidBody(f"the request body is nested deeper than the limit of {max_depth} levels")
    try:
        value = json.loads(
            text,
            object_pairs_hook=_object_without_duplicates,
            parse_constant=_no_constant,
            parse_float=_finite_float,
        )
    except ValueError as exc:
        raise InvalidBody(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidBody("the request body must be a JSON object")
    texts = _walk(value, max_depth, check_surrogates="\\ud" in text.lower())
    _check_fields(value)
    return JsonBody(value, texts)


def normalise(text: str) -> str:
    """NFKC, format characters (zero-width, bidi...) removed, whitespace runs as one space."""
    folded = unicodedata.normalize("NFKC", text).translate(_FORMAT_CHARACTERS)
    return " ".join(folded.split())


def _format_characters() -> dict[int, None]:
    """A translation table deleting every character of Unicode category Cf.

    Cf characters live in planes 0, 1 and 14 only; scanning those takes a tenth
    of the time of the whole code space.
    """
    planes = (range(0x20000), range(0xE0000, 0xF0000))
    return {cp: None for plane in planes for cp in plane if unicodedata.category(chr(cp)) == "Cf"}


# Built when the request path is loaded (about 0.2 s), not by the first request.
_FORMAT_CHARACTERS = _format_characters()


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """The object, unless two keys are one to some parser: equal, or equal but for case.

    Go's encoding/json (Ollama, LocalAI and many Go proxies) matches keys to
    fields without regard to case, last one winning: ``{"model": "a", "Model":
    "b"}`` is model ``b`` there, while policy would judge model ``a``.
    """
    seen: dict[str, str] = {}
    for key, _ in pairs:
        folded = key.casefold()
        first = seen.get(folded)
        if first is None:
            seen[folded] = key
        elif first == key:
            raise InvalidBody(f"the request body repeats the key {_shown(key)}")
        else:
            raise InvalidBody(
                f"the request body has the keys {_shown(first)} and {_shown(key)}, "
                "which some parsers read as one"
            )
    return dict(pairs)


def _no_constant(name: str) -> Any:
    raise InvalidBody(f"the request body holds {name}, which is not JSON")


def _finite_float(text: str) -> float:
    """A JSON number as a double, refused when it overflows to infinity.

    Python reads ``1e400`` as ``inf``, which no JSON encoder can write back:
    policy would never see it as sent, and a rewritten body would carry
    ``Infinity``; other parsers refuse it or read it otherwise.
    """
    value = float(text)
    if math.isinf(value):
        raise InvalidBody(f"the request body holds the number {_shown(text)}, too large for JSON")
    return value


def _walk(root: dict[str, Any], max_depth: int, check_surrogates: bool) -> list[str]:
    """Check depth (and surrogates) iteratively; return the normalised texts in body order.

    ``texts`` holds the normalised form of each string (value or object key)
    that normalisation changes (policy scans the body's own strings as they
    are), and, when there are several values, all values normalised and joined
    by spaces: a phrase split across message parts is read whole by the model,
    so it is judged whole too. Leaving out what the body already holds keeps
    OPA's input, and its work, near the body's own size.
    """
    strings: list[str] = []
    keys: list[str] = []
    stack: list[tuple[Any, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            strings.append(node)
            continue
        if not isinstance(node, dict | list):
            continue
        if depth > max_depth:
            raise InvalidBody(
                f"the request body is nested deeper than the limit of {max_depth} levels"
            )
        if isinstance(node, dict):
            keys.extend(node)
            children = list(node.values())
        else:
            children = node
        stack.extend((child, depth + 1) for child in reversed(children))
    if check_surrogates:
        for item in (*strings, *keys):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidBody(
                    "the request body contains an unpaired UTF-16 surrogate escape"
                ) from None
    values = [normalise(s) for s in strings]
    changed = [n for s, n in zip(strings, values, strict=True) if n != s]
    changed += [n for k in keys if (n := normalise(k)) != k]
    texts = dict.fromkeys(t for t in changed if t)
    if len(values) > 1:
        texts[" ".join(v for v in values if v)] = None
    return list(texts)


def _check_fields(body: dict[str, Any]) -> None:
    for key in body:
        if key.casefold() != key:
            raise InvalidBody(
                f"the request field {_shown(key)} must be written in lower case: some parsers "
                f"read it as {_shown(key.casefold())}, which policy would not have judged"
            )
    if "stream" in body and not isinstance(body["stream"], bool):
        raise InvalidBody("stream must be true or false")
    for field in (*TOKEN_FIELDS, *COUNT_FIELDS):
        if field in body and not _positive_int(body[field]):
            raise InvalidBody(f"{field} must be a positive integer (at most {MAX_COUNT})")
    model = body.get("model")
    if model is not None and not (isinstance(model, str) and MODEL_NAME.fullmatch(model)):
        raise InvalidBody(
            "model must be a name of at most 256 letters, digits and ._~:@/+=- characters"
        )


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_COUNT


def _shown(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:80] + "...")
