"""The decision log's Merkle tree and signed checkpoints, kept beside the writer.

The decision-log writer calls this object from its worker thread: ``open`` when
it starts (the tree is rebuilt from the files, and checked against the last
checkpoint signed), ``add`` for every record it chains, ``checkpoint`` after
each fsync and at shutdown. Requests for proofs and checkpoints come from the
event loop; the tree has its own lock.

**Leaves.** The leaf of a record is the exact bytes its ``hash`` is computed
over: its RFC 8785 canonical JSON without ``hash`` (a log line less its
``,"hash":"sha256:<hex>"`` member). So ``leaf hash = SHA-256(0x00 || those
bytes)``, and record ``seq`` is leaf index ``seq - 1``.

**Checkpoints** are signed only over records that are on disk (after an
fsync), every ``checkpoint_every`` records, after ``checkpoint_interval_s``
with records waiting, and at shutdown. They are kept, in order, with the
witnesses' cosignatures, in ``<log path>.checkpoints`` (:mod:`store`).
Before signing, the new tree must be proved consistent with the last
checkpoint signed (read back from that file at start): a log that was cut or
rewritten below a signed checkpoint is never signed again (DecisionLogError:
the writer stops taking records, and the gateway fails closed).

Memory: 32.5 bytes per record for the tree (:mod:`merkle`) and 8 per record for
the decision-id index: about 41 MB per million records.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from gateway.config import Transparency
from gateway.decisionlog.errors import DecisionLogError
from gateway.decisionlog.files import rotated_files
from gateway.exceptions import ConfigError
from gateway.transparency.checkpoint import Checkpoint, SignedCheckpoint
from gateway.transparency.merkle import MerkleTree, verify_consistency
from gateway.transparency.note import (
    NOTE_ED25519,
    Note,
    NoteError,
    Signer,
    Verifier,
)
from gateway.transparency.store import CheckpointFile

logger = logging.getLogger("agora.transparency")

_HASH_MEMBER = len(b',"hash":"sha256:') + 64 + len(b'"}')
_ID_BYTES = 8
_DECODER = json.JSONDecoder()
_sha256 = hashlib.sha256


class UnknownCheckpoint(NoteError):
    """A cosigned note whose checkpoint this log did not sign."""


class NoWitnessCosignature(NoteError):
    """A cosigned note that carries no valid cosignature of a configured witness."""


class TreeHead(NamedTuple):
    """What an anchor publishes: the log's origin, a signed tree size and its root hash."""

    origin: str
    size: int
    root: bytes


def leaf_of_line(line: bytes) -> bytes:
    """The leaf of a log line (with or without its newline): the bytes its ``hash`` covers."""
    body = line[:-1] if line.endswith(b"\n") else line
    if len(body) <= _HASH_MEMBER or not body[-_HASH_MEMBER:].startswith(b',"hash":"sha256:'):
        raise ValueError("not a log line: it does not end with the hash member")
    return body[:-_HASH_MEMBER] + b"}"


def load_signer(config: Transparency, environ: Mapping[str, str]) -> Signer | None:
    """The log's signer key from ``key_file`` or ``key_env``; None when neither is set."""
    if config.key_file is not None:
        key = "transparency.key_file"
        try:
            text = config.key_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{key}: cannot read {config.key_file}: {exc.strerror}") from exc
    elif config.key_env is not None:
        key = "transparency.key_env"
        text = environ.get(config.key_env, "")
        if not text:
            raise ConfigError(f"{key}: environment variable {config.key_env} is unset or empty")
    else:
        return None
    try:
        signer = Signer.parse(text)
    except NoteError as exc:
        raise ConfigError(f"{key}: {exc}") from None
    if signer.kind != NOTE_ED25519:
        raise ConfigError(f"{key}: a witness key (type 0x04) cannot sign the log's checkpoints")
    return signer


class TransparencyLog:
    """The tree over one decision log, its signed checkpoints and their cosignatures."""

    def __init__(
        self, config: Transparency, log_path: Path, environ: Mapping[str, str] | None = None
    ) -> None:
        """Read the log key; raise ConfigError when it is configured but unusable."""
        self._config = config
        self._log_path = log_path
        self._file = CheckpointFile(log_path)
        self._signer = load_signer(config, os.environ if environ is None else environ)
        self._witnesses = [Verifier.parse(vkey) for vkey in config.witnesses]
        self.tree = MerkleTree()
        self._ids = bytearray()
        self._ids_lock = threading.Lock()
        self._lock = threading.Lock()
        """Held while the checkpoints file and the signed checkpoints change."""
        self._signed: dict[int, SignedCheckpoint] = {}
        self._latest: SignedCheckpoint | None = None
        self._last_signed_at = time.monotonic()
        self.available = True
        """False when the files lack the start of the chain (no key: no tree, no proofs)."""

    @property
    def log_key(self) -> Verifier | None:
        """The public key of the log's signatures; None when checkpoints are not signed."""
        return None if self._signer is None else self._signer.verifier

    @property
    def origin(self) -> str:
        """The checkpoints' origin line: ``transparency.origin``, else the log key's name."""
        if self._config.origin is not None:
            return self._config.origin
        return "" if self._signer is None else self._signer.name

    @property
    def latest(self) -> SignedCheckpoint | None:
        """The last checkpoint signed, with the cosignatures received for it."""
        return self._latest

    def signed(self, size: int) -> SignedCheckpoint | None:
        """The checkpoint signed at ``size``, if there was one."""
        return self._signed.get(size)

    def tree_head(self) -> TreeHead | None:
        """The latest signed ``(origin, size, root)``, for anchoring on chain; None before one."""
        latest = self._latest
        if latest is None:
            return None
        head = latest.checkpoint
        return TreeHead(head.origin, head.size, head.root)

    def find(self, decision_id: str) -> list[int]:
        """Leaf indices of the records of ``decision_id`` (its decision, then its outcome)."""
        needle = _id_hash(decision_id)
        found = []
        with self._ids_lock:
            at = self._ids.find(needle)
            while at >= 0:
                if at % _ID_BYTES == 0:
                    found.append(at // _ID_BYTES)
                at = self._ids.find(needle, at + 1)
        return found

    # Called by the writer, from its worker thread.

    def open(self, count: int) -> None:
        """Rebuild the tree of the ``count`` records in the files; check the last checkpoint."""
        files = [*rotated_files(self._log_path), self._log_path]
        hashes: list[bytes] = []
        for path in files:
            try:
                file = open(path, "rb")  # noqa: SIM115 (closed below)
            except FileNotFoundError:
                continue
            with file:
                for number, line in enumerate(file, 1):
                    try:
                        self._index(line, hashes)
                    except (ValueError, KeyError) as exc:
                        raise DecisionLogError(
                            f"{path}:{number}: not a record ({exc}): run agora log verify"
                        ) from None
        if len(hashes) != count:
            problem = (
                f"the files of {self._log_path} hold {len(hashes)} records but the chain has "
                f"{count}: the tree needs every record from seq 1 (were files archived?)"
            )
            if self._signer is not None:
                raise DecisionLogError(f"{problem}; refusing to sign checkpoints")
            logger.warning("%s; no Merkle tree or proofs for this log", problem)
            self._ids.clear()
            self.available = False
            return
        self.tree.append(hashes)
        for entry in self._file.read():
            if isinstance(entry, SignedCheckpoint):
                self._signed[entry.checkpoint.size] = self._latest = entry
            elif entry[0] in self._signed:
                self._attach(*entry)
        latest = self._latest
        if latest is not None:
            self._check_consistent(latest.checkpoint, count)
            logger.info(
                "decision log tree rebuilt: %d records, consistent with the checkpoint at %d",
                count, latest.checkpoint.size,
            )  # fmt: skip

    def add(self, lines: Sequence[bytes], decision_ids: Sequence[str]) -> None:
        """Add records just chained (their log lines, with newline) as the next leaves."""
        if not self.available:
            return
        cut = -_HASH_MEMBER - 1
        self.tree.append(_sha256(b"\x00" + line[:cut] + b"}").digest() for line in lines)
        ids = b"".join(_id_hash(decision_id) for decision_id in decision_ids)
        with self._ids_lock:
            self._ids += ids

    def checkpoint_due(self, size: int) -> bool:
        """Whether a checkpoint should be signed now over ``size`` records."""
        if self._signer is None:
            return False
        last = 0 if self._latest is None else self._latest.checkpoint.size
        if size <= last:
            return False
        if size - last >= self._config.checkpoint_every:
            return True
        return time.monotonic() - self._last_signed_at >= self._config.checkpoint_interval_s

    def checkpoint_delay(self, size: int) -> float | None:
        """Seconds until records waiting for a checkpoint are due one; None if none wait."""
        last = 0 if self._latest is None else self._latest.checkpoint.size
        if self._signer is None or size <= last:
            return None
        due = self._last_signed_at + self._config.checkpoint_interval_s
        return max(0.0, due - time.monotonic())

    def checkpoint(self, size: int) -> SignedCheckpoint | None:
        """Sign and store a checkpoint over the first ``size`` records (all on disk).

        None when there is no key or nothing new. Raise DecisionLogError when the
        tree is not consistent with the last checkpoint signed.
        """
        if self._signer is None:
            return None
        latest = self._latest
        if latest is not None:
            if size <= latest.checkpoint.size:
                return None
            self._check_consistent(latest.checkpoint, size)
        checkpoint = Checkpoint(self.origin, size, self.tree.root(size))
        note = Note(checkpoint.text, (self._signer.sign_line(checkpoint.text),))
        signed = SignedCheckpoint(checkpoint, note)
        with self._lock:
            self._file.append_checkpoint(signed)
            self._signed[size] = signed
            self._latest = signed
        self._last_signed_at = time.monotonic()
        return signed

    # Called from the event loop (in a worker thread: it writes the file).

    def cosign(self, message: str) -> str:
        """Take a witness's cosignature of a checkpoint signed here; the witness's name.

        ``message`` is the checkpoint's note with the witness's signature line(s).
        Raise NoteError when it is not a checkpoint signed here, or no configured
        witness's cosignature verifies. A witness's later cosignatures of the same
        checkpoint are verified but not kept: one each, so none can grow the file.
        """
        note = Note.parse(message)
        size = Checkpoint.parse(note.text).size
        signed = self._signed.get(size)
        if signed is None or signed.note.text != note.text:
            raise UnknownCheckpoint("not a checkpoint this log signed")
        accepted: list[tuple[Verifier, str]] = []
        for witness in self._witnesses:
            try:
                accepted.append((witness, note.verified_by(witness)))
            except NoteError:
                continue
        if not accepted:
            raise NoWitnessCosignature(
                "no cosignature of a configured witness verifies (transparency.witnesses)"
            )
        with self._lock:  # one cosignature per witness and checkpoint: the first one kept
            for witness, line in accepted:
                if not self._signed[size].note.names(witness):
                    self._file.append_cosignature(size, line)
                    self._attach(size, line)
        return ", ".join(witness.name for witness, _ in accepted)

    def _attach(self, size: int, line: str) -> None:
        signed = self._signed[size]
        updated = SignedCheckpoint(signed.checkpoint, signed.note.with_signature(line))
        self._signed[size] = updated
        if self._latest is not None and self._latest.checkpoint.size == size:
            self._latest = updated

    def _index(self, line: bytes, hashes: list[bytes]) -> None:
        hashes.append(_sha256(b"\x00" + leaf_of_line(line)).digest())
        self._ids += _id_hash(decision_id_of_line(line))

    def _check_consistent(self, old: Checkpoint, size: int) -> None:
        if size < old.size:
            raise DecisionLogError(
                f"the decision log holds {size} records but a checkpoint of {old.size} was "
                f"signed ({self._file.path}): the log was cut; refusing to sign again"
            )
        proof = self.tree.consistency_proof(old.size, size)
        if not verify_consistency(old.size, size, old.root, self.tree.root(size), proof):
            raise DecisionLogError(
                f"the decision log is not consistent with the checkpoint of {old.size} records "
                f"signed before ({self._file.path}): records were rewritten; refusing to sign again"
            )


def decision_id_of_line(line: bytes) -> str:
    """The record's ``decision_id``, read without parsing the whole line where that is safe.

    Keys are sorted: without a ``body``, only scalars (``allow``, ``api``,
    ``caller_sub_hash``) come before ``decision_id``, so its first occurrence is
    the record's own.
    """
    at = line.find(b'"decision_id":"')
    body = line.find(b',"body":')
    if at < 0 or 0 <= body < at:
        value: str = json.loads(line)["decision_id"]
        return value
    text = line[at + len(b'"decision_id":') :].decode()
    value, _ = _DECODER.raw_decode(text)
    return value


def _id_hash(decision_id: str) -> bytes:
    return hashlib.blake2b(decision_id.encode(), digest_size=_ID_BYTES).digest()


__all__ = [
    "NoWitnessCosignature",
    "TransparencyLog",
    "TreeHead",
    "UnknownCheckpoint",
    "decision_id_of_line",
    "leaf_of_line",
    "load_signer",
]
