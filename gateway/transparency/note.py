"""C2SP signed notes with Ed25519 keys, and C2SP ``tlog-cosignature`` v1 cosignatures.

A note is text ending in a newline, a blank line, then signature lines
``— <key name> base64(key ID || signature)``. Keys are written as Go's
``golang.org/x/mod/sumdb/note`` writes them, so Go tools read them as they are:

- verifier key (public): ``<name>+<key ID, 8 hex digits>+base64(type || public key)``
- signer key (secret): ``PRIVATE+KEY+<name>+<key ID>+base64(type || 32-byte seed)``

where ``key ID = SHA-256(name || 0x0A || type || public key)[:4]``. Type 0x01
is a note signature (the log's checkpoints); type 0x04 a timestamped
cosignature (a witness's): the signed message is ``cosignature/v1``, ``time
<POSIX seconds>`` and the note text, and the signature is ``key ID || u64
timestamp || Ed25519 signature``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

NOTE_ED25519 = 0x01
COSIGNATURE_V1 = 0x04
KEY_TYPES = {NOTE_ED25519: "note", COSIGNATURE_V1: "cosignature/v1"}
_PRIVATE = "PRIVATE+KEY+"
_DASH = "\u2014 "
MAX_SIGNATURES = 100


class NoteError(ValueError):
    """A key, note or signature that is malformed or does not verify; the message says why."""


def _key_id(name: str, kind: int, public: bytes) -> int:
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([kind]) + public).digest()
    return int.from_bytes(digest[:4], "big")


def _check_name(name: str) -> str:
    if not name or any(c.isspace() or c == "+" for c in name):
        raise NoteError(f"key name {name!r} must be non-empty, without spaces or '+'")
    return name


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise NoteError(f"{what} is not valid base64") from None


@dataclass(frozen=True)
class Verifier:
    """A public key: verifies note signatures (type 0x01) or cosignatures (type 0x04)."""

    name: str
    key_id: int
    kind: int
    public: bytes

    @classmethod
    def parse(cls, vkey: str) -> Verifier:
        """Read a verifier key ``<name>+<id>+<base64>``; raise NoteError."""
        parts = vkey.strip().split("+", 2)
        if len(parts) != 3 or len(parts[1]) != 8:
            raise NoteError("a verifier key reads <name>+<8 hex digits>+<base64 key>")
        name, hex_id, encoded = parts
        raw = _b64(encoded, "the verifier key")
        if len(raw) != 33 or raw[0] not in KEY_TYPES:
            raise NoteError("the verifier key is not an Ed25519 key of type 0x01 or 0x04")
        kind, public = raw[0], raw[1:]
        key_id = _key_id(_check_name(name), kind, public)
        if f"{key_id:08x}" != hex_id.lower():
            raise NoteError(f"verifier key of {name}: the key ID does not match the key")
        return cls(name, key_id, kind, public)

    def __str__(self) -> str:
        raw = base64.b64encode(bytes([self.kind]) + self.public).decode()
        return f"{self.name}+{self.key_id:08x}+{raw}"

    def _verify(self, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public).verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class Signer:
    """A secret key that signs notes (type 0x01) or cosigns checkpoints (type 0x04)."""

    name: str
    key_id: int
    kind: int
    seed: bytes

    @classmethod
    def generate(cls, name: str, kind: int = NOTE_ED25519) -> Signer:
        """A new random key."""
        if kind not in KEY_TYPES:
            raise NoteError(f"unknown key type {kind}")
        seed = Ed25519PrivateKey.generate().private_bytes_raw()
        return cls._from_seed(_check_name(name), kind, seed)

    @classmethod
    def parse(cls, skey: str) -> Signer:
        """Read a signer key ``PRIVATE+KEY+<name>+<id>+<base64>``; raise NoteError.

        The message never shows the key's text.
        """
        text = skey.strip()
        if not text.startswith(_PRIVATE):
            raise NoteError("a signer key starts with PRIVATE+KEY+")
        parts = text[len(_PRIVATE) :].split("+", 2)
        if len(parts) != 3 or len(parts[1]) != 8:
            raise NoteError("a signer key reads PRIVATE+KEY+<name>+<8 hex digits>+<base64 key>")
        name, hex_id, encoded = parts
        raw = _b64(encoded, "the signer key")
        if len(raw) != 33 or raw[0] not in KEY_TYPES:
            raise NoteError("the signer key is not an Ed25519 key of type 0x01 or 0x04")
        signer = cls._from_seed(_check_name(name), raw[0], raw[1:])
        if f"{signer.key_id:08x}" != hex_id.lower():
            raise NoteError(f"signer key of {name}: the key ID does not match the key")
        return signer

    @classmethod
    def _from_seed(cls, name: str, kind: int, seed: bytes) -> Signer:
        public = cls._private(seed).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return cls(name, _key_id(name, kind, public), kind, seed)

    @staticmethod
    def _private(seed: bytes) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(seed)

    @property
    def verifier(self) -> Verifier:
        public = self._private(self.seed).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return Verifier(self.name, self.key_id, self.kind, public)

    def encode(self) -> str:
        """The signer key's text (a secret)."""
        raw = base64.b64encode(bytes([self.kind]) + self.seed).decode()
        return f"{_PRIVATE}{self.name}+{self.key_id:08x}+{raw}"

    def __repr__(self) -> str:
        return f"Signer({self.name!r}, {self.key_id:08x}, type {self.kind})"

    def sign_line(self, text: str, timestamp: int | None = None) -> str:
        """The signature line of this key over the note ``text`` (with its final newline).

        A cosignature key (type 0x04) needs ``timestamp``, POSIX seconds.
        """
        _check_text(text)
        if self.kind == COSIGNATURE_V1:
            if timestamp is None or not 0 <= timestamp < 2**63:
                raise NoteError("a cosignature needs a timestamp")
            body = struct.pack(">Q", timestamp)
            body += self._private(self.seed).sign(_cosigned(text, timestamp))
        else:
            body = self._private(self.seed).sign(text.encode())
        raw = struct.pack(">I", self.key_id) + body
        return f"{_DASH}{self.name} {base64.b64encode(raw).decode()}\n"


@dataclass(frozen=True)
class Note:
    """A signed note split in its text and its signature lines (not yet verified)."""

    text: str
    signatures: tuple[str, ...]

    @classmethod
    def parse(cls, message: str) -> Note:
        """Split a signed note; raise NoteError when it is not one."""
        if not message.endswith("\n"):
            raise NoteError("a signed note ends with a newline")
        if any(ord(c) < 0x20 and c != "\n" for c in message):
            raise NoteError("a signed note holds no control characters but newlines")
        split = message.rfind("\n\n")
        if split < 0:
            raise NoteError("a signed note has a blank line before its signatures")
        text, lines = message[: split + 1], message[split + 2 :].splitlines(keepends=True)
        if not lines or len(lines) > MAX_SIGNATURES:
            raise NoteError(f"a signed note has 1 to {MAX_SIGNATURES} signature lines")
        for line in lines:
            _signature_parts(line)
        return cls(text, tuple(lines))

    def __str__(self) -> str:
        return self.text + "\n" + "".join(self.signatures)

    def with_signature(self, line: str) -> Note:
        """The note with one more signature line (a line already there is not repeated)."""
        _signature_parts(line)
        if line in self.signatures:
            return self
        return Note(self.text, (*self.signatures, line))

    def names(self, verifier: Verifier) -> bool:
        """Whether a signature line names ``verifier``'s key (not verified here)."""
        for line in self.signatures:
            name, raw = _signature_parts(line)
            if name == verifier.name and struct.unpack(">I", raw[:4])[0] == verifier.key_id:
                return True
        return False

    def verified_by(self, verifier: Verifier) -> str:
        """The signature line of ``verifier`` if one verifies; raise NoteError otherwise.

        Lines of other keys are ignored; a line of this key that fails to verify
        rejects the note (C2SP signed-note).
        """
        found: str | None = None
        for line in self.signatures:
            name, raw = _signature_parts(line)
            if name != verifier.name or struct.unpack(">I", raw[:4])[0] != verifier.key_id:
                continue
            if not _check_signature(verifier, self.text, raw[4:]):
                raise NoteError(f"the signature of {verifier.name} does not verify")
            found = line
        if found is None:
            raise NoteError(f"the note carries no signature of {verifier.name}")
        return found


def cosignature_time(line: str) -> int:
    """The timestamp of a cosignature line (type 0x04), POSIX seconds."""
    _, raw = _signature_parts(line)
    if len(raw) != 4 + 8 + 64:
        raise NoteError("not a cosignature/v1 signature")
    timestamp: int = struct.unpack(">Q", raw[4:12])[0]
    return timestamp


def _check_signature(verifier: Verifier, text: str, body: bytes) -> bool:
    if verifier.kind == COSIGNATURE_V1:
        if len(body) != 8 + 64:
            return False
        timestamp = struct.unpack(">Q", body[:8])[0]
        return timestamp < 2**63 and verifier._verify(_cosigned(text, timestamp), body[8:])
    return len(body) == 64 and verifier._verify(text.encode(), body)


def _cosigned(text: str, timestamp: int) -> bytes:
    return f"cosignature/v1\ntime {timestamp}\n{text}".encode()


def _check_text(text: str) -> None:
    if not text.endswith("\n") or "\n\n" in text:
        raise NoteError("note text ends with a newline and, here, holds no blank line")


def _signature_parts(line: str) -> tuple[str, bytes]:
    if not line.startswith(_DASH) or not line.endswith("\n"):
        raise NoteError("a signature line reads '\u2014 <name> <base64>' and ends with a newline")
    name, _, encoded = line[len(_DASH) : -1].partition(" ")
    raw = _b64(encoded, f"the signature of {name!r}")
    if len(raw) < 5 or not name:
        raise NoteError("a signature line names its key and carries a key ID and a signature")
    return name, raw


__all__ = [
    "COSIGNATURE_V1",
    "NOTE_ED25519",
    "Note",
    "NoteError",
    "Signer",
    "Verifier",
    "cosignature_time",
]
