"""A witness of a gateway's log: it cosigns a checkpoint only if it extends the last one it saw.

The witness keeps the last checkpoint it accepted in a state file. Each round
it fetches the gateway's latest checkpoint, checks the log's signature, and
asks for a consistency proof from the size it holds to the new one. Only if the
proof verifies does it cosign (C2SP ``tlog-cosignature`` v1), keep the new
checkpoint, and hand the cosignature to the gateway. A log that was rewritten,
cut, or shown differently to different witnesses (a fork) fails that proof for
at least one of them, which then refuses, keeps its state, and says so.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.transparency.checkpoint import SignedCheckpoint
from gateway.transparency.merkle import verify_consistency
from gateway.transparency.note import COSIGNATURE_V1, NoteError, Signer, Verifier

TIMEOUT_S = 10.0
MAX_RESPONSE = 1024 * 1024


class WitnessError(Exception):
    """The gateway could not be asked, or answered something the witness cannot use."""


class Inconsistent(WitnessError):
    """The log's new checkpoint does not extend the one the witness holds: a fork or a rewrite."""


@dataclass(frozen=True)
class Witness:
    """One witness of one log."""

    url: str
    """The gateway's public base URL."""
    log_key: Verifier
    signer: Signer
    state: Path
    origin: str | None = None
    """The log's origin; None: the one of the first checkpoint accepted (then held to it)."""

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise WitnessError(f"the gateway URL must be http:// or https://, not {self.url!r}")
        if self.signer.kind != COSIGNATURE_V1:
            raise WitnessError("the witness key is not a cosignature key (keygen --witness)")

    def held(self) -> SignedCheckpoint | None:
        """The last checkpoint this witness accepted."""
        try:
            text = self.state.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            return SignedCheckpoint.open(text, self.log_key, self.origin)
        except NoteError as exc:
            raise WitnessError(f"{self.state}: not a checkpoint of this log ({exc})") from None

    def step(self) -> SignedCheckpoint:
        """Fetch, check and cosign the latest checkpoint; the checkpoint now held.

        Raise Inconsistent when it does not extend the one held (nothing is cosigned
        and the state is kept), WitnessError for any other failure.
        """
        text = self._get("/transparency/checkpoint")
        old = self.held()
        origin = self.origin if old is None else old.checkpoint.origin
        try:
            new = SignedCheckpoint.open(text, self.log_key, origin)
        except NoteError as exc:
            raise WitnessError(f"the gateway's checkpoint does not verify: {exc}") from None
        if old is not None:
            self._check_extends(old, new)
        line = self.signer.sign_line(new.note.text, int(time.time()))
        self._save(new)
        self._post("/transparency/cosignature", new.note.text + "\n" + line)
        return new

    def _check_extends(self, old: SignedCheckpoint, new: SignedCheckpoint) -> None:
        a, b = old.checkpoint, new.checkpoint
        if b.size < a.size:
            raise Inconsistent(f"the log shrank from {a.size} to {b.size} records")
        if b.size == a.size:
            if b.root != a.root:
                raise Inconsistent(f"two different trees of {a.size} records: the log forked")
            return
        answer = json.loads(self._get(f"/transparency/proof/consistency?from={a.size}&to={b.size}"))
        try:
            proof = [base64.b64decode(h, validate=True) for h in answer["proof"]]
        except (KeyError, TypeError, binascii.Error) as exc:
            raise WitnessError(f"malformed consistency proof: {exc}") from None
        if not verify_consistency(a.size, b.size, a.root, b.root, proof):
            raise Inconsistent(
                f"the checkpoint of {b.size} records does not extend the one of {a.size} "
                "this witness cosigned: the log was rewritten or forked"
            )

    def _save(self, checkpoint: SignedCheckpoint) -> None:
        temporary = self.state.with_name(self.state.name + ".tmp")
        with open(temporary, "w", encoding="utf-8") as file:
            file.write(str(checkpoint))
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.state)

    def _get(self, path: str) -> str:
        return self._call(urllib.request.Request(self.url.rstrip("/") + path))

    def _post(self, path: str, body: str) -> str:
        request = urllib.request.Request(
            self.url.rstrip("/") + path,
            data=body.encode(),
            headers={"Content-Type": "text/plain; charset=utf-8"},
            method="POST",
        )
        return self._call(request)

    def _call(self, request: urllib.request.Request) -> str:
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                data: bytes = response.read(MAX_RESPONSE + 1)
        except urllib.error.HTTPError as exc:
            detail = _error_detail(exc.read(4096))
            raise WitnessError(f"{request.full_url}: HTTP {exc.code} {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise WitnessError(f"{request.full_url}: {exc}") from None
        if len(data) > MAX_RESPONSE:
            raise WitnessError(f"{request.full_url}: answer larger than {MAX_RESPONSE} bytes")
        return data.decode("utf-8", errors="replace")


def _error_detail(body: bytes) -> str:
    try:
        document: Any = json.loads(body)
    except ValueError:
        return body.decode("utf-8", errors="replace")[:200]
    return str(document.get("error", document)) if isinstance(document, dict) else str(document)


__all__ = ["Inconsistent", "Witness", "WitnessError"]
