"""Signed notes and cosignatures: Go's key format, C2SP's signature lines, and refusals."""

from __future__ import annotations

import base64
import struct

import pytest

from gateway.transparency.checkpoint import Checkpoint, SignedCheckpoint
from gateway.transparency.note import (
    COSIGNATURE_V1,
    Note,
    NoteError,
    Signer,
    Verifier,
    cosignature_time,
)

# The example of golang.org/x/mod/sumdb/note's documentation.
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_SIGNATURE = (
    "\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqd"
    "ngotpRZb6KE6RyyBwJnAM=\n"
)


def test_go_keys_and_signature_are_reproduced() -> None:
    signer = Signer.parse(GO_SKEY)
    assert str(signer.verifier) == GO_VKEY
    assert signer.encode() == GO_SKEY
    assert signer.sign_line(GO_TEXT) == GO_SIGNATURE
    note = Note.parse(GO_TEXT + "\n" + GO_SIGNATURE)
    assert note.verified_by(Verifier.parse(GO_VKEY)) == GO_SIGNATURE
    assert "PRIVATE" not in repr(signer)


def test_generated_keys_round_trip() -> None:
    signer = Signer.generate("example.org/log")
    assert Signer.parse(signer.encode()) == signer
    assert Verifier.parse(str(signer.verifier)) == signer.verifier


def test_tampered_notes_and_wrong_keys_are_refused() -> None:
    signer = Signer.generate("example.org/log")
    text = Checkpoint("example.org/log", 5, b"\x01" * 32).text
    signed = text + "\n" + signer.sign_line(text)
    with pytest.raises(NoteError, match="does not verify"):
        Note.parse(signed.replace("\n5\n", "\n6\n")).verified_by(signer.verifier)
    other = Signer.generate("example.org/log")
    with pytest.raises(NoteError, match="no signature"):
        Note.parse(signed).verified_by(other.verifier)
    for bad in ("no newline", "text\n", "text\n\nnot a signature\n", "a\x01\n\n" + GO_SIGNATURE):
        with pytest.raises(NoteError):
            Note.parse(bad)
    for bad_key in ("name+00000000+AAAA", GO_VKEY.replace("c74f20a3", "c74f20a4"), "a b+1+2"):
        with pytest.raises(NoteError):
            Verifier.parse(bad_key)
    with pytest.raises(NoteError):
        Signer.parse(GO_VKEY)


def test_a_checkpoint_opens_only_with_the_log_key() -> None:
    signer = Signer.generate("example.org/log")
    checkpoint = Checkpoint("example.org/log", 3, b"\x02" * 32)
    message = checkpoint.text + "\n" + signer.sign_line(checkpoint.text)
    assert SignedCheckpoint.open(message, signer.verifier).checkpoint == checkpoint
    impostor = Signer.generate("example.org/log")
    with pytest.raises(NoteError, match="no signature"):
        SignedCheckpoint.open(message, impostor.verifier)
    renamed = Checkpoint("example.org/other", 3, b"\x02" * 32).text
    other_log = renamed + "\n" + signer.sign_line(renamed)
    assert (
        SignedCheckpoint.open(other_log, signer.verifier).checkpoint.origin == "example.org/other"
    )
    with pytest.raises(NoteError, match=r"not of 'example\.org/log'"):
        SignedCheckpoint.open(other_log, signer.verifier, origin="example.org/log")
    with pytest.raises(NoteError):
        Checkpoint.parse("origin\n03\n" + base64.b64encode(b"\0" * 32).decode() + "\n")
    with pytest.raises(NoteError):
        Checkpoint.parse("origin\n3\nAAAA\n")


def test_cosignatures_are_c2sp_tlog_cosignature_v1() -> None:
    witness = Signer.generate("witness.example/w1", COSIGNATURE_V1)
    text = Checkpoint("example.org/log", 9, b"\x03" * 32).text
    line = witness.sign_line(text, timestamp=1_700_000_000)
    raw = base64.b64decode(line.split(" ")[2])
    assert struct.unpack(">I", raw[:4])[0] == witness.key_id and len(raw) == 76
    assert cosignature_time(line) == 1_700_000_000
    message = b"cosignature/v1\ntime 1700000000\n" + text.encode()
    witness.verifier._verify(message, raw[12:])  # the signed message of the specification
    assert Note.parse(text + "\n" + line).verified_by(witness.verifier) == line
    forged = line.replace(line.split(" ")[2], base64.b64encode(raw[:4] + b"\0" * 72).decode())
    with pytest.raises(NoteError):
        Note.parse(text + "\n" + forged).verified_by(witness.verifier)
    with pytest.raises(NoteError, match="timestamp"):
        witness.sign_line(text)
