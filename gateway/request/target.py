"""The canonical request target: the one path and query that policy judges and the upstream gets.

The target is read from the raw bytes of the request line (``scope["raw_path"]``),
never from a decoded form, and it is refused (400) when another server could read
it differently: dot segments, percent-escapes of any kind, backslashes, empty
segments, path parameters (``;``), control or non-ASCII characters. What is left
reads the same in every HTTP stack, so the bytes judged are the bytes forwarded.

The API family comes from the canonical path and the method together: listing
models is ``GET /v1/models`` or ``GET /v1/models/{id}``; any other method there is
``other``, which the default policy refuses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl

from gateway.exceptions import InvalidTarget

PREFIX = "/v1/"
MAX_TARGET_BYTES = 2048

# Unreserved characters plus ':' and '@' (model ids like "ft:gpt-4o:org::id"), and '/'.
# No '%' (no escapes at all), ';' (path parameters), '+' or other sub-delimiters
# that some servers give a meaning in a path.
_PATH = re.compile(r"/v1(?:/[A-Za-z0-9._~:@-]+)+")
_DOT_SEGMENT = re.compile(r"/\.+(?:/|$)")  # ".", "..", and "..." (some servers trim dots)
# A query is plain printable ASCII; escapes are allowed there (values are data,
# not routing), and decoded values are checked again below.
_QUERY = re.compile(r"[\x21-\x7e]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

_API_BY_POST_PATH = {
    "/v1/chat/completions": "chat.completions",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
    "/v1/responses": "responses",
}
_MODELS = "/v1/models"
MODELS_PREFIX = "/v1/models/"

# Model names: what OpenAI, vLLM, Ollama and Hugging Face ids use, bounded.
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~:@/+=-]{0,255}")


@dataclass(frozen=True)
class Target:
    """A validated request target: its path, raw query and parsed query."""

    path: str
    raw_query: str
    query: dict[str, str]

    @property
    def path_and_query(self) -> str:
        """Exactly what goes after the upstream's base URL."""
        return self.path + (f"?{self.raw_query}" if self.raw_query else "")


def canonical_target(raw_path: bytes, raw_query: bytes) -> Target:
    """Validate the request target as sent; raise InvalidTarget for anything ambiguous."""
    if len(raw_path) + len(raw_query) > MAX_TARGET_BYTES:
        raise InvalidTarget(f"the request target is longer than {MAX_TARGET_BYTES} bytes")
    try:
        path = raw_path.decode("ascii")
        query = raw_query.decode("ascii")
    except UnicodeDecodeError:
        raise InvalidTarget("the request target holds non-ASCII bytes") from None
    if not _PATH.fullmatch(path) or _DOT_SEGMENT.search(path):
        raise InvalidTarget(
            f"the request path {_shown(path)} is not canonical: use plain /v1/... segments "
            "without percent-escapes, dot segments, empty segments, ';' or backslashes"
        )
    if not _QUERY.fullmatch(query):
        raise InvalidTarget("the query string holds spaces, control or non-ASCII characters")
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise InvalidTarget("the query string is malformed") from None
    parsed: dict[str, str] = {}
    for name, value in pairs:
        if name in parsed:
            raise InvalidTarget(f"the query parameter {_shown(name)} appears twice")
        if _CONTROL.search(name) or _CONTROL.search(value):
            raise InvalidTarget("the query string decodes to control characters")
        parsed[name] = value
    return Target(path, query, parsed)


def classify_api(method: str, path: str) -> str:
    """The API family of a canonical path under a method, as the policy input names it."""
    if method == "POST" and path in _API_BY_POST_PATH:
        return _API_BY_POST_PATH[path]
    if method == "GET" and (path == _MODELS or _is_model_path(path)):
        return "models"
    return "other"


def model_in_path(path: str) -> str | None:
    """The model id of ``/v1/models/{id}``; None for any other path.

    Raise InvalidTarget when the id is not a model name (the body's ``model`` is
    held to the same rule in body.py).
    """
    if not _is_model_path(path):
        return None
    model = path.removeprefix(MODELS_PREFIX)
    if not MODEL_NAME.fullmatch(model):
        raise InvalidTarget(f"the model name {_shown(model)} in the path is not a model name")
    return model


def _is_model_path(path: str) -> bool:
    return path.startswith(MODELS_PREFIX) and len(path) > len(MODELS_PREFIX)


def _shown(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:80] + "...")
