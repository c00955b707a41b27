"""The digest listing cannot be forged: names are plain, files regular, each path one file.

A newline in a file name could make the listing read as if a file that is not
there were present; these bundles are refused before any digest is taken, from
a directory as from a ``.tar.gz``, and a ratification that points at one is
never activated.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp
import pytest

from gateway.chain.registry import RegistryClient
from gateway.config import Governance
from gateway.exceptions import BundleError
from gateway.lifecycle import State
from gateway.metrics import GatewayMetrics
from gateway.pinning.bundle import Bundle, digest_of_files, load_bundle, load_bundle_bytes
from gateway.pinning.source import BundleSource
from gateway.pinning.store import PolicyStore
from gateway.pinning.watcher import RatificationWatcher
from tests.embedded_chain import start_embedded_governance

ROOT = Path(__file__).resolve().parents[3]
MODELS = "agora/rules/models.rego"
BEFORE_MODELS = "agora/rules/endpoints.rego"  # the file listed just before it


def member(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, **extra: str) -> tuple:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind in (tarfile.REGTYPE, tarfile.AREGTYPE) else 0
    for key, value in extra.items():
        setattr(info, key, value)
    return info, data


def tar_gz(members: list[tuple], tar_format: int = tarfile.PAX_FORMAT) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tar_format) as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return buffer.getvalue()


def default_files() -> dict[str, bytes]:
    return dict(load_bundle(ROOT / "policies").files)


def naive_digest(files: dict[str, bytes]) -> str:
    """The listing digest without the name checks: what an unguarded reader would compute."""
    listing = "".join(
        f"{hashlib.sha256(files[p]).hexdigest()}  {p}\n" for p in sorted(files, key=str.encode)
    )
    return "sha256:" + hashlib.sha256(listing.encode()).hexdigest()


def forged_files() -> dict[str, bytes]:
    """The default policy with the models rule removed, digesting (naively) to the same value.

    The file listed before ``models.rego`` is replaced by one whose name carries,
    after a newline, the listing line of ``models.rego``.
    """
    files = default_files()
    models = files.pop(MODELS)
    before = files.pop(BEFORE_MODELS)
    forged_name = f"{BEFORE_MODELS}\n{hashlib.sha256(models).hexdigest()}  {MODELS}"
    files[forged_name] = before
    return files


# --- the forged listing -------------------------------------------------------------------


def test_a_newline_in_a_name_would_forge_the_listing_of_a_removed_rule() -> None:
    forged = forged_files()
    assert MODELS not in forged
    assert naive_digest(forged) == load_bundle(ROOT / "policies").digest  # the attack works...
    with pytest.raises(BundleError, match="control character '\\\\n'"):
        digest_of_files(forged)  # ...and no digest is taken


@pytest.mark.parametrize(
    "forged_name",
    [
        pytest.param(None, id="exact-collision"),
        pytest.param("x\n{models}  " + MODELS, id="x-newline"),
    ],
)
def test_the_forged_archive_is_refused(forged_name: str | None) -> None:
    files = forged_files()
    if forged_name is not None:
        files = default_files()
        models = files.pop(MODELS)
        files[forged_name.format(models=hashlib.sha256(models).hexdigest())] = b"x"
    archive = tar_gz([member(name, data) for name, data in files.items()])
    with pytest.raises(BundleError, match="control character"):
        load_bundle_bytes(archive, "forged.tar.gz")


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def test_a_ratification_pointing_at_the_forged_archive_is_never_activated(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    forged = tmp_path / "forged.tar.gz"
    forged.write_bytes(tar_gz([member(name, data) for name, data in forged_files().items()]))
    # The community ratified the real default policy; its URI serves the forgery.
    w3, deployment, ratification = start_embedded_governance(ROOT / "policies", forged.as_uri())
    assert ratification.digest == naive_digest(forged_files())
    store, metrics = PolicyStore(), GatewayMetrics()
    watcher = RatificationWatcher(
        Governance.model_validate(
            {
                "rpc_urls": ["http://127.0.0.1:8545"],  # not read: the registry client is given
                "registry": deployment.registry,
                "confirmations": 0,
            }
        ),
        [RegistryClient(w3, deployment.registry)],
        store,
        BundleSource(session, None),
        metrics,
        ThreadPoolExecutor(1),
    )
    assert await watcher.sync_once() is None
    assert store.active is None
    assert watcher.state is State.ERROR
    assert "invalid bundle" in watcher.detail and "control character" in watcher.detail
    assert 'agora_bundle_verifications_total{result="invalid"} 1.0' in (
        metrics.exposition().decode()
    )


# --- names that cannot be listed plainly ----------------------------------------------------

BAD_NAMES = {
    "newline": "agora/a\nb.rego",
    "carriage-return": "agora/a\rb.rego",
    "tab": "agora/a\tb.rego",
    "nul-free-control": "agora/\x01.rego",
    "delete": "agora/a\x7fb.rego",
    "backslash": "agora\\main.rego",
    "escape-in-directory": "agora\x1b[31m/main.rego",
}


@pytest.mark.parametrize("name", BAD_NAMES.values(), ids=BAD_NAMES.keys())
def test_archive_names_with_control_characters_or_backslashes_are_refused(name: str) -> None:
    archive = tar_gz([member(".manifest", b"{}"), member(name, b"package x")])
    with pytest.raises(BundleError, match=r"control character|backslash"):
        load_bundle_bytes(archive, "bad.tar.gz")


@pytest.mark.parametrize("name", BAD_NAMES.values(), ids=BAD_NAMES.keys())
def test_directory_names_with_control_characters_or_backslashes_are_refused(
    tmp_path: Path, name: str
) -> None:
    root = tmp_path / "bundle"
    target = root / name
    target.parent.mkdir(parents=True)
    target.write_text("package x")
    with pytest.raises(BundleError, match=r"control character|backslash"):
        load_bundle(root)


@pytest.mark.parametrize("tar_format", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_archive_names_that_are_not_utf8_are_refused(tar_format: int) -> None:
    # A name written as raw bytes: tarfile hands it over with surrogate escapes.
    name = b"agora/caf\xe9.rego".decode("utf-8", "surrogateescape")
    buffer = io.BytesIO()
    with tarfile.open(
        fileobj=buffer,
        mode="w:gz",
        format=tar_format,
        encoding="utf-8",
        errors="surrogateescape",
    ) as archive:
        info = tarfile.TarInfo(name)
        info.size = 1
        archive.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(BundleError, match="not valid UTF-8"):
        load_bundle_bytes(buffer.getvalue(), "latin1.tar.gz")


def test_directory_names_that_are_not_utf8_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "bundle"
    root.mkdir()
    (root / ".manifest").write_text("{}")
    with open(os.path.join(os.fsencode(root), b"caf\xe9.rego"), "wb") as handle:
        handle.write(b"package x")
    with pytest.raises(BundleError, match="not valid UTF-8"):
        load_bundle(root)


def test_a_bundle_built_in_memory_is_checked_too() -> None:
    with pytest.raises(BundleError, match="control character"):
        _ = Bundle({"a\nb": b""}, "memory").digest


def test_plain_unicode_names_are_fine() -> None:
    archive = tar_gz([member(".manifest", b"{}"), member("agora/café-ü.rego", b"package x")])
    assert "agora/café-ü.rego" in load_bundle_bytes(archive, "ok.tar.gz").files


# --- only regular files, each path once ----------------------------------------------------


@pytest.mark.parametrize(
    "entry",
    [
        pytest.param(member("agora/link.rego", kind=tarfile.SYMTYPE, linkname="x"), id="symlink"),
        pytest.param(
            member("agora/hard.rego", kind=tarfile.LNKTYPE, linkname="agora/main.rego"),
            id="hardlink",
        ),
        pytest.param(member("agora/dev", kind=tarfile.CHRTYPE), id="char-device"),
        pytest.param(member("agora/blk", kind=tarfile.BLKTYPE), id="block-device"),
        pytest.param(member("agora/fifo", kind=tarfile.FIFOTYPE), id="fifo"),
        pytest.param(member("agora/c.rego", b"package c", kind=tarfile.CONTTYPE), id="contiguous"),
    ],
)
def test_archive_members_other_than_regular_files_are_refused(entry: tuple) -> None:
    archive = tar_gz([member(".manifest", b"{}"), member("agora/main.rego", b"package m"), entry])
    with pytest.raises(BundleError, match="is not a regular file"):
        load_bundle_bytes(archive, "odd.tar.gz")


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("agora/main.rego", "agora/main.rego"),
        ("./agora/main.rego", "agora/main.rego"),
        ("/agora/main.rego", "agora//main.rego"),
        ("agora/./main.rego", "agora/main.rego"),
        (".signatures.json", "./.signatures.json"),
    ],
)
def test_a_path_twice_in_an_archive_is_refused(first: str, second: str) -> None:
    archive = tar_gz(
        [member(".manifest", b"{}"), member(first, b"package a"), member(second, b"package b")]
    )
    with pytest.raises(BundleError, match="appears twice"):
        load_bundle_bytes(archive, "twice.tar.gz")


def test_a_path_that_is_a_file_and_a_directory_is_refused() -> None:
    archive = tar_gz(
        [member(".manifest", b"{}"), member("agora", b"x"), member("agora/main.rego", b"y")]
    )
    with pytest.raises(BundleError, match="both a file and a directory"):
        load_bundle_bytes(archive, "clash.tar.gz")


def test_links_and_fifos_in_a_directory_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "bundle"
    (root / "agora").mkdir(parents=True)
    (root / ".manifest").write_text("{}")
    (root / "agora" / "main.rego").write_text("package m")
    load_bundle(root)
    link = root / "agora" / "link.rego"
    link.symlink_to(root / "agora" / "main.rego")
    with pytest.raises(BundleError, match="only regular files"):
        load_bundle(root)
    link.unlink()
    (root / "agora" / "dir-link").symlink_to(root / "agora", target_is_directory=True)
    with pytest.raises(BundleError, match="only regular files"):
        load_bundle(root)
    (root / "agora" / "dir-link").unlink()
    os.mkfifo(root / "agora" / "pipe")
    with pytest.raises(BundleError, match="only regular files"):
        load_bundle(root)  # refused, not blocked on opening the FIFO


def test_signatures_are_left_out_at_any_depth_as_find_does(tmp_path: Path) -> None:
    archive = tar_gz(
        [
            member(".manifest", b"{}"),
            member("agora/main.rego", b"package m"),
            member(".signatures.json", b"{}"),
            member("agora/.signatures.json", b"{}"),
        ]
    )
    bundle = load_bundle_bytes(archive, "signed.tar.gz")
    assert set(bundle.files) == {
        ".manifest",
        "agora/main.rego",
    }  # what is served is what is digested
