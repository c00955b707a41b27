"""Showing URLs without their secrets.

The JSON-RPC URL of a hosted node usually carries a credential: in the user
info (``user:password@``), in the path (``/v3/<key>``) or in the query
(``?apikey=...``). Wherever the gateway shows such a URL (errors, logs,
``/readyz``), it shows ``scheme://host[:port]`` only. Libraries that log request
URLs at debug level (web3, urllib3) get a filter that removes the known secrets.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

REDACTED = "<redacted>"
# Loggers that write a request's URL or path: web3's HTTP provider and session
# cache, urllib3's connection pool (``"POST /v3/<key> HTTP/1.1" 200``).
LIBRARY_LOGGERS = (
    "web3.providers.HTTPProvider",
    "web3._utils.http_session_manager.HTTPSessionManager",
    "urllib3.connectionpool",
)
# A URL ends at white space, a quote, a bracket or a parenthesis (IPv6 hosts keep theirs).
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://(?:\[[0-9A-Fa-f:.]+\]|[^\s'\"<>()\[\]])+")
_TRAILING = ".,;:!?"


def redact_url(url: str) -> str:
    """``url`` as ``scheme://host[:port]``: no user info, path, query or fragment."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return "<unparsable URL>"
    if not parts.scheme or not host:
        return "<URL>"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + ("" if port is None else f":{port}")


def redact_urls(text: str) -> str:
    """``text`` with every URL in it redacted (for messages of third-party exceptions)."""
    return _URL.sub(_redact_match, text)


def _redact_match(match: re.Match[str]) -> str:
    """Punctuation that ends a sentence is not part of the URL it follows."""
    url = match.group(0)
    stripped = url.rstrip(_TRAILING)
    return redact_url(stripped) + url[len(stripped) :]


def secret_parts(url: str) -> set[str]:
    """The pieces of ``url`` that may be a credential, as they appear in it."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return {url}
    found = {parts.path} if parts.path not in ("", "/") else set()
    userinfo, at, _ = parts.netloc.rpartition("@")
    if at and userinfo:
        found.add(userinfo)
    found.update(piece for piece in (parts.query, parts.fragment) if piece)
    return found


class SecretFilter(logging.Filter):
    """Rewrites log records so that no URL and no known secret piece of one shows."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: list[str] = []

    def add(self, urls: Iterable[str]) -> None:
        found = set(self._secrets).union(*(secret_parts(url) for url in urls))
        self._secrets = sorted(found, key=len, reverse=True)  # longest first

    def scrub(self, text: str) -> str:
        cleaned = redact_urls(text)
        for secret in self._secrets:
            cleaned = cleaned.replace(secret, REDACTED)
        return cleaned

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = self.scrub(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text, record.exc_info = self.scrub(text), None
        return True


_FILTER = SecretFilter()


def scrub(text: str) -> str:
    """``text`` without URLs or any secret piece of the RPC URLs given to :func:`protect_logs`."""
    return _FILTER.scrub(text)


def protect_logs(urls: Iterable[str], loggers: Iterable[str] = ()) -> None:
    """Keep the secrets of ``urls`` out of the records of the libraries and ``loggers``."""
    _FILTER.add(urls)
    for name in (*LIBRARY_LOGGERS, *loggers):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


def redact_input(document: Mapping[str, Any], keep_claim: str | None = None) -> dict[str, Any]:
    """A policy input document as it may be published: its shape, never what a caller wrote.

    Kept: the API, model, stream flag, upstream, method and path, numbers and
    booleans in the body (token caps, ``n``), whether the caller is
    authenticated, and the one configured non-identifying claim (``keep_claim``).
    Every string in the body is replaced by its length (and a key that is not
    a plain name by a placeholder), header and query values,
    ``sub``, ``iss`` and other claims by ``<redacted>``; the time is left out.
    """
    request = document.get("request")
    request = request if isinstance(request, Mapping) else {}
    caller = document.get("caller")
    caller = caller if isinstance(caller, Mapping) else {}
    claims = caller.get("claims")
    claims = claims if isinstance(claims, Mapping) else {}
    return {
        "api": document.get("api"),
        "model": document.get("model"),
        "stream": document.get("stream"),
        "upstream": document.get("upstream"),
        "body": _shape(document.get("body")),
        "request": {
            "method": request.get("method"),
            "path": request.get("path"),
            "query": {str(k): REDACTED for k in (request.get("query") or {})},
            "headers": sorted(str(k) for k in (request.get("headers") or {})),
        },
        "caller": {
            "authenticated": caller.get("authenticated"),
            "sub": None if caller.get("sub") is None else REDACTED,
            "iss": None if caller.get("iss") is None else REDACTED,
            "claims": {
                str(k): v if k == keep_claim else REDACTED for k, v in sorted(claims.items())
            },
        },
    }


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_.-]{1,40}")


def _key(key: str, index: int) -> str:
    return key if _PLAIN_KEY.fullmatch(key) else f"<redacted key {index}>"


def _shape(value: Any, depth: int = 0) -> Any:
    """Strings become ``<redacted: N chars>``; structure, numbers and booleans stay."""
    if depth > 32:
        return REDACTED
    if isinstance(value, str):
        return f"<redacted: {len(value)} chars>"
    if isinstance(value, Mapping):
        return {
            (str(k) if _PLAIN_KEY.fullmatch(str(k)) else f"<redacted key {i}>"): _shape(
                v, depth + 1
            )
            for i, (k, v) in enumerate(value.items())
        }
    if isinstance(value, list):
        return [_shape(v, depth + 1) for v in value]
    return value
