"""A policy input document encoded once: the JSON OPA reads and the canonical bytes the log hashes.

A request's input document is sent to OPA for the request decision and hashed
for the decision log (``input_sha256``, RFC 8785 canonical JSON); when response
policy judges the answer, the same document with ``response`` added is sent at
every checkpoint, and the last one sent is hashed too. Encoding the whole
document for each of these was most of the gateway's own JSON work per request.

A small document (its request body within ``INLINE_BYTES``) is encoded once, in
canonical form, as two runs of members: those sorted before ``response`` and
those after. Where those bytes are also what ``json.dumps`` writes
(jcs.plain_json: the same JSON value), they are OPA's question as well. Adding
``response`` encodes that one member and puts it between the two runs: the
request's part is neither encoded nor walked again. A large document is encoded
as before: ``json.dumps`` for OPA, and the log hashes it off the event loop.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from gateway.decisionlog.jcs import canonical_json, plain_json
from gateway.decisionlog.record import canonical_sha256

INLINE_BYTES = 16 * 1024
"""Request bodies up to this size have their input encoded on the event loop, once."""

RESPONSE = "response"
"""The member response policy's input adds to the request's (docs/policy.md)."""


@dataclass(frozen=True, slots=True)
class EncodedInput:
    """A policy input document and, when it was encoded, its canonical JSON in two runs."""

    document: dict[str, Any]
    head: bytes | None = None
    """The canonical JSON of the members whose keys sort before ``response``, without braces
    (``"api":...,"request":{...}``); None if the document was not encoded (a large body,
    a value canonical JSON cannot hold, a key that is not ASCII)."""
    tail: bytes = b""
    """The same, of the members whose keys sort after ``response``."""
    plain: bool = False
    """The encoded members are also what ``json.dumps`` writes: OPA's question is made of them."""

    @classmethod
    def of(cls, document: dict[str, Any], inline: bool = True) -> EncodedInput:
        """``document``, encoded now when ``inline``; otherwise it is encoded where it is used."""
        if not inline:
            return cls(document)
        before: dict[str, Any] = {}
        after: dict[str, Any] = {}
        for key, value in document.items():
            # Among ASCII keys, JCS order (UTF-16 code units) is Python's string order.
            if type(key) is not str or not key.isascii():
                return cls(document)
            (before if key <= RESPONSE else after)[key] = value
        head, tail = _members(before), _members(after)
        if head is None or tail is None:
            return cls(document)
        return cls(document, head[0], tail[0], head[1] and tail[1])

    def with_response(self, response: Any) -> EncodedInput:
        """``{**document, "response": response}``, encoding only ``response``."""
        document = {**self.document, RESPONSE: response}
        if self.head is None or RESPONSE in self.document:
            return EncodedInput(document)
        member = _members({RESPONSE: response})
        if member is None:
            return EncodedInput(document)
        head = b",".join(run for run in (self.head, member[0]) if run)
        return EncodedInput(document, head, self.tail, self.plain and member[1])

    @property
    def canonical(self) -> bytes | None:
        """The document's RFC 8785 canonical JSON; None if it was not encoded."""
        if self.head is None:
            return None
        return b"{" + b",".join(run for run in (self.head, self.tail) if run) + b"}"

    def sha256(self) -> str | None:
        """``input_sha256`` of the document (decisionlog.record); None if it was not encoded."""
        canonical = self.canonical
        return None if canonical is None else canonical_sha256(canonical)

    def payload(self) -> bytes:
        """The body of OPA's Data API question: ``{"input": document}``."""
        canonical = self.canonical
        if canonical is not None and self.plain:
            return b'{"input":' + canonical + b"}"
        return json.dumps({"input": self.document}, separators=(",", ":")).encode()


def _members(members: dict[str, Any]) -> tuple[bytes, bool] | None:
    """The canonical JSON of ``members`` without braces, and whether it is plain; None if
    canonical JSON cannot hold them (the log refuses the document when it hashes it)."""
    try:
        plain = plain_json(members)
        text = canonical_json(members) if plain is None else plain
    except (TypeError, ValueError):
        return None
    return text[1:-1], plain is not None
