"""Policy bundles: reading them, their digest, and the archive served to OPA.

The digest is defined so that anyone can re-derive it with coreutils (see
docs/policy-bundles.md): one line ``"<sha256 hex>  <posix path>\\n"`` per regular
file except ``.signatures.json``, sorted by path bytes, and the SHA-256 of that
text. It ignores archive metadata, file times and file order.

That listing is unambiguous only because paths are plain: a path with a control
character (a newline could forge the line of a file that is not there), a
backslash (``sha256sum`` escapes it) or bytes that are not UTF-8 makes the bundle
invalid, and so does anything but regular files and directories (links, devices,
FIFOs) or a path present twice. Bundles come from the network: reading one is
bounded in file count and in bytes, compressed and decompressed, before anything
is kept in memory.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Any

from gateway.exceptions import BundleError

EXCLUDED = frozenset({".signatures.json"})
MANIFEST = ".manifest"
_GZIP_MAGIC = b"\x1f\x8b"
_REGULAR = (tarfile.REGTYPE, tarfile.AREGTYPE)  # not links, devices, FIFOs, sparse files
# Room in the decompressed tar stream for headers and padding, per member.
_TAR_OVERHEAD_PER_MEMBER = 4096


@dataclass(frozen=True)
class BundleLimits:
    """How much a bundle may hold; checked while reading, before contents are kept."""

    max_files: int = 10_000
    """Entries (files and directories) in a bundle."""
    max_bytes: int = 64 * 1024 * 1024
    """Total size of the files, and size of a compressed archive."""

    @property
    def max_stream_bytes(self) -> int:
        """The most a decompressed tar stream may hold: files, plus headers and padding."""
        return self.max_bytes + self.max_files * _TAR_OVERHEAD_PER_MEMBER


DEFAULT_LIMITS = BundleLimits()


@dataclass(frozen=True)
class Bundle:
    """The files of one policy bundle, keyed by relative POSIX path."""

    files: Mapping[str, bytes]
    source: str

    @cached_property
    def digest(self) -> str:
        """Computed once: a bundle's files do not change after it was read."""
        return digest_of_files(self.files, self.source)


def check_path(path: str, source: str) -> None:
    """BundleError unless ``path`` can stand in the digest listing unambiguously."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        # tarfile and os hand over undecodable bytes as lone surrogates (surrogateescape).
        raise BundleError(f"{source}: a file name is not valid UTF-8: {path!r}") from None
    bad = next((ch for ch in path if ord(ch) < 0x20 or ord(ch) == 0x7F or ch == "\\"), None)
    if bad is not None:
        what = "a backslash" if bad == "\\" else f"the control character {bad!r}"
        raise BundleError(f"{source}: the file name {path!r} holds {what}")


def is_excluded(path: str) -> bool:
    """Files the digest leaves out (``find ! -name .signatures.json``: at any depth)."""
    return PurePosixPath(path).name in EXCLUDED


def digest_of_files(files: Mapping[str, bytes], source: str = "bundle") -> str:
    """The bundle digest, ``sha256:<hex>``, of a path-to-content mapping.

    BundleError if a path could make the listing ambiguous: no digest is taken then.
    """
    for path in files:
        check_path(path, source)
    listing = "".join(
        f"{hashlib.sha256(files[path]).hexdigest()}  {path}\n"
        for path in sorted(files, key=lambda p: p.encode())
        if not is_excluded(path)
    )
    return "sha256:" + hashlib.sha256(listing.encode()).hexdigest()


def parse_manifest(raw: bytes, source: str) -> dict[str, Any]:
    """A ``.manifest`` as OPA reads it: a JSON object whose ``roots`` is a list of strings."""
    try:
        manifest = json.loads(raw)
    except ValueError as exc:
        raise BundleError(f"{source}: .manifest is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict):
        raise BundleError(f"{source}: .manifest must be a JSON object")
    roots = manifest.get("roots")
    if roots is not None and not (
        isinstance(roots, list) and all(isinstance(root, str) for root in roots)
    ):
        raise BundleError(f"{source}: .manifest roots must be a list of strings")
    revision = manifest.get("revision")
    if revision is not None and not isinstance(revision, str):
        raise BundleError(f"{source}: .manifest revision must be a string")
    return manifest


def load_bundle(path: Path, limits: BundleLimits = DEFAULT_LIMITS) -> Bundle:
    """Read a bundle from a directory or a ``.tar.gz`` archive."""
    source = str(path)
    if path.is_dir():
        return _validated(_read_directory(path, limits), source)
    if path.is_file():
        with path.open("rb") as handle:
            data = handle.read(limits.max_bytes + 1)
        return load_bundle_bytes(data, source, limits)
    raise BundleError(f"policy bundle {path} does not exist")


def load_bundle_bytes(data: bytes, source: str, limits: BundleLimits = DEFAULT_LIMITS) -> Bundle:
    """Read a bundle from the bytes of a ``.tar.gz`` archive (fetched over the network)."""
    if len(data) > limits.max_bytes:
        raise BundleError(f"{source}: archive larger than {limits.max_bytes} bytes")
    return _validated(_read_archive(data, source, limits), source)


def _validated(files: dict[str, bytes], source: str) -> Bundle:
    if not files:
        raise BundleError(f"{source}: the bundle is empty")
    if MANIFEST in files:
        parse_manifest(files[MANIFEST], source)
    return Bundle(files, source)


class _Budget:
    """Running counts of entries and bytes against the limits."""

    def __init__(self, limits: BundleLimits, source: str):
        self._limits, self._source = limits, source
        self._entries = 0
        self._bytes = 0

    def entry(self) -> None:
        self._entries += 1
        if self._entries > self._limits.max_files:
            raise BundleError(f"{self._source}: more than {self._limits.max_files} entries")

    def take(self, size: int) -> None:
        """Account for a file of ``size`` bytes, before it is read."""
        self._bytes += size
        if self._bytes > self._limits.max_bytes:
            raise BundleError(f"{self._source}: bundle larger than {self._limits.max_bytes} bytes")


def _read_directory(root: Path, limits: BundleLimits) -> dict[str, bytes]:
    """Regular files under ``root``; links, devices, FIFOs and sockets make it invalid."""
    files: dict[str, bytes] = {}
    budget = _Budget(limits, str(root))
    pending = [root]
    while pending:
        directory = pending.pop()
        with os.scandir(directory) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                budget.entry()
                item = Path(entry.path)
                relative = item.relative_to(root).as_posix()
                check_path(relative, str(root))
                mode = entry.stat(follow_symlinks=False).st_mode
                if stat.S_ISDIR(mode):
                    pending.append(item)
                elif not stat.S_ISREG(mode):
                    raise BundleError(f"{item}: only regular files may be in a bundle")
                else:
                    content = _read_regular_file(item, budget)
                    if not is_excluded(relative):
                        files[relative] = content
    return files


def _read_regular_file(path: Path, budget: _Budget) -> bytes:
    """The file's bytes, without following a link or blocking on a FIFO swapped in meanwhile."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        descriptor = os.open(path, flags)
    except OSError as exc:
        raise BundleError(f"{path}: cannot be read: {exc.strerror}") from exc
    with os.fdopen(descriptor, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise BundleError(f"{path}: only regular files may be in a bundle")
        budget.take(info.st_size)
        content = handle.read(info.st_size + 1)
    if len(content) != info.st_size:
        raise BundleError(f"{path}: the file changed while it was read")
    return content


def _read_archive(data: bytes, source: str, limits: BundleLimits) -> dict[str, bytes]:
    """Regular files of a (gzip-compressed) tar, read as a stream with a running cap."""
    files: dict[str, bytes] = {}
    seen: set[str] = set()
    directories: set[str] = set()
    budget = _Budget(limits, source)
    raw: io.BufferedIOBase = io.BytesIO(data)
    if data.startswith(_GZIP_MAGIC):
        raw = gzip.GzipFile(fileobj=raw, mode="rb")
    stream = _CappedReader(raw, limits.max_stream_bytes, source)
    try:
        with tarfile.open(
            fileobj=stream, mode="r|", encoding="utf-8", errors="surrogateescape"
        ) as archive:
            for member in archive:
                budget.entry()
                relative = _member_path(member.name, source)
                check_path(relative, source)
                if member.isdir():
                    directories.add(relative)
                    continue
                if member.type not in _REGULAR:
                    raise BundleError(f"{source}: {relative!r} is not a regular file")
                if relative in seen:
                    raise BundleError(f"{source}: {relative!r} appears twice")
                seen.add(relative)
                budget.take(member.size)
                extracted = archive.extractfile(member)
                if extracted is None:
                    raise BundleError(f"{source}: cannot read {relative!r}")
                content = extracted.read()
                if not is_excluded(relative):
                    files[relative] = content
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise BundleError(f"{source}: not a readable .tar.gz bundle: {exc}") from exc
    _refuse_file_as_directory(seen, directories, source)
    return files


def _refuse_file_as_directory(files: set[str], directories: set[str], source: str) -> None:
    """A path that is a file and also the parent of another entry is two things at once."""
    parents = {
        str(parent) for path in files | directories for parent in PurePosixPath(path).parents
    }
    clash = sorted(files & parents)
    if clash:
        raise BundleError(f"{source}: {clash[0]!r} is both a file and a directory")


def _member_path(name: str, source: str) -> str:
    """The member's path relative to the bundle root: ``./a`` and ``/a`` are ``a``."""
    path = PurePosixPath(name.lstrip("/"))
    parts = [p for p in path.parts if p != "."]
    if not parts or ".." in parts:
        raise BundleError(f"{source}: unsafe path {name!r} in archive")
    return "/".join(parts)


class _CappedReader(io.RawIOBase):
    """A read-only stream that fails once more than ``cap`` bytes were read from it.

    tarfile reads some headers whole into memory (a PAX or GNU long-name header
    declares its own size), so the cap applies to the decompressed stream itself.
    """

    def __init__(self, inner: io.BufferedIOBase, cap: int, source: str):
        self._inner, self._cap, self._source = inner, cap, source
        self._read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        wanted = min(len(view), self._cap + 1 - self._read)
        chunk = self._inner.read(wanted) if wanted > 0 else b""
        self._read += len(chunk)
        if self._read > self._cap:
            raise BundleError(f"{self._source}: the archive unpacks to more than {self._cap} bytes")
        view[: len(chunk)] = chunk
        return len(chunk)


def build_archive(files: Mapping[str, bytes], revision: str | None = None) -> bytes:
    """A reproducible ``.tar.gz`` of the files (fixed times and owners, sorted).

    With ``revision``, the ``.manifest`` carries it, so that OPA reports which
    bundle judged each query (``provenance``). The archive is derived from the
    verified files; its own bytes are not what the digest covers.
    """
    contents = dict(files)
    if revision is not None:
        manifest = parse_manifest(contents[MANIFEST], "bundle") if MANIFEST in contents else {}
        manifest["revision"] = revision
        contents[MANIFEST] = json.dumps(manifest, sort_keys=True).encode()
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
