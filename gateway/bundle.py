"""Policy bundles: reading them, their digest, and the archive served to OPA.

The digest is defined so that anyone can re-derive it with coreutils (see
docs/policy-bundles.md): one line ``"<sha256 hex>  <posix path>\\n"`` per regular
file except ``.signatures.json``, sorted by path bytes, and the SHA-256 of that
text. It ignores archive metadata, file times and file order.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from gateway.exceptions import BundleError

EXCLUDED = frozenset({".signatures.json"})
MAX_BUNDLE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Bundle:
    """The files of one policy bundle, keyed by relative POSIX path."""

    files: Mapping[str, bytes]
    source: str

    @property
    def digest(self) -> str:
        return digest_of_files(self.files)

    def manifest(self) -> dict[str, object]:
        raw = self.files.get(".manifest")
        if raw is None:
            return {}
        try:
            manifest = json.loads(raw)
        except ValueError as exc:
            raise BundleError(f"{self.source}: .manifest is not valid JSON: {exc}") from exc
        if not isinstance(manifest, dict):
            raise BundleError(f"{self.source}: .manifest must be a JSON object")
        return manifest


def digest_of_files(files: Mapping[str, bytes]) -> str:
    """The bundle digest, ``sha256:<hex>``, of a path-to-content mapping."""
    listing = "".join(
        f"{hashlib.sha256(files[path]).hexdigest()}  {path}\n"
        for path in sorted(files, key=lambda p: p.encode())
        if PurePosixPath(path).name not in EXCLUDED
    )
    return "sha256:" + hashlib.sha256(listing.encode()).hexdigest()


def load_bundle(path: Path) -> Bundle:
    """Read a bundle from a directory or a ``.tar.gz`` archive."""
    if path.is_dir():
        return Bundle(_read_directory(path), str(path))
    if path.is_file():
        return Bundle(_read_archive(path.read_bytes(), str(path)), str(path))
    raise BundleError(f"policy bundle {path} does not exist")


def load_bundle_bytes(data: bytes, source: str) -> Bundle:
    """Read a bundle from the bytes of a ``.tar.gz`` archive (fetched over the network)."""
    return Bundle(_read_archive(data, source), source)


def _read_directory(root: Path) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    total = 0
    for item in sorted(root.rglob("*")):
        if item.is_symlink():
            raise BundleError(f"{item}: symbolic links are not allowed in a bundle")
        if not item.is_file():
            continue
        relative = item.relative_to(root).as_posix()
        if relative in EXCLUDED:
            continue
        content = item.read_bytes()
        total += len(content)
        if total > MAX_BUNDLE_BYTES:
            raise BundleError(f"{root}: bundle larger than {MAX_BUNDLE_BYTES} bytes")
        files[relative] = content
    if not files:
        raise BundleError(f"{root}: the bundle directory is empty")
    return files


def _read_archive(data: bytes, source: str) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    total = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
            for member in archive:
                if member.isdir():
                    continue
                if not member.isfile():
                    raise BundleError(f"{source}: {member.name} is not a regular file")
                relative = _safe_member_path(member.name, source)
                if relative in EXCLUDED:
                    continue
                total += member.size
                if total > MAX_BUNDLE_BYTES:
                    raise BundleError(f"{source}: bundle larger than {MAX_BUNDLE_BYTES} bytes")
                extracted = archive.extractfile(member)
                if extracted is None:
                    raise BundleError(f"{source}: cannot read {member.name}")
                if relative in files:
                    raise BundleError(f"{source}: {relative} appears twice")
                files[relative] = extracted.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BundleError(f"{source}: not a readable .tar.gz bundle: {exc}") from exc
    if not files:
        raise BundleError(f"{source}: the bundle archive is empty")
    return files


def _safe_member_path(name: str, source: str) -> str:
    path = PurePosixPath(name.lstrip("/"))
    parts = [p for p in path.parts if p != "."]
    if not parts or ".." in parts:
        raise BundleError(f"{source}: unsafe path {name!r} in archive")
    return "/".join(parts)


def build_archive(files: Mapping[str, bytes], revision: str | None = None) -> bytes:
    """A reproducible ``.tar.gz`` of the files (fixed times and owners, sorted).

    With ``revision``, the ``.manifest`` carries it, so that OPA reports which
    bundle judged each query (``provenance``). The archive is derived from the
    verified files; its own bytes are not what the digest covers.
    """
    contents = dict(files)
    if revision is not None:
        manifest = json.loads(contents[".manifest"]) if ".manifest" in contents else {}
        manifest["revision"] = revision
        contents[".manifest"] = json.dumps(manifest, sort_keys=True).encode()
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as archive,
    ):
        for path in sorted(contents, key=lambda p: p.encode()):
            info = tarfile.TarInfo(name=path)
            info.size = len(contents[path])
            info.mode = 0o644
            info.mtime = 0
            archive.addfile(info, io.BytesIO(contents[path]))
    return buffer.getvalue()
