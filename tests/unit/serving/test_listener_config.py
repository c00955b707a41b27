"""Configuration of the three listeners and of the limits that bound the gateway's resources."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import DEFAULT_BUNDLE_PORT, Settings, load_settings
from gateway.exceptions import ConfigError


def settings_from(tmp_path: Path, text: str, **environ: str) -> Settings:
    path = tmp_path / "agora.yaml"
    path.write_text("auth: {required: false}\n" + text)
    return load_settings(path, environ=environ)


def test_defaults(tmp_path: Path) -> None:
    settings = settings_from(tmp_path, "")
    assert (settings.listen.host, settings.listen.port) == ("127.0.0.1", 8080)
    assert (settings.admin.listen.host, settings.admin.listen.port) == ("127.0.0.1", 9090)
    assert settings.bundle_service.listen.host == "127.0.0.1"
    assert settings.bundle_port == 0, "a managed OPA is handed a free port"
    limits = settings.limits
    assert (limits.max_concurrent, limits.max_queued, limits.queue_timeout_ms) == (256, 64, 1000)
    assert (limits.header_timeout_s, limits.body_timeout_s, limits.keep_alive_s) == (10, 30, 5)
    assert limits.max_header_bytes == 65536


def test_an_external_opa_pulls_from_a_fixed_port(tmp_path: Path) -> None:
    settings = settings_from(tmp_path, "policy: {opa: external}\n")
    assert settings.bundle_port == DEFAULT_BUNDLE_PORT == 8282
    assert settings.bundle_service_url == "http://127.0.0.1:8282"


def test_admin_port_keeps_its_default_when_only_the_host_is_set(tmp_path: Path) -> None:
    settings = settings_from(tmp_path, "admin: {listen: {host: 0.0.0.0}}\n")
    assert settings.admin.listen.port == 9090


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.7", "127.0.0.6", "localhost"])
def test_the_bundle_service_listens_on_loopback_only(tmp_path: Path, host: str) -> None:
    with pytest.raises(ConfigError, match=r"bundle_service\.listen\.host: .*loopback only"):
        settings_from(tmp_path, f"bundle_service: {{listen: {{host: '{host}'}}}}\n")


def test_the_bundle_service_may_listen_on_ipv6_loopback(tmp_path: Path) -> None:
    text = "policy: {opa: external}\nbundle_service: {listen: {host: '::1', port: 8383}}\n"
    assert settings_from(tmp_path, text).bundle_service_url == "http://[::1]:8383"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("admin: {listen: {port: 8080}}\n", r"admin\.listen\.port: 8080 is also listen\.port"),
        (
            "bundle_service: {listen: {port: 9090}}\n",
            r"bundle_service\.listen\.port: 9090 is also admin\.listen\.port",
        ),
        (
            "policy: {opa: external}\nadmin: {listen: {host: 10.0.0.5, port: 8282}}\n",
            r"bundle_service\.listen\.port: 8282 is also admin\.listen\.port",
        ),
    ],
)
def test_each_listener_needs_its_own_port(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings_from(tmp_path, text)


def test_free_ports_never_collide_in_validation(tmp_path: Path) -> None:
    text = "listen: {port: 0}\nadmin: {listen: {port: 0}}\nbundle_service: {listen: {port: 0}}\n"
    assert settings_from(tmp_path, text).bundle_port == 0


def test_an_external_opa_cannot_be_given_a_free_bundle_port(tmp_path: Path) -> None:
    text = "policy: {opa: external}\nbundle_service: {listen: {port: 0}}\n"
    with pytest.raises(ConfigError, match=r"bundle_service\.listen\.port: 0 .*managed"):
        settings_from(tmp_path, text)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("max_concurrent", "0"),
        ("max_queued", "-1"),
        ("queue_timeout_ms", "0"),
        ("header_timeout_s", "0"),
        ("body_timeout_s", "-1"),
        ("keep_alive_s", "0"),
        ("max_header_bytes", "100"),
    ],
)
def test_limits_are_validated_by_key(tmp_path: Path, key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=rf"limits\.{key}"):
        settings_from(tmp_path, f"limits: {{{key}: {value}}}\n")


def test_unknown_keys_of_the_new_sections_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"admin\.port: unknown key"):
        settings_from(tmp_path, "admin: {port: 9091}\n")
    with pytest.raises(ConfigError, match=r"bundle_service\.listen\.hots: unknown key"):
        settings_from(tmp_path, "bundle_service: {listen: {hots: 127.0.0.1}}\n")


def test_environment_overrides_reach_the_new_keys(tmp_path: Path) -> None:
    settings = settings_from(
        tmp_path,
        "",
        AGORA__ADMIN__LISTEN__PORT="9191",
        AGORA__LIMITS__MAX_CONCURRENT="8",
        AGORA__BUNDLE_SERVICE__LISTEN__PORT="8383",
    )
    assert settings.admin.listen.port == 9191
    assert settings.limits.max_concurrent == 8
    assert settings.bundle_port == 8383
