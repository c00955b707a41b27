"""The ``transparency`` configuration section: refusals name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import load_settings
from gateway.exceptions import ConfigError
from gateway.transparency.note import COSIGNATURE_V1, Signer

AUTH = "auth: {required: false}\n"


def settings(tmp_path: Path, section: str) -> object:
    path = tmp_path / "agora.yaml"
    path.write_text(AUTH + "transparency: " + section + "\n")
    return load_settings(path, environ={})


def test_defaults(tmp_path: Path) -> None:
    loaded = load_settings(None, environ={"AGORA__AUTH__REQUIRED": "false"}).transparency
    assert (loaded.key_file, loaded.key_env, loaded.origin) == (None, None, None)
    assert (loaded.checkpoint_every, loaded.checkpoint_interval_s) == (1000, 60.0)
    assert loaded.witnesses == []


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("{key_file: /k, key_env: K}", "key_file or transparency.key_env, not both"),
        ("{checkpoint_every: 0}", "transparency.checkpoint_every"),
        ("{origin: ''}", "transparency.origin"),
        ('{origin: "a\\nb"}', "transparency.origin"),
        ("{witnesses: [nonsense]}", r"witnesses\[0\]"),
        ("{surprise: 1}", "transparency.surprise: unknown key"),
    ],
)
def test_refusals_name_the_key(tmp_path: Path, section: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings(tmp_path, section)


def test_witness_keys_must_be_cosignature_keys(tmp_path: Path) -> None:
    note_key = Signer.generate("w.example").verifier
    with pytest.raises(ConfigError, match="not a cosignature key"):
        settings(tmp_path, f"{{witnesses: ['{note_key}']}}")
    witness = Signer.generate("w.example", COSIGNATURE_V1).verifier
    settings(tmp_path, f"{{witnesses: ['{witness}']}}")
