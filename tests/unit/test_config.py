from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import DecisionLog, load_settings
from gateway.decisionlog.writer import DecisionLogWriter
from gateway.exceptions import ConfigError

AUTH = "auth: {issuer: https://issuer.test, audience: agora, jwks_url: https://issuer.test/jwks}\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agora.yaml"
    path.write_text(text)
    return path


def test_defaults_are_valid_once_auth_says_how_tokens_are_verified(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, AUTH), environ={})
    assert settings.policy.decision_path == "agora/main"
    assert settings.upstreams[0].models == ["*"]
    assert settings.auth.required is True
    assert settings.auth.jwks_timeout_s == 5.0
    assert settings.decision_log.caller_hash == "keyed"
    assert settings.decision_log.caller_hash_key_env == "AGORA_CALLER_KEY"


def test_without_auth_the_gateway_does_not_start() -> None:
    with pytest.raises(ConfigError, match=r"auth: .*auth\.jwks_url, auth\.public_key_file"):
        load_settings(None, environ={})


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("auth: {audience: agora, jwks_url: https://i.test/jwks}\n", r"set auth\.issuer:"),
        ("auth: {issuer: https://i.test, jwks_url: https://i.test/jwks}\n", r"set auth\.audience:"),
        (
            "auth: {required: false, secret_env: S, algorithms: [HS256]}\n",
            "set auth.issuer and auth.audience:",
        ),
        ("auth: {issuer: https://i.test, audience: a}\n", r"set one of auth\.jwks_url"),
        ("auth: {issuer: '', audience: a, jwks_url: https://i.test/j}\n", r"auth\.issuer: "),
    ],
)
def test_verified_tokens_need_issuer_audience_and_a_key(
    tmp_path: Path, text: str, named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        load_settings(write(tmp_path, text), environ={})


def test_anonymous_only_gateway_needs_no_key_source(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "auth: {required: false}\n"), environ={})
    assert settings.auth.enabled is False


@pytest.mark.parametrize(
    ("url", "accepted"),
    [
        ("https://issuer.test/jwks", True),
        ("http://127.0.0.1:8000/jwks", True),
        ("http://127.9.9.9:8000/jwks", True),
        ("http://localhost:8000/jwks", True),
        ("http://[::1]:8000/jwks", True),
        ("http://issuer.test/jwks", False),
        ("http://10.0.0.1/jwks", False),
        ("http://127.0.0.1.attacker.test/jwks", False),
    ],
)
def test_jwks_only_over_https_or_loopback(tmp_path: Path, url: str, accepted: bool) -> None:
    path = write(tmp_path, f"auth: {{issuer: https://i.test, audience: a, jwks_url: '{url}'}}\n")
    if accepted:
        assert str(load_settings(path, environ={}).auth.jwks_url) == url
    else:
        with pytest.raises(ConfigError, match=r"auth\.jwks_url: .*https"):
            load_settings(path, environ={})


@pytest.mark.parametrize(
    ("key", "value"), [("jwks_timeout_s", "0"), ("jwks_timeout_s", "61"), ("leeway_s", "301")]
)
def test_auth_bounds(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=rf"auth\.{key}"):
        load_settings(None, environ={f"AGORA__AUTH__{key.upper()}": value})


def test_keyed_caller_hash_needs_a_key_variable(tmp_path: Path) -> None:
    text = AUTH + "decision_log: {caller_hash_key_env: null}\n"
    with pytest.raises(ConfigError, match=r"decision_log: .*caller_hash_key_env is required"):
        load_settings(write(tmp_path, text), environ={})


def test_unkeyed_caller_hash_is_said_explicitly(tmp_path: Path) -> None:
    settings = load_settings(
        write(tmp_path, AUTH + "decision_log: {caller_hash: unkeyed}\n"), environ={}
    )
    assert settings.decision_log.caller_hash == "unkeyed"
    text = AUTH + "decision_log: {caller_hash: unkeyed, caller_hash_key_env: K}\n"
    with pytest.raises(ConfigError, match="caller_hash_key_env is only read with caller_hash"):
        load_settings(write(tmp_path, text), environ={})
    with pytest.raises(ConfigError, match=r"decision_log\.caller_hash: Input should be"):
        load_settings(write(tmp_path, AUTH + "decision_log: {caller_hash: sha256}\n"), environ={})


def test_the_gateway_refuses_to_start_without_the_caller_hash_key(tmp_path: Path) -> None:
    keyed = DecisionLog(path=tmp_path / "d.jsonl", caller_hash_key_env="AGORA_TEST_KEY")
    with pytest.raises(ConfigError, match=r"caller_hash_key_env: .*AGORA_TEST_KEY is unset"):
        DecisionLogWriter(keyed, environ={})
    with pytest.raises(ConfigError, match="AGORA_TEST_KEY"):
        DecisionLogWriter(keyed, environ={"AGORA_TEST_KEY": ""})
    DecisionLogWriter(keyed, environ={"AGORA_TEST_KEY": "k" * 32})
    DecisionLogWriter(DecisionLog(path=tmp_path / "d.jsonl", caller_hash="unkeyed"), environ={})


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


def test_opa_is_reached_over_plain_http_beside_the_gateway(tmp_path: Path) -> None:
    path = tmp_path / "agora.yaml"
    path.write_text(
        "auth: {required: false}\npolicy: {opa: external, opa_url: 'https://opa:8181'}\n"
    )
    with pytest.raises(ConfigError, match=r"policy\.opa_url: .*use http://host:port"):
        load_settings(path, {})


def test_response_policy_defaults_and_holdback_zero(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, AUTH), environ={})
    assert settings.policy.response_path == "agora/response"
    assert (settings.response.checkpoint_chars, settings.response.holdback) == (200, True)
    assert (settings.response.deny_status, settings.response.max_body_bytes) == (403, 8_388_608)
    off = load_settings(write(tmp_path, AUTH + "response: {holdback: 0}\n"), environ={})
    assert off.response.holdback is False
    env = {"AGORA__RESPONSE__CHECKPOINT_CHARS": "64"}
    assert load_settings(write(tmp_path, AUTH), environ=env).response.checkpoint_chars == 64


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("response: {checkpoint_chars: 0}\n", r"response\.checkpoint_chars"),
        ("response: {deny_status: 200}\n", r"response\.deny_status"),
        ("response: {window: 5}\n", r"response\.window: unknown key"),
        ("policy: {response_path: data.agora.response}\n", r"policy\.response_path"),
    ],
)
def test_response_policy_errors_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        load_settings(write(tmp_path, AUTH + text), environ={})


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("usage: {redis_url: 'http://redis:6379'}\n", r"usage\.redis_url"),
        ("usage: {on_unavailable: unlimited}\n", r"usage\.on_unavailable"),
        ("usage: {windows: {'a minute': 60}}\n", r"usage\.windows: .*identifiers"),
        ("usage: {windows: {}}\n", r"usage\.windows"),
        ("usage: {redis: x}\n", r"usage\.redis: unknown key"),
    ],
)
def test_usage_mistakes_are_named(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_settings(write(tmp_path, AUTH + text), environ={})


def test_the_redis_url_comes_from_the_environment(tmp_path: Path) -> None:
    environ = {"AGORA__USAGE__REDIS_URL": "rediss://:secret@redis.example:6380/0"}
    settings = load_settings(write(tmp_path, AUTH), environ=environ)
    assert settings.usage.redis_url == "rediss://:secret@redis.example:6380/0"
    assert settings.usage.on_unavailable == "fail_closed"
    assert settings.usage.windows == {"minute": 60, "day": 86_400}
