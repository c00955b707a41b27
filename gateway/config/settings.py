"""The whole configuration: a YAML file, overridden by ``AGORA__...`` environment variables.

Every key is validated at start. Unknown keys are errors, and every error names
the key it is about (``policy.timeout_ms: ...``), so that a typo never silently
falls back to a default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    AnyHttpUrl,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from gateway.config.sections import (
    DEFAULT_BUNDLE_PORT,
    Admin,
    Auth,
    BundleService,
    Community,
    DecisionLog,
    Governance,
    Limits,
    Listen,
    Policy,
    Response,
    Transparency,
    Upstream,
    Usage,
    _Strict,
)
from gateway.exceptions import ConfigError

ENV_PREFIX = "AGORA__"
ENV_SEPARATOR = "__"


class Settings(_Strict):
    listen: Listen = Listen()
    upstreams: Annotated[
        list[Upstream],
        Field(
            min_length=1,
            default_factory=lambda: [
                Upstream(name="local", url=AnyHttpUrl("http://127.0.0.1:9000"))
            ],
        ),
    ]
    policy: Policy = Policy()
    auth: Annotated[Auth, Field(default_factory=dict, validate_default=True)]
    """No default that passes: a gateway without ``auth`` must say how tokens are verified."""
    governance: Governance | None = None
    decision_log: DecisionLog = DecisionLog()
    limits: Limits = Limits()
    admin: Admin = Admin()
    bundle_service: BundleService = BundleService()
    community: Community = Community()
    response: Response = Response()
    transparency: Transparency = Transparency()
    usage: Usage = Usage()
    header_allowlist: Annotated[
        list[str],
        Field(
            default_factory=lambda: [
                "content-type", "user-agent", "x-request-id", "openai-organization",
                "openai-project",
            ]
        ),
    ]  # fmt: skip
    """Request headers (lower-case) copied into the policy input; never credentials."""

    @field_validator("upstreams")
    @classmethod
    def _unique_names(cls, value: list[Upstream]) -> list[Upstream]:
        names = [u.name for u in value]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate upstream name(s) {duplicates}")
        return value

    @field_validator("header_allowlist")
    @classmethod
    def _no_credentials(cls, value: list[str]) -> list[str]:
        forbidden = {"authorization", "cookie", "proxy-authorization", "x-api-key", "api-key"}
        bad = [h for h in value if h.lower() in forbidden]
        if bad:
            raise ValueError(f"credential headers may not reach policy input: {bad}")
        return [h.lower() for h in value]

    @model_validator(mode="after")
    def _distinct_listeners(self) -> Settings:
        """Each listener needs a port of its own: requests are told apart by the port they hit."""
        if self.bundle_service.listen.port == 0 and self.policy.opa == "external":
            raise ValueError(
                "bundle_service.listen.port: 0 (a free port) works only with policy.opa: "
                "managed; an external OPA must be told a fixed port"
            )
        seen: dict[int, str] = {}
        for key, port in (
            ("listen.port", self.listen.port),
            ("admin.listen.port", self.admin.listen.port),
            ("bundle_service.listen.port", self.bundle_port),
        ):
            if port == 0:
                continue
            if port in seen:
                raise ValueError(f"{key}: {port} is also {seen[port]}; each listener needs its own")
            seen[port] = key
        return self

    @model_validator(mode="after")
    def _governor_needs_a_chain(self) -> Settings:
        if self.community.governor is not None and self.governance is None:
            raise ValueError("community.governor: proposals are read through governance.rpc_urls")
        return self

    @property
    def bundle_port(self) -> int:
        """The bundle service's port: as configured, else 0 (free) for a managed OPA, else 8282."""
        port = self.bundle_service.listen.port
        if port is not None:
            return port
        return 0 if self.policy.opa == "managed" else DEFAULT_BUNDLE_PORT

    @property
    def bundle_service_url(self) -> str:
        """Where OPA pulls bundles from (what ``agora opa-config`` writes into its config)."""
        host = self.bundle_service.listen.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.bundle_port}"


def load_settings(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read, override and validate the configuration; raise ConfigError naming the key."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of keys")
        raw = loaded or {}
    apply_env_overrides(raw, os.environ if environ is None else environ)
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from exc


def apply_env_overrides(raw: dict[str, Any], environ: Mapping[str, str]) -> None:
    """Set ``AGORA__A__B=value`` as ``raw[a][b]``; the value is parsed as a YAML scalar or list.

    A list index is a number: ``AGORA__UPSTREAMS__0__URL``.
    """
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX):
            continue
        keys = [k.lower() for k in name[len(ENV_PREFIX) :].split(ENV_SEPARATOR)]
        if not all(keys):
            raise ConfigError(f"{name}: empty key level in environment override")
        try:
            value = yaml.safe_load(environ[name])
        except yaml.YAMLError as exc:
            raise ConfigError(f"{name}: value is not valid YAML: {exc}") from exc
        node: Any = raw
        for depth, key in enumerate(keys[:-1]):
            node = _child(node, key, name, next_is_index=keys[depth + 1].isdigit())
        _assign(node, keys[-1], value, name)


def _child(node: Any, key: str, env_name: str, next_is_index: bool) -> Any:
    if isinstance(node, list):
        index = _index(node, key, env_name)
        if node[index] is None:
            node[index] = [] if next_is_index else {}
        return node[index]
    if not isinstance(node, dict):
        raise ConfigError(f"{env_name}: {key!r} is not inside a mapping")
    if node.get(key) is None:
        node[key] = [] if next_is_index else {}
    return node[key]


def _assign(node: Any, key: str, value: Any, env_name: str) -> None:
    if isinstance(node, list):
        node[_index(node, key, env_name)] = value
    elif isinstance(node, dict):
        node[key] = value
    else:
        raise ConfigError(f"{env_name}: {key!r} is not inside a mapping")


def _index(node: list[Any], key: str, env_name: str) -> int:
    if not key.isdigit():
        raise ConfigError(f"{env_name}: {key!r} must be a list index")
    index = int(key)
    if index > len(node):
        raise ConfigError(f"{env_name}: list index {index} skips past the end ({len(node)})")
    if index == len(node):
        node.append(None)
    return index


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"{key}: {message}")
    return "invalid configuration:\n  " + "\n  ".join(lines)
