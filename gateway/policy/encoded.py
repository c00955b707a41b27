"""A policy input document encoded once: the JSON OPA reads and the canonical bytes the log hashes.

A request's input document is sent to OPA for the request decision and hashed
for the decision log (``input_sha256``, RFC 8785 canonical JSON); when response
policy judges the answer, the same document with ``response`` added is sent at
every checkpoint, and the last one sent is hashed too. Encoding the whole
document for each of these was most of the gateway's own JSON work per request.

A small document (its request body within ``INLINE_BYTES``) is encoded once,
member by member, in canonical form. Where those bytes are also what
``json.dumps`` writes (jcs.plain_json: the same JSON value), they are OPA's
question as well. Adding ``response`` encodes that one member and splices it in
at its sorted place: the request's part is neither encoded nor walked again.
A large document is encoded as before: ``json.dumps`` for OPA, and the log
hashes it off the event loop.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from gateway.decisionlog.jcs import canonical_json, plain_json
from gateway.decisionlog.record import canonical_sha256

INLINE_BYTES = 16 * 1024
"""Request bodies up to this size have their input encoded on the event loop, once."""

_Member = tuple[str, bytes, bool]
"""A top-level member: its key, its canonical JSON (``"key":value``), and whether it is plain."""


@dataclass(frozen=True, slots=True)
class EncodedInput:
    """A policy input document and, when it was encoded, its members' canonical JSON."""

    document: dict[str, Any]
    members: tuple[_Member, ...] | None = None
    """Sorted by key (ASCII keys only: JCS order is code point order there); None if not
    encoded (a large body, or a value canonical JSON cannot hold)."""

    @classmethod
    def of(cls, document: dict[str, Any], inline: bool = True) -> EncodedInput:
        """``document``, encoded now when ``inline``; otherwise it is encoded where it is used."""
        if not inline:
            return cls(document)
        members = _encode_members(document.items())
        return cls(document, None if members is None else tuple(sorted(members)))

    def with_member(self, key: str, value: Any) -> EncodedInput:
        """``{**document, key: value}``, encoding only the new member."""
        document = {**self.document, key: value}
        if self.members is None:
            return EncodedInput(document)
        added = _encode_members([(key, value)])
        if added is None:
            return EncodedInput(document)
        kept = [member for member in self.members if member[0] != key]
        return EncodedInput(document, tuple(sorted(kept + added)))

    @property
    def canonical(self) -> bytes | None:
        """The document's RFC 8785 canonical JSON; None if it was not encoded."""
        if self.members is None:
            return None
        return b"{" + b",".join(member for _, member, _ in self.members) + b"}"

    def sha256(self) -> str | None:
        """``input_sha256`` of the document (decisionlog.record); None if it was not encoded."""
        canonical = self.canonical
        return None if canonical is None else canonical_sha256(canonical)

    def payload(self) -> bytes:
        """The body of OPA's Data API question: ``{"input": document}``."""
        canonical = self.canonical
        if canonical is not None and all(plain for _, _, plain in self.members or ()):
            return b'{"input":' + canonical + b"}"
        return json.dumps({"input": self.document}, separators=(",", ":")).encode()


def _encode_members(items: Iterable[tuple[object, Any]]) -> list[_Member] | None:
    """Each ``(key, value)`` as a member in canonical JSON; None if one cannot be encoded."""
    members: list[_Member] = []
    for key, value in items:
        if type(key) is not str or not key.isascii():
            return None
        wrapped = {key: value}
        try:
            plain = plain_json(wrapped)
            text = canonical_json(wrapped) if plain is None else plain
        except (TypeError, ValueError):  # the log refuses it when it hashes the document
            return None
        members.append((key, text[1:-1], plain is not None))
    return members
