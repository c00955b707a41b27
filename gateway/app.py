"""The Starlette application: wiring, and the request path read top to bottom.

Request path (docs/architecture.md): bound and parse the request, authenticate
the caller, route by model, ask OPA, then refuse (403/503) or forward and
stream the upstream's answer; every outcome is recorded and counted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.auth import Authenticator
from gateway.bundle import load_bundle
from gateway.config import Settings
from gateway.decisionlog.errors import DecisionLogError
from gateway.decisions import DecisionRecorder, Outcome
from gateway.exceptions import (
    AgoraError,
    AuthError,
    PolicyUnavailable,
    UpstreamError,
    UpstreamTimeout,
)
from gateway.governance import EmbeddedGovernance, start_watcher
from gateway.lifecycle import State

if TYPE_CHECKING:
    from gateway.ratification import RatificationWatcher
from gateway.metrics import CONTENT_TYPE, GatewayMetrics
from gateway.opa import ManagedOpa
from gateway.pinning import BUNDLE_RESOURCE, PolicyStore, bundle_endpoint
from gateway.policy import PolicyEngine, RequestFacts
from gateway.proxy import ProxyResponse, StreamOutcome, UpstreamPool
from gateway.responses import error_response
from gateway.routing import RouteTable, classify_api, model_of

logger = logging.getLogger("agora.gateway")

DECISION_ID = "X-Agora-Decision-Id"
POLICY_VERSION = "X-Agora-Policy-Version"
POLICY_DIGEST = "X-Agora-Policy-Digest"

_JSON_APIS = frozenset({"chat.completions", "completions", "embeddings", "responses"})
_MODEL_REQUIRED = frozenset({"chat.completions", "completions", "embeddings"})


class _Rejected(Exception):
    """A request refused before policy; carries the OpenAI-style error to return."""

    def __init__(self, status: int, message: str, error_type: str, code: str):
        super().__init__(message)
        self.status, self.message, self.error_type, self.code = status, message, error_type, code


@dataclass
class Gateway:
    """The runtime components of one gateway process."""

    settings: Settings
    store: PolicyStore
    engine: PolicyEngine
    authenticator: Authenticator
    pool: UpstreamPool
    routes: RouteTable
    metrics: GatewayMetrics
    recorder: DecisionRecorder
    opa: ManagedOpa | None
    http: aiohttp.ClientSession
    watcher: RatificationWatcher | None = None
    embedded: EmbeddedGovernance | None = None


def create_app(settings: Settings) -> Starlette:
    """The gateway as an ASGI app; components start and stop with its lifespan."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        gateway = await _start(settings)
        app.state.gateway = gateway
        app.state.policy_store = gateway.store
        try:
            yield
        finally:
            await _stop(gateway)

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
            Route("/transparency", transparency),
            Route(BUNDLE_RESOURCE, bundle_endpoint),
            Route("/v1/{path:path}", proxy, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
        ],
        lifespan=lifespan,
    )


async def _start(settings: Settings) -> Gateway:
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
    store = PolicyStore()
    metrics_ = GatewayMetrics()
    opa: ManagedOpa | None = None
    opa_url = str(settings.policy.opa_url)
    if settings.policy.opa == "managed":
        opa = ManagedOpa(settings.policy.opa_binary, f"http://127.0.0.1:{settings.listen.port}")
        opa_url = opa.url
    gateway = Gateway(
        settings=settings,
        store=store,
        engine=PolicyEngine(
            opa_url, settings.policy.decision_path, settings.policy.timeout_ms, store
        ),
        authenticator=Authenticator(settings.auth, http),
        pool=UpstreamPool(settings.upstreams, os.environ),
        routes=RouteTable(tuple(settings.upstreams)),
        metrics=metrics_,
        recorder=DecisionRecorder(settings.decision_log, metrics_),
        opa=opa,
        http=http,
    )
    await gateway.pool.start()
    await gateway.engine.start()
    await gateway.recorder.start()
    if settings.governance is None:
        _activate_local_bundle(gateway)
    else:
        gateway.watcher, gateway.embedded = await start_watcher(settings, store, http, metrics_)
    if opa is not None:
        await opa.start()
    return gateway


def _activate_local_bundle(gateway: Gateway) -> None:
    """Pinning without a chain: the configured bundle, if its digest matches the pin."""
    policy = gateway.settings.policy
    try:
        version = gateway.store.activate(
            load_bundle(policy.bundle), policy.version, policy.pinned_digest
        )
    except AgoraError as exc:
        logger.error("policy bundle not activated: %s", exc)
        return
    gateway.metrics.policy_version.set(version.version)
    gateway.metrics.policy_info.info({"digest": version.digest, "source": version.source})
    logger.info(
        "policy version %s active: %s (%s)", version.version, version.digest, version.source
    )


async def _stop(gateway: Gateway) -> None:
    if gateway.watcher is not None:
        await gateway.watcher.stop()
    if gateway.opa is not None:
        await gateway.opa.stop()
    await gateway.recorder.stop()
    await gateway.engine.stop()
    await gateway.pool.stop()
    await gateway.http.close()


# --- the gateway's own endpoints ---------------------------------------------------------


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "alive"})


async def readyz(request: Request) -> Response:
    """Ready only when a verified version is active and OPA enforces a verified revision."""
    gateway: Gateway = request.app.state.gateway
    active = gateway.store.active
    detail: dict[str, Any] = {
        "policy": None
        if active is None
        else {
            "version": active.version,
            "digest": active.digest,
            "source": active.source,
            "ratified_block": active.ratified_block,
        },
        "components": {
            component.name: {"state": component.state.value, "detail": component.detail}
            for component in (gateway.recorder, gateway.opa, gateway.watcher)
            if component is not None
        },
    }
    if gateway.watcher is not None:
        detail["stale"] = gateway.watcher.stale
    reasons = []
    if active is None:
        reasons.append("no verified policy version is active")
    try:
        revision = await gateway.engine.revision()
    except PolicyUnavailable as exc:
        reasons.append(str(exc))
    else:
        enforced = gateway.store.lookup(revision)
        detail["opa_enforces"] = None if enforced is None else enforced.version
        if enforced is None:
            reasons.append(f"OPA has not activated a verified bundle (revision {revision!r})")
    if gateway.recorder.state is State.ERROR:
        reasons.append("the decision log is failing")
    detail["ready"] = not reasons
    detail["reasons"] = reasons
    return JSONResponse(detail, status_code=200 if not reasons else 503)


async def transparency(request: Request) -> Response:
    """The published figures: what is in force, and what was decided under each version."""
    gateway: Gateway = request.app.state.gateway
    active = gateway.store.active
    writer = gateway.recorder.writer
    return JSONResponse(
        {
            "policy": None
            if active is None
            else {
                "version": active.version,
                "digest": active.digest,
                "ratified_block": active.ratified_block,
                "activated_at": active.activated_at,
            },
            "log": gateway.recorder.counts.snapshot(writer.count, writer.head_hash),
            "log_verified_at_start": gateway.recorder.counts.verified_at_start,
            "queue_depth": writer.queue_depth,
        },
        headers={"Cache-Control": "no-store"},
    )


async def metrics(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    return Response(gateway.metrics.exposition(), media_type=CONTENT_TYPE)


# --- the request path ----------------------------------------------------------------------


async def proxy(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    started = time.perf_counter_ns()
    decision_id = str(uuid.uuid4())
    active = gateway.store.active
    headers = _agora_headers(
        decision_id, active.version if active else None, active.digest if active else None
    )

    # 1. Parse and bound the request.
    path = request.url.path
    api = classify_api(path)
    try:
        raw_body = await _read_bounded(request, gateway.settings.limits.max_body_bytes)
        body = _parse_body(request, api, raw_body)
        model = model_of(path, body)
        if api in _MODEL_REQUIRED and request.method == "POST" and model is None:
            raise _Rejected(
                400, "you must provide a model parameter", "invalid_request_error", "missing_model"
            )
        upstream = gateway.routes.route(model)
        if upstream is None:
            raise _Rejected(
                404,
                f"The model `{model}` does not exist or is not served through this gateway",
                "invalid_request_error",
                "model_not_found",
            )
    except _Rejected as rejected:
        return _reject(gateway, rejected, headers)

    # 2. Authenticate the caller.
    try:
        caller = await gateway.authenticator.authenticate(request.headers.get("authorization"))
    except AuthError as exc:
        headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
        return _reject(
            gateway, _Rejected(401, str(exc), "authentication_error", "invalid_token"), headers
        )
    auth_done = time.perf_counter_ns()

    # 3. Ask policy.
    facts = RequestFacts(
        api=api,
        model=model,
        stream=isinstance(body, dict) and body.get("stream") is True,
        body=body if isinstance(body, dict) else {},
        method=request.method,
        path=path,
        query=dict(request.query_params),
        headers={
            k: v for k, v in request.headers.items() if k in gateway.settings.header_allowlist
        },
        upstream=upstream.name,
    )
    outcome = Outcome(decision_id=decision_id, facts=facts, caller=caller, started_ns=started)
    outcome.auth_ns = auth_done - started
    try:
        decision, input_document = await gateway.engine.decide(facts, caller)
    except PolicyUnavailable as exc:
        logger.warning("failing closed: %s", exc)
        outcome.policy_ns = time.perf_counter_ns() - auth_done
        await gateway.recorder.refused(outcome, 503, [str(exc)])
        return error_response(
            503, "policy decision unavailable; the request was not forwarded",
            "policy_unavailable", "policy_unavailable", headers, decision_id=decision_id,
        )  # fmt: skip
    outcome.policy_ns = time.perf_counter_ns() - auth_done
    outcome.decision = decision
    outcome.input_document = input_document
    headers.update(_agora_headers(decision_id, decision.version.version, decision.version.digest))

    # 4. Refuse what policy denies.
    if not decision.allow:
        await gateway.recorder.refused(outcome, 403, decision.reasons)
        return error_response(
            403,
            "Request denied by policy: " + "; ".join(decision.reasons),
            "policy_denied",
            "policy_denied",
            headers,
            decision_id=decision_id,
            policy_version=decision.version.version,
            reasons=decision.reasons,
        )

    # 5. Forward what it allows, once its decision is in the log.
    try:
        await gateway.recorder.admit(outcome)
    except DecisionLogError as exc:
        await gateway.recorder.refused(outcome, 503, [str(exc)])
        return error_response(
            503, "the decision log cannot take more records; the request was not forwarded",
            "decision_log_unavailable", "decision_log_unavailable", headers,
        )  # fmt: skip
    if api == "models" and path.rstrip("/") == "/v1/models" and request.method == "GET":
        listing = await _list_models(gateway)
        await gateway.recorder.finished(outcome, 200, [])
        return JSONResponse(listing, headers=headers)
    forward_started = time.perf_counter_ns()
    try:
        upstream_response = await gateway.pool.open(
            upstream, request.method, _path_and_query(request), request.headers.items(), raw_body
        )
    except UpstreamError as exc:
        status = 504 if isinstance(exc, UpstreamTimeout) else 502
        outcome.upstream_ns = time.perf_counter_ns() - forward_started
        await gateway.recorder.finished(outcome, status, [f"upstream: {exc}"])
        return error_response(
            status, str(exc), "upstream_error",
            "upstream_timeout" if status == 504 else "upstream_unavailable", headers,
        )  # fmt: skip

    async def finished(stream: StreamOutcome) -> None:
        outcome.upstream_ns = stream.upstream_us * 1000
        status = stream.status if stream.reason != "upstream_cut" else 502
        reasons = [] if stream.completed else [stream.reason]
        await gateway.recorder.finished(outcome, status, reasons)

    return ProxyResponse(upstream_response, headers, forward_started, finished)  # type: ignore[return-value]


def _agora_headers(decision_id: str, version: int | None, digest: str | None) -> dict[str, str]:
    return {
        DECISION_ID: decision_id,
        POLICY_VERSION: "none" if version is None else str(version),
        POLICY_DIGEST: digest or "none",
    }


def _reject(gateway: Gateway, rejected: _Rejected, headers: dict[str, str]) -> Response:
    gateway.metrics.rejected.labels(rejected.code).inc()
    return error_response(
        rejected.status, rejected.message, rejected.error_type, rejected.code, headers
    )


async def _read_bounded(request: Request, limit: int) -> bytes:
    """The whole request body, or 413 as soon as it exceeds ``limit`` bytes."""
    too_large = _Rejected(
        413,
        f"request body exceeds the limit of {limit} bytes",
        "invalid_request_error",
        "request_too_large",
    )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_body(request: Request, api: str, raw: bytes) -> Any:
    """The JSON body as policy sees it; other content types are forwarded unparsed."""
    if not raw:
        if api in _JSON_APIS and request.method == "POST":
            raise _Rejected(
                400,
                "the request body is empty; expected JSON",
                "invalid_request_error",
                "invalid_json",
            )
        return None
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if api not in _JSON_APIS and content_type not in ("application/json", ""):
        return None
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _Rejected(
            400,
            f"the request body is not valid JSON: {exc}",
            "invalid_request_error",
            "invalid_json",
        ) from exc
    if api in _JSON_APIS and not isinstance(body, dict):
        raise _Rejected(
            400, "the request body must be a JSON object", "invalid_request_error", "invalid_json"
        )
    if b"\\ud" in raw.lower():
        _refuse_lone_surrogates(body)
    return body


def _refuse_lone_surrogates(body: Any) -> None:
    """``"\\ud800"`` parses but is not Unicode text: it could be neither judged nor logged."""
    try:
        json.dumps(body, ensure_ascii=False).encode()
    except UnicodeEncodeError as exc:
        raise _Rejected(
            400,
            "the request body contains an unpaired UTF-16 surrogate escape",
            "invalid_request_error",
            "invalid_json",
        ) from exc


def _path_and_query(request: Request) -> str:
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


async def _list_models(gateway: Gateway) -> dict[str, Any]:
    """Models across upstreams: each upstream's own listing, else the names its route exposes."""
    data: list[dict[str, Any]] = []
    seen: set[str] = set()
    for upstream in gateway.routes.upstreams:
        try:
            listing = await gateway.pool.get_json(upstream, "/v1/models")
            ids = [m["id"] for m in listing.get("data", []) if isinstance(m, dict) and "id" in m]
        except (UpstreamError, AttributeError, TypeError):
            ids = [name for name in upstream.models if not any(ch in name for ch in "*?[")]
        for model_id in ids:
            if model_id not in seen and gateway.routes.route(model_id) is upstream:
                seen.add(model_id)
                data.append(
                    {"id": model_id, "object": "model", "created": 0, "owned_by": upstream.name}
                )
    return {"object": "list", "data": data}


__all__ = ["Gateway", "create_app"]
