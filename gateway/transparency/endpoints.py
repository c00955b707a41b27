"""``/transparency/...`` on the public listener: checkpoints, proofs, and witnesses' cosignatures.

- ``GET /transparency/checkpoint[?size=N]``: the latest signed checkpoint (or the
  one signed at size N), with the cosignatures received for it; ``text/plain``.
- ``GET /transparency/proof/inclusion?index=I`` or ``?decision_id=ID``, optional
  ``&size=S``: audit paths in the tree of S records (default: the latest
  checkpoint's size).
- ``GET /transparency/proof/consistency?from=A[&to=B]``: that tree A is a prefix
  of tree B (default: the latest checkpoint's size).
- ``POST /transparency/cosignature``: a witness's cosigned checkpoint note.

Hashes are standard base64. Proofs are computed in a worker thread: a proof is
at most a few thousand hashes, never a pass over the log.
"""

from __future__ import annotations

import asyncio
import base64

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from gateway.runtime import Gateway
from gateway.transparency.log import NoWitnessCosignature, TransparencyLog, UnknownCheckpoint
from gateway.transparency.note import NoteError

NOTE_TYPE = "text/plain; charset=utf-8"
MAX_COSIGNED_NOTE = 64 * 1024
_NO_STORE = {"Cache-Control": "no-store"}


class _BadQuery(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _log(request: Request) -> tuple[TransparencyLog, int]:
    """The transparency log, and how many records are in the files (proofs stay below)."""
    gateway: Gateway = request.app.state.gateway
    writer = gateway.recorder.writer
    if not writer.transparency.available:
        raise _BadQuery("no Merkle tree: the log's first files are not beside it", 503)
    return writer.transparency, min(writer.count, writer.transparency.tree.size)


def _error(message: str, status: int) -> Response:
    return JSONResponse({"error": message}, status_code=status, headers=_NO_STORE)


def _int(request: Request, name: str, default: int | None = None) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        if default is None:
            raise _BadQuery(f"{name} is required")
        return default
    if not raw.isdigit() or len(raw) > 19:
        raise _BadQuery(f"{name} must be a non-negative integer")
    return int(raw)


def _size(request: Request, tlog: TransparencyLog, written: int, name: str) -> int:
    """The tree size asked for: as given (at most the records written), else the checkpoint's."""
    latest = tlog.latest
    default = latest.checkpoint.size if latest is not None else written
    size = _int(request, name, default)
    if size > written:
        raise _BadQuery(f"{name}={size} is beyond the {written} records in the log", 404)
    return size


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


async def checkpoint(request: Request) -> Response:
    tlog: TransparencyLog = request.app.state.gateway.recorder.writer.transparency
    if tlog.log_key is None:
        return _error("this gateway signs no checkpoints (transparency.key_file)", 404)
    try:
        size = request.query_params.get("size")
        signed = tlog.latest if size is None else tlog.signed(_int(request, "size"))
    except _BadQuery as exc:
        return _error(str(exc), exc.status)
    if signed is None:
        return _error("no checkpoint signed at that size" if size else "no checkpoint yet", 404)
    return PlainTextResponse(str(signed), media_type=NOTE_TYPE, headers=_NO_STORE)


async def inclusion(request: Request) -> Response:
    try:
        tlog, written = _log(request)
        size = _size(request, tlog, written, "size")
        decision_id = request.query_params.get("decision_id")
        if decision_id is not None:
            indices = [i for i in tlog.find(decision_id) if i < size]
            if not indices:
                raise _BadQuery(
                    f"no record of decision {decision_id} in the tree of {size} records (a "
                    "record joins the signed tree at the next checkpoint)",
                    404,
                )
        else:
            indices = [_int(request, "index")]
            if indices[0] >= size:
                raise _BadQuery(f"index {indices[0]} is not in the tree of {size} records", 404)
    except _BadQuery as exc:
        return _error(str(exc), exc.status)

    def prove() -> dict[str, object]:
        return {
            "tree_size": size,
            "root_hash": _b64(tlog.tree.root(size)),
            "inclusions": [
                {
                    "index": index,
                    "seq": index + 1,
                    "leaf_hash": _b64(tlog.tree.leaf(index)),
                    "proof": [_b64(h) for h in tlog.tree.inclusion_proof(index, size)],
                }
                for index in indices
            ],
        }

    return JSONResponse(await asyncio.to_thread(prove), headers=_NO_STORE)


async def consistency(request: Request) -> Response:
    try:
        tlog, written = _log(request)
        second = _size(request, tlog, written, "to")
        first = _int(request, "from")
        if first > second:
            raise _BadQuery(f"from={first} is larger than to={second}")
    except _BadQuery as exc:
        return _error(str(exc), exc.status)

    def prove() -> dict[str, object]:
        return {
            "from": first,
            "to": second,
            "proof": [_b64(h) for h in tlog.tree.consistency_proof(first, second)],
        }

    return JSONResponse(await asyncio.to_thread(prove), headers=_NO_STORE)


async def cosignature(request: Request) -> Response:
    """A witness hands in its cosignature: kept, and published with the checkpoint."""
    tlog: TransparencyLog = request.app.state.gateway.recorder.writer.transparency
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_COSIGNED_NOTE:
            return _error(f"a cosigned note is at most {MAX_COSIGNED_NOTE} bytes", 413)
    try:
        names = await asyncio.to_thread(tlog.cosign, body.decode("utf-8"))
    except UnicodeDecodeError:
        return _error("a cosigned note is UTF-8 text", 400)
    except UnknownCheckpoint as exc:
        return _error(str(exc), 404)
    except NoWitnessCosignature as exc:
        return _error(str(exc), 403)
    except NoteError as exc:
        return _error(str(exc), 400)
    return JSONResponse({"accepted": names}, headers=_NO_STORE)


__all__ = ["checkpoint", "consistency", "cosignature", "inclusion"]
