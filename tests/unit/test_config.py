from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import load_settings
from gateway.exceptions import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agora.yaml"
    path.write_text(text)
    return path


def test_defaults_are_valid() -> None:
    settings = load_settings(None, environ={})
    assert settings.policy.decision_path == "agora/main"
    assert settings.upstreams[0].models == ["*"]


def test_unknown_key_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"policy\.timeout: unknown key"):
        load_settings(write(tmp_path, "policy: {timeout: 5}\n"), environ={})


def test_bad_url_is_named(tmp_path: Path) -> None:
    text = "upstreams:\n  - {name: a, url: 'not a url'}\n"
    with pytest.raises(ConfigError, match=r"upstreams\.0\.url"):
        load_settings(write(tmp_path, text), environ={})


def test_missing_config_file_is_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path / "absent.yaml", environ={})


def test_missing_key_file_is_named(tmp_path: Path) -> None:
    text = "auth: {public_key_file: /nonexistent.pem}\n"
    with pytest.raises(ConfigError, match=r"auth: .*public_key_file"):
        load_settings(write(tmp_path, text), environ={})


def test_environment_overrides_nested_keys(tmp_path: Path) -> None:
    settings = load_settings(
        write(tmp_path, "policy: {timeout_ms: 50}\n"),
        environ={
            "AGORA__POLICY__TIMEOUT_MS": "250",
            "AGORA__POLICY__OPA_URL": "http://opa:8181",
            "AGORA__UPSTREAMS__0__NAME": "one",
            "AGORA__UPSTREAMS__0__URL": "http://10.0.0.1:9000",
            "AGORA__AUTH__REQUIRED": "false",
            "UNRELATED": "x",
        },
    )
    assert settings.policy.timeout_ms == 250
    assert str(settings.policy.opa_url) == "http://opa:8181/"
    assert settings.upstreams[0].name == "one"
    assert settings.auth.required is False


def test_unknown_environment_key_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"policy\.timout_ms: unknown key"):
        load_settings(None, environ={"AGORA__POLICY__TIMOUT_MS": "5"})


def test_hmac_with_public_key_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "k.pem"
    key.write_text("-----BEGIN PUBLIC KEY-----\n")
    text = f"auth: {{public_key_file: {key}, algorithms: [HS256]}}\n"
    with pytest.raises(ConfigError, match="HS"):
        load_settings(write(tmp_path, text), environ={})


def test_none_algorithm_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="none"):
        load_settings(write(tmp_path, "auth: {algorithms: [none]}\n"), environ={})


def test_credentials_never_reach_policy_input(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="header_allowlist"):
        load_settings(write(tmp_path, "header_allowlist: [Authorization]\n"), environ={})


def test_duplicate_upstream_names(tmp_path: Path) -> None:
    text = "upstreams:\n  - {name: a, url: 'http://x'}\n  - {name: a, url: 'http://y'}\n"
    with pytest.raises(ConfigError, match="duplicate upstream"):
        load_settings(write(tmp_path, text), environ={})
