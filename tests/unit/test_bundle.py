from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from gateway.bundle import build_archive, load_bundle, load_bundle_bytes
from gateway.exceptions import BundleError

ROOT = Path(__file__).resolve().parents[2]


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
