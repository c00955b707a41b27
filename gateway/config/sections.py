"""The configuration's sections: a pydantic model each; unknown keys are refused."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gateway.redaction import redact_url


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Port = Annotated[int, Field(ge=0, le=65535)]
"""A TCP port; 0 asks the system for a free one when the socket is bound."""

DEFAULT_BUNDLE_PORT = 8282
BUNDLE_SERVICE_HOSTS = ("127.0.0.1", "::1")


class Listen(_Strict):
    """The public listener: the proxied API (``/v1/``), health, readiness and transparency."""

    host: str = "127.0.0.1"
    port: Port = 8080


class AdminListen(_Strict):
    host: str = "127.0.0.1"
    port: Port = 9090


class Admin(_Strict):
    """The operators' listener: ``/metrics`` and ``/readyz`` with every component's detail."""

    listen: AdminListen = AdminListen()


class BundleListen(_Strict):
    host: str = "127.0.0.1"
    port: Port | None = None
    """None: 8282 for an external OPA; with a managed OPA, a free port the gateway hands to it."""

    @field_validator("host")
    @classmethod
    def _loopback_only(cls, value: str) -> str:
        if value not in BUNDLE_SERVICE_HOSTS:
            raise ValueError(
                f"{value!r} is not allowed: the bundle service listens on loopback only "
                "(127.0.0.1 or ::1), for the gateway's own OPA"
            )
        return value


class BundleService(_Strict):
    """The loopback listener from which the gateway's OPA pulls the verified bundle."""

    listen: BundleListen = BundleListen()


class UpstreamTimeouts(_Strict):
    connect: Annotated[float, Field(gt=0)] = 2.0
    read: Annotated[float, Field(gt=0)] = 120.0
    """Seconds to the first byte of the response, and between two chunks of it."""
    total: Annotated[float, Field(gt=0)] = 600.0
    """Seconds a whole response (a stream included) may last; then it is cut."""


class Upstream(_Strict):
    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")]
    url: AnyHttpUrl
    models: list[str] = ["*"]
    timeout: UpstreamTimeouts = UpstreamTimeouts()
    api_key_env: str | None = None
    """Environment variable holding the upstream's own API key, sent as a bearer token."""
    organization: str | None = None
    """``OpenAI-Organization`` sent with the upstream's key (callers' own are never sent)."""
    project: str | None = None
    """``OpenAI-Project`` sent with the upstream's key (callers' own are never sent)."""
    chat_cap_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    """The field that carries a policy's output cap when a chat request names none."""
    max_connections: Annotated[int, Field(ge=1)] = 256
    stream_usage: bool = True
    """Ask chat and completions streams for their usage (``stream_options.include_usage``)
    when usage is counted; false for an upstream that refuses the field (its streams are
    then counted by estimate)."""


class Policy(_Strict):
    bundle: Path = Path("policies")
    pinned_digest: Annotated[str | None, Field(pattern=r"^sha256:[0-9a-f]{64}$")] = None
    opa: Literal["managed", "external"] = "managed"
    opa_url: AnyHttpUrl = AnyHttpUrl("http://127.0.0.1:8181")
    """OPA beside the gateway (the sidecar): plain http, which the lean Data API client speaks."""
    opa_binary: str = "opa"
    decision_path: Annotated[str, Field(pattern=r"^[A-Za-z0-9_]+(/[A-Za-z0-9_]+)*$")] = "agora/main"
    response_path: Annotated[str, Field(pattern=r"^[A-Za-z0-9_]+(/[A-Za-z0-9_]+)*$")] = (
        "agora/response"
    )
    """Where answers are judged (docs/policy.md); a bundle without it judges no answer."""
    timeout_ms: Annotated[int, Field(ge=1, le=60_000)] = 100
    timeout_ms_per_mib: Annotated[int, Field(ge=0, le=60_000)] = 500
    """Added to ``timeout_ms`` per MiB of request body: OPA's work grows with its input."""
    queue_allowance_ms: Annotated[int, Field(ge=0, le=60_000)] = 1000
    """Wall-clock time allowed on top of OPA's budget for the gateway's own scheduling."""
    version: Annotated[int, Field(ge=0)] = 0
    """Version number reported for a locally pinned bundle (the chain assigns its own)."""
    switch_overlap_ms: Annotated[int, Field(ge=0, le=60_000)] = 2000
    """After a switch, how long OPA's answers from the superseded version still count."""

    @field_validator("opa_url")
    @classmethod
    def _opa_beside_the_gateway(cls, url: AnyHttpUrl) -> AnyHttpUrl:
        if url.scheme != "http":
            raise ValueError("OPA runs beside the gateway (a sidecar): use http://host:port")
        return url


class Auth(_Strict):
    """How callers' tokens are verified.

    The defaults protect: a token is required, and whenever tokens can be verified
    (a key source is set) their issuer and audience are checked. With
    ``required: false`` and no key source, callers are anonymous and every
    presented token is rejected.
    """

    required: bool = True
    issuer: Annotated[str | None, Field(min_length=1)] = None
    audience: Annotated[str | None, Field(min_length=1)] = None
    algorithms: list[str] = ["RS256", "ES256"]
    jwks_url: AnyHttpUrl | None = None
    jwks_cache_s: Annotated[float, Field(gt=0)] = 300.0
    jwks_min_refresh_s: Annotated[float, Field(ge=0)] = 10.0
    jwks_timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0
    """Longest wait for one JWKS fetch; a request never waits on the identity provider longer."""
    public_key_file: Path | None = None
    secret_env: str | None = None
    leeway_s: Annotated[float, Field(ge=0, le=300)] = 30.0
    verified_cache_s: Annotated[float, Field(ge=0, le=3600)] = 60.0
    """How long a verified token is trusted without verifying it again (0: always verify)."""

    @field_validator("algorithms")
    @classmethod
    def _known_algorithms(cls, value: list[str]) -> list[str]:
        allowed = {
            "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
            "ES256", "ES384", "ES512", "EdDSA", "HS256", "HS384", "HS512",
        }  # fmt: skip
        unknown = [alg for alg in value if alg not in allowed]
        if unknown:
            raise ValueError(f"unsupported algorithm(s) {unknown}; 'none' is never accepted")
        if not value:
            raise ValueError("at least one algorithm is required")
        return value

    @field_validator("jwks_url")
    @classmethod
    def _jwks_over_https(cls, value: AnyHttpUrl | None) -> AnyHttpUrl | None:
        """Signing keys fetched in clear could be swapped on the way; loopback is the exception."""
        if value is not None and value.scheme != "https" and not _is_loopback(value.host):
            raise ValueError(
                "auth.jwks_url must be https (plain http only on loopback, for a sidecar)"
            )
        return value

    @model_validator(mode="after")
    def _one_key_source(self) -> Auth:
        sources = [
            s for s in (self.jwks_url, self.public_key_file, self.secret_env) if s is not None
        ]
        if len(sources) > 1:
            raise ValueError("set only one of jwks_url, public_key_file, secret_env")
        hmac = [a for a in self.algorithms if a.startswith("HS")]
        if self.secret_env is not None and len(hmac) != len(self.algorithms):
            raise ValueError("secret_env (a shared secret) allows only HS* algorithms")
        if self.secret_env is None and hmac:
            raise ValueError("HS* algorithms need secret_env; never HMAC with a public key")
        if self.public_key_file is not None and not self.public_key_file.is_file():
            raise ValueError(f"public_key_file {self.public_key_file} is not a readable file")
        if self.required and not sources:
            raise ValueError(
                "auth.required is true, so tokens must be verified: set one of auth.jwks_url, "
                "auth.public_key_file, auth.secret_env (or auth.required: false to admit "
                "anonymous callers only)"
            )
        missing = [
            f"auth.{name}"
            for name, value in (("issuer", self.issuer), ("audience", self.audience))
            if value is None
        ]
        if sources and missing:
            raise ValueError(
                f"set {' and '.join(missing)}: tokens are verified (a key source is set), "
                "and a token meant for another issuer or service must not pass"
            )
        return self

    @property
    def enabled(self) -> bool:
        """Whether any key source is configured (else every token is rejected)."""
        return any(s is not None for s in (self.jwks_url, self.public_key_file, self.secret_env))


def _rpc_url_is_private(url: AnyHttpUrl) -> AnyHttpUrl:
    """JSON-RPC answers decide the policy, and URLs carry keys: https, or http on loopback."""
    if url.scheme != "https" and not _is_loopback(url.host):
        raise ValueError(
            f"{redact_url(str(url))} must use https "
            "(plain http only on loopback: 127.0.0.1, ::1, localhost)"
        )
    return url


def _is_loopback(host: str | None) -> bool:
    """Whether a URL's host is this machine (plain http is acceptable only there)."""
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Governance(_Strict):
    chain: Literal["rpc"] = "rpc"
    """The gateway reads the chain over JSON-RPC; ``rpc`` is the only value (it was the
    alternative to ``embedded``, an in-process chain that has been removed)."""
    rpc_urls: list[Annotated[AnyHttpUrl, AfterValidator(_rpc_url_is_private)]] = []
    registry: Annotated[str | None, Field(pattern=r"^0x[0-9a-fA-F]{40}$")] = None
    confirmations: Annotated[int, Field(ge=0)] = 2
    poll_s: Annotated[float, Field(gt=0)] = 5.0
    bundle_dir: Path | None = None
    stale_after_s: Annotated[float, Field(gt=0)] = 300.0
    rpc_timeout_s: Annotated[float, Field(gt=0)] = 5.0
    quorum: Annotated[int | None, Field(ge=1)] = None
    """RPC nodes that must answer (and all that answer must agree); null: every one of them."""
    chain_id: Annotated[int | None, Field(ge=1)] = None
    """The chain id every RPC node must report; null: any, as long as they agree."""

    @field_validator("chain", mode="before")
    @classmethod
    def _embedded_was_removed(cls, value: object) -> object:
        if value == "embedded":
            raise ValueError(
                "embedded was removed: the gateway only reads a chain over JSON-RPC. Run a dev "
                "node such as anvil (agora quickstart does) and set governance.rpc_urls and "
                "governance.registry; see docs/governance.md"
            )
        return value

    @field_validator("quorum")
    @classmethod
    def _quorum_within_nodes(cls, value: int | None, info: ValidationInfo) -> int | None:
        urls = info.data.get("rpc_urls") or []
        if value is not None and value > max(len(urls), 1):
            raise ValueError(f"{value} is more than the {len(urls)} rpc_urls configured")
        return value

    @model_validator(mode="after")
    def _chain_is_reachable(self) -> Governance:
        if not self.rpc_urls or self.registry is None:
            raise ValueError("governance needs rpc_urls and the registry address")
        if self.bundle_dir is not None and not self.bundle_dir.is_dir():
            raise ValueError(f"bundle_dir {self.bundle_dir} is not a directory")
        return self


_HEADER_NAME = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"
_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class LogShip(_Strict):
    """Shipping the decision log to an HTTP receiver as OPA decision-log events."""

    url: Annotated[AnyHttpUrl, AfterValidator(_rpc_url_is_private)]
    """Where each batch is POSTed: a gzip'd JSON array of events, as OPA uploads them;
    https, or http on loopback (a collector in the pod): records and credentials go there."""
    batch_records: Annotated[int, Field(ge=1)] = 500
    batch_bytes: Annotated[int, Field(ge=1024)] = 1_048_576
    """Largest batch before compression; a single larger event goes alone."""
    interval_s: Annotated[float, Field(gt=0)] = 1.0
    """How often the files are read for new records when the sink has caught up."""
    timeout_s: Annotated[float, Field(gt=0)] = 10.0
    backoff_max_s: Annotated[float, Field(gt=0)] = 60.0
    """Longest wait between attempts while the receiver fails (the wait doubles from 0.5 s)."""
    headers_env: dict[
        Annotated[str, Field(pattern=_HEADER_NAME)], Annotated[str, Field(pattern=_ENV_NAME)]
    ] = {}
    """Request headers whose values are read from environment variables (credentials)."""
    labels: dict[str, str] = {}
    """Added to every event's ``labels`` (beside ``id``, ``app`` and ``version``)."""
    state_path: Path | None = None
    """Where the position of the sink is kept; null: ``<decision_log.path>.ship-state.json``."""


class DecisionLog(_Strict):
    path: Path = Path("decisions.jsonl")
    durability: Literal["record", "batch", "interval"] = "batch"
    interval_ms: Annotated[int, Field(ge=1)] = 1000
    rotate_bytes: Annotated[int, Field(ge=0)] = 0
    """Start a new file when the current one reaches this size; 0 never rotates by size."""
    rotate_s: Annotated[float, Field(ge=0)] = 0
    """Start a new file when the current one is this old; 0 never rotates by time."""
    queue_size: Annotated[int, Field(ge=1)] = 10_000
    on_full: Literal["block", "fail_closed"] = "block"
    caller_hash: Literal["keyed", "unkeyed"] = "keyed"
    """``keyed``: HMAC-SHA256 of ``sub``; ``unkeyed`` (said explicitly): plain SHA-256,
    which anyone holding the log can reverse by hashing guessed subjects."""
    caller_hash_key_env: Annotated[str | None, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] = (
        "AGORA_CALLER_KEY"
    )
    """Environment variable with the key of the caller hash; the gateway refuses to start
    if it is unset or empty."""
    include_body: bool = False
    """Store the request body (prompts) in each record; off by default for privacy."""
    group_claim: Annotated[str | None, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")] = None
    """A caller claim (say ``group`` or ``region``) recorded as the record's ``group``, so that
    deny rates can be published per group; it must not identify anyone. null: not recorded."""
    ship: LogShip | None = None
    """Send every record to an HTTP receiver too (at least once, in order); null: do not."""

    @model_validator(mode="after")
    def _caller_hash_key(self) -> DecisionLog:
        if self.caller_hash == "keyed" and self.caller_hash_key_env is None:
            raise ValueError(
                "decision_log.caller_hash_key_env is required with caller_hash: keyed (name the "
                "environment variable that holds the key), or set decision_log.caller_hash: "
                "unkeyed"
            )
        named = "caller_hash_key_env" in self.model_fields_set and self.caller_hash_key_env
        if self.caller_hash == "unkeyed" and named:
            raise ValueError(
                "decision_log.caller_hash_key_env is only read with caller_hash: keyed"
            )
        return self


class Limits(_Strict):
    max_body_bytes: Annotated[int, Field(ge=1)] = 1_048_576
    max_json_depth: Annotated[int, Field(ge=2, le=512)] = 64
    """Deepest nesting of a JSON body; deeper bodies are refused before they are parsed."""
    max_concurrent: Annotated[int, Field(ge=1)] = 256
    """Requests under ``/v1/`` handled at once; more wait in the queue, or are shed (503)."""
    max_queued: Annotated[int, Field(ge=0)] = 64
    """Requests waiting for a slot; beyond it a request is shed at once."""
    queue_timeout_ms: Annotated[int, Field(ge=1)] = 1000
    """Longest wait in the queue before a request is shed."""
    max_header_bytes: Annotated[int, Field(ge=1024)] = 65_536
    """Request line and headers together; larger ones get 431."""
    header_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    """From connection (or a request's first byte) to the end of its headers; then closed."""
    body_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    """For the whole request body, from when it is read (408), or after the answer was sent."""
    write_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    """A client that takes none of its answer's bytes this long (send buffer full) is cut."""
    keep_alive_s: Annotated[int, Field(ge=1)] = 5
    """How long an idle keep-alive connection is kept open."""
    large_body_bytes: Annotated[int, Field(ge=0)] = 262_144
    """Bodies larger than this take turns to be parsed, judged and logged."""
    max_concurrent_large: Annotated[int, Field(ge=1)] = 1
    """Requests with large bodies judged at once; the others wait up to ``queue_timeout_ms``."""


class Shadow(_Strict):
    """Open proposals' bundles judged beside the one in force, on a sample of live traffic."""

    enabled: bool = True
    sample_rate: Annotated[float, Field(ge=0, le=1)] = 0.1
    """The share of decided requests also judged by each proposal (0 to 1)."""
    queue_size: Annotated[int, Field(ge=1, le=100_000)] = 256
    """Sampled requests waiting for shadow judging; beyond it they are dropped (and counted)."""
    max_bundles: Annotated[int, Field(ge=1, le=16)] = 4
    """Bundles judged in shadow at once (each is an OPA process of its own)."""
    timeout_ms: Annotated[int, Field(ge=1, le=60_000)] = 1000
    examples: Annotated[int, Field(ge=0, le=100)] = 5
    """Redacted example inputs kept per proposal among the requests it would decide otherwise."""


class DryRun(_Strict):
    """The page's "what would the policy say" form: public, so bounded in size and rate."""

    enabled: bool = True
    max_bytes: Annotated[int, Field(ge=256, le=1_048_576)] = 16_384
    per_minute: Annotated[int, Field(ge=1, le=10_000)] = 30
    """Questions answered per minute, for every visitor together."""


class Community(_Strict):
    """The public community page (``/community``) and its JSON under ``/transparency/...``."""

    enabled: bool = True
    governor: Annotated[str | None, Field(pattern=r"^0x[0-9a-fA-F]{40}$")] = None
    """The AgoraGovernor whose proposals are shown and shadowed; needs ``governance``."""
    from_block: Annotated[int, Field(ge=0)] = 0
    """The block to search proposals and ratifications from (the deployment's block)."""
    poll_s: Annotated[float, Field(gt=0)] = 10.0
    shadow: Shadow = Shadow()
    dry_run: DryRun = DryRun()


class Response(_Strict):
    """Response policy: how answers are judged at ``policy.response_path`` (docs/policy.md)."""

    checkpoint_chars: Annotated[int, Field(ge=1, le=1_000_000)] = 200
    """A streamed answer is judged each time this many characters of new text have arrived."""
    holdback: bool = True
    """Hold text no checkpoint has judged yet (at most about ``checkpoint_chars``); false (or 0):
    forward at once and judge after, the log then counts what went out unjudged."""
    overlap_chars: Annotated[int, Field(ge=0, le=1_000_000)] = 64
    """Holdback: a checkpoint before the end keeps back its last this many characters, judged
    again at the next one, so that a term this long straddling a checkpoint is never partly
    sent."""
    deny_status: Annotated[int, Field(ge=400, le=599)] = 403
    """The status of a whole (non-streamed) answer that policy denies."""
    max_body_bytes: Annotated[int, Field(ge=1)] = 8_388_608
    """A whole answer is read before it is judged, up to this size; a larger one fails closed."""


EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class LogAnchoring(_Strict):
    """Where the log's signed checkpoints are anchored on chain (the ``LogAnchor`` contract)."""

    contract: Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]{40}$")]
    """The LogAnchor address (``agora gov anchor-deploy``)."""
    rpc_url: Annotated[str, Field(pattern=r"^https?://")]
    """The JSON-RPC endpoint the anchoring transactions are sent to."""
    key_env: EnvName = "AGORA_ANCHOR_PRIVATE_KEY"
    """Environment variable holding the sending account's private key (the anchorer)."""
    chain_id: Annotated[int | None, Field(ge=1)] = None
    """Refuse a node on another chain; None: take the node's."""


class Transparency(_Strict):
    """The decision log as a transparency log: the key that signs checkpoints, and witnesses."""

    key_file: Path | None = None
    """File holding the log's signer key (``PRIVATE+KEY+<name>+...``, ``agora log keygen``)."""
    key_env: EnvName | None = None
    """Or: environment variable holding that key. Neither: checkpoints are not signed."""
    origin: Annotated[
        str | None, Field(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f]+$")
    ] = None
    """The checkpoints' origin line, naming this log; None: the log key's name. Logs signed
    with one key (replicas) each need their own."""
    checkpoint_every: Annotated[int, Field(ge=1)] = 1000
    """Sign a checkpoint once this many records were added since the last one."""
    checkpoint_interval_s: Annotated[float, Field(gt=0)] = 60.0
    """Or once records wait this long for a checkpoint."""
    witnesses: list[str] = Field(default_factory=list)
    """Verifier keys (type 0x04, ``agora log keygen --witness``) whose cosignatures are taken."""
    anchor: LogAnchoring | None = None
    """Anchor the latest signed checkpoint on chain; None: do not (needs a log key)."""
    anchor_every_s: Annotated[float, Field(gt=0)] = 3600.0
    """How often the latest checkpoint is anchored, when the log grew since the last anchor."""

    @field_validator("witnesses")
    @classmethod
    def _witness_keys(cls, value: list[str]) -> list[str]:
        from gateway.transparency.note import COSIGNATURE_V1, NoteError, Verifier

        for index, vkey in enumerate(value):
            try:
                kind = Verifier.parse(vkey).kind
            except NoteError as exc:
                raise ValueError(f"witnesses[{index}]: {exc}") from None
            if kind != COSIGNATURE_V1:
                raise ValueError(f"witnesses[{index}]: not a cosignature key (type 0x04)")
        return value

    @model_validator(mode="after")
    def _one_key_source(self) -> Transparency:
        if self.key_file is not None and self.key_env is not None:
            raise ValueError("set transparency.key_file or transparency.key_env, not both")
        if self.anchor is not None and self.key_file is None and self.key_env is None:
            raise ValueError(
                "transparency.anchor anchors signed checkpoints: set transparency.key_file "
                "or transparency.key_env"
            )
        return self


class Usage(_Strict):
    """Counting what callers use, for policy's budgets (``input.usage``, docs/policy.md)."""

    enabled: bool = True
    """false: nothing is counted and ``input.usage`` is absent, so no budget is ever spent."""
    redis_url: Annotated[str | None, Field(pattern=r"^(redis|rediss|unix)://")] = None
    """Redis (or Valkey) shared by every replica; null: counters in this process only."""
    on_unavailable: Literal["fail_closed", "local"] = "fail_closed"
    """Redis unreachable: refuse with 503 (``fail_closed``) or count in this process (``local``)."""
    timeout_ms: Annotated[int, Field(ge=1, le=10_000)] = 500
    """Longest wait for Redis on a request (a busy event loop's delay included); then it
    counts as unavailable."""
    windows: Annotated[dict[str, Annotated[int, Field(ge=1)]], Field(min_length=1)] = {
        "minute": 60,
        "day": 86_400,
    }
    """Window names (as policy reads them) and their lengths in seconds, aligned on the epoch."""
    groups_claim: Annotated[str, Field(min_length=1)] = "groups"
    """The token claim whose groups are counted (the policy's ``groups_claim``)."""
    max_groups: Annotated[int, Field(ge=0, le=256)] = 16
    """Groups of one caller counted at most (the first ones of the claim)."""
    key_prefix: Annotated[str, Field(min_length=1)] = "agora:usage:"
    """Prefix of the gateway's keys in Redis."""

    @field_validator("windows")
    @classmethod
    def _window_names(cls, value: dict[str, int]) -> dict[str, int]:
        bad = [name for name in value if not name.isidentifier()]
        if bad:
            raise ValueError(f"window names must be identifiers (letters, digits, _): {bad}")
        return value
