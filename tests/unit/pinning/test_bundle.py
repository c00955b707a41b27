from __future__ import annotations

import gzip
import io
import os
import subprocess
import tarfile
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from gateway.exceptions import BundleError, BundleUnavailable
from gateway.pinning.bundle import BundleLimits, build_archive, load_bundle, load_bundle_bytes
from gateway.pinning.source import BundleSource

ROOT = Path(__file__).resolve().parents[3]


def make_bundle(root: Path) -> Path:
    (root / "agora").mkdir(parents=True)
    (root / ".manifest").write_text('{"roots": ["agora"]}')
    (root / "agora" / "main.rego").write_text("package agora.main\n\nallow := true\n")
    (root / "agora" / "data.json").write_text('{"x": 1}')
    (root / ".signatures.json").write_text("{}")
    return root


def shell_digest(directory: Path) -> str:
    """The documented coreutils one-liner, run for real."""
    command = (
        "find . -type f ! -name .signatures.json | sed 's|^\\./||' | LC_ALL=C sort "
        "| xargs -d '\\n' sha256sum | sha256sum"
    )
    out = subprocess.run(
        command, shell=True, cwd=directory, capture_output=True, text=True, check=True
    )
    return "sha256:" + out.stdout.split()[0]


def test_digest_matches_the_coreutils_one_liner(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "b")
    assert load_bundle(bundle).digest == shell_digest(bundle)


def test_default_policy_digest_matches_the_one_liner() -> None:
    assert load_bundle(ROOT / "policies").digest == shell_digest(ROOT / "policies")


def test_digest_ignores_archive_metadata_and_order(tmp_path: Path) -> None:
    directory = make_bundle(tmp_path / "b")
    expected = load_bundle(directory).digest
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path in sorted(directory.rglob("*"), reverse=True):
            if path.is_file():
                archive.add(path, arcname="./" + path.relative_to(directory).as_posix())
    assert load_bundle_bytes(buffer.getvalue(), "test").digest == expected


def test_one_changed_byte_changes_the_digest(tmp_path: Path) -> None:
    directory = make_bundle(tmp_path / "b")
    before = load_bundle(directory).digest
    (directory / "agora" / "data.json").write_text('{"x": 2}')
    assert load_bundle(directory).digest != before


def test_served_archive_carries_the_revision_and_is_reproducible(tmp_path: Path) -> None:
    bundle = load_bundle(make_bundle(tmp_path / "b"))
    first = build_archive(bundle.files, revision="v1+sha256:abc")
    assert first == build_archive(bundle.files, revision="v1+sha256:abc")
    served = load_bundle_bytes(first, "served")
    assert b'"revision": "v1+sha256:abc"' in served.files[".manifest"]


def test_unsafe_archive_paths_are_refused() -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo("../escape.rego")
        info.size = 1
        archive.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(BundleError, match="unsafe path"):
        load_bundle_bytes(buffer.getvalue(), "evil")


def test_garbage_is_not_a_bundle() -> None:
    with pytest.raises(BundleError, match="not a readable"):
        load_bundle_bytes(b"garbage", "junk")


def test_missing_bundle(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(tmp_path / "nothing")


# --- reading is bounded ---------------------------------------------------------------------

SMALL = BundleLimits(max_files=8, max_bytes=64 * 1024)


def archive_of(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_too_many_members_are_refused(tmp_path: Path) -> None:
    files = {f"agora/r{i}.rego": b"package r" for i in range(SMALL.max_files + 1)}
    with pytest.raises(BundleError, match="more than 8 entries"):
        load_bundle_bytes(archive_of(files), "many.tar.gz", SMALL)
    directory = tmp_path / "many"
    directory.mkdir()
    for name, data in files.items():
        (directory / name.replace("/", "-")).write_bytes(data)
    with pytest.raises(BundleError, match="more than 8 entries"):
        load_bundle(directory, SMALL)


def test_too_many_bytes_are_refused_before_they_are_read(tmp_path: Path) -> None:
    files = {"agora/a.json": b"0" * 40_000, "agora/b.json": b"1" * 40_000}
    with pytest.raises(BundleError, match="bundle larger than 65536 bytes"):
        load_bundle_bytes(archive_of(files), "big.tar.gz", SMALL)
    directory = tmp_path / "big"
    (directory / "agora").mkdir(parents=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)
    with pytest.raises(BundleError, match="bundle larger than 65536 bytes"):
        load_bundle(directory, SMALL)


def test_a_compressed_archive_over_the_limit_is_not_even_opened(tmp_path: Path) -> None:
    noise = os.urandom(SMALL.max_bytes + 1)
    with pytest.raises(BundleError, match="archive larger than 65536 bytes"):
        load_bundle_bytes(noise, "noise.tar.gz", SMALL)
    (tmp_path / "noise.tar.gz").write_bytes(noise)
    with pytest.raises(BundleError, match="archive larger than 65536 bytes"):
        load_bundle(tmp_path / "noise.tar.gz", SMALL)


def gzip_bomb(header_type: bytes, unpacked: int) -> bytes:
    """A tar header whose own payload (a PAX record, a GNU long name) unpacks to ``unpacked``
    bytes of zeros: tarfile reads such a payload whole into memory.
    """
    header = tarfile.TarInfo("bomb")
    header.type = header_type
    header.size = unpacked
    raw = header.tobuf(format=tarfile.USTAR_FORMAT if header_type == b"x" else tarfile.GNU_FORMAT)
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip framing
    out = [compressor.compress(raw)]
    block = bytes(1024 * 1024)
    for _ in range(unpacked // len(block)):
        out.append(compressor.compress(block))
    out.append(compressor.flush())
    return b"".join(out)


@pytest.mark.parametrize("header_type", [tarfile.XHDTYPE, tarfile.GNUTYPE_LONGNAME])
def test_a_gzip_bomb_in_a_header_is_stopped_at_the_cap_without_exhausting_memory(
    header_type: bytes,
) -> None:
    bomb = gzip_bomb(header_type, 32 * 1024 * 1024)
    assert len(bomb) < SMALL.max_bytes  # small on the wire
    tracemalloc.start()
    try:
        with pytest.raises(BundleError, match="unpacks to more than"):
            load_bundle_bytes(bomb, "bomb.tar.gz", SMALL)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024


def test_a_member_claiming_a_huge_size_is_refused_from_its_header() -> None:
    header = tarfile.TarInfo("agora/huge.json")
    header.size = 2**40
    with pytest.raises(BundleError, match="bundle larger than"):
        load_bundle_bytes(gzip.compress(header.tobuf(format=tarfile.PAX_FORMAT)), "huge", SMALL)


# --- the manifest ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"roots": "agora"}', "roots must be a list of strings"),
        (b'{"roots": ["agora", 7]}', "roots must be a list of strings"),
        (b'{"revision": 7}', "revision must be a string"),
    ],
)
def test_a_malformed_manifest_is_refused_when_read(manifest: bytes, message: str) -> None:
    archive = archive_of({".manifest": manifest, "agora/main.rego": b"package agora.main"})
    with pytest.raises(BundleError, match=message):
        load_bundle_bytes(archive, "manifest.tar.gz")


def test_build_archive_refuses_a_malformed_manifest_with_a_bundle_error() -> None:
    with pytest.raises(BundleError, match="not valid JSON"):
        build_archive({".manifest": b"{", "a.rego": b""}, revision="v1+sha256:x")


# --- fetching -------------------------------------------------------------------------------


Responder = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def bundle_server() -> AsyncIterator[tuple[str, dict[str, Responder]]]:
    """A loopback HTTP server answering each path with the responder a test puts in the dict."""
    responders: dict[str, Responder] = {}

    async def handler(request: web.Request) -> web.StreamResponse:
        return await responders[request.path](request)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", responders
    finally:
        await runner.cleanup()


async def test_a_redirect_is_not_followed(
    tmp_path: Path, bundle_server: tuple[str, dict[str, Responder]]
) -> None:
    base, responders = bundle_server
    served = archive_of({".manifest": b"{}", "agora/main.rego": b"package agora.main"})
    fetched: list[str] = []

    async def redirect(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(f"{base}/elsewhere.tar.gz")

    async def elsewhere(request: web.Request) -> web.StreamResponse:
        fetched.append(request.path)
        return web.Response(body=served)

    responders.update({"/v1.tar.gz": redirect, "/elsewhere.tar.gz": elsewhere})
    async with aiohttp.ClientSession() as session:
        source = BundleSource(session, None)
        with pytest.raises(BundleUnavailable, match="HTTP 302 \\(a redirect\\); redirects are not"):
            await source.fetch("sha256:" + "0" * 64, f"{base}/v1.tar.gz")
        assert fetched == []
        bundle = await source.fetch("sha256:" + "0" * 64, f"{base}/elsewhere.tar.gz")
    assert bundle.files["agora/main.rego"] == b"package agora.main"


async def test_a_download_is_read_whole_and_stopped_at_the_limit(
    bundle_server: tuple[str, dict[str, Responder]],
) -> None:
    base, responders = bundle_server
    large = os.urandom(48 * 1024)  # several network chunks, incompressible
    served = archive_of({".manifest": b"{}", "agora/data.json": large})

    async def streamed(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()  # no Content-Length: only the running count stops it
        await response.prepare(request)
        for start in range(0, len(served), 4096):
            await response.write(served[start : start + 4096])
        for _ in range(64):
            await response.write(bytes(4096))
        await response.write_eof()
        return response

    async def whole(request: web.Request) -> web.StreamResponse:
        return web.Response(body=served)

    responders.update({"/streamed.tar.gz": streamed, "/whole.tar.gz": whole})
    async with aiohttp.ClientSession() as session:
        source = BundleSource(session, None, limits=SMALL)
        bundle = await source.fetch("sha256:" + "0" * 64, f"{base}/whole.tar.gz")
        assert bundle.files["agora/data.json"] == large
        with pytest.raises(BundleError, match="larger than 65536 bytes"):
            await source.fetch("sha256:" + "0" * 64, f"{base}/streamed.tar.gz")


async def test_plain_http_to_another_host_is_refused() -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(BundleUnavailable, match="use https, file"):
            await BundleSource(session, None).fetch("sha256:" + "0" * 64, "http://example.org/b")
