"""The Starlette applications (one per listener): wiring, and the request path read top to bottom.

Request path (docs/architecture.md): bound and parse the request, authenticate
the caller, route by model, ask OPA, then refuse (403/503) or forward and
stream the upstream's answer; every outcome is recorded and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from starlette.routing import Route, request_response

from gateway.auth import Authenticator
from gateway.config import Settings
from gateway.decisionlog.errors import DecisionLogError
from gateway.decisionlog.recorder import DecisionRecorder, Outcome
from gateway.exceptions import (
    AgoraError,
    AuthError,
    BodyTimeout,
    BodyTooLarge,
    InvalidBody,
    InvalidTarget,
    MissingModel,
    ModelNotFound,
    ObligationRefused,
    PolicyUnavailable,
    RequestRefused,
    UnsupportedBody,
    UpstreamError,
    UpstreamTimeout,
)
from gateway.governance import start_watcher
from gateway.lifecycle import State
from gateway.pinning.bundle import load_bundle
from gateway.policy.obligations import apply_obligations
from gateway.request.body import JsonBody, parse_json_body
from gateway.request.deadlines import read_within
from gateway.serving.admission import AdmissionControl

if TYPE_CHECKING:
    from gateway.pinning.watcher import RatificationWatcher
from gateway.metrics import CONTENT_TYPE, GatewayMetrics
from gateway.pinning.store import BUNDLE_RESOURCE, PolicyStore, bundle_endpoint
from gateway.policy.engine import PolicyEngine, RequestFacts
from gateway.policy.opa import ManagedOpa
from gateway.request.target import MODEL_NAME, canonical_target, classify_api, model_in_path
from gateway.responses import error_response
from gateway.upstream.pool import Client, ProxyResponse, StreamOutcome, UpstreamPool
from gateway.upstream.routing import RouteTable

logger = logging.getLogger("agora.gateway")

DECISION_ID = "X-Agora-Decision-Id"
POLICY_VERSION = "X-Agora-Policy-Version"
POLICY_DIGEST = "X-Agora-Policy-Digest"

_PROXY_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
_JSON_APIS = frozenset({"chat.completions", "completions", "embeddings", "responses"})
_MODEL_REQUIRED = frozenset({"chat.completions", "completions", "embeddings"})
_PARSE_INLINE_BYTES = 64 * 1024


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


@dataclass(frozen=True)
class GatewayApps:
    """One ASGI app per listener (gateway/server.py), sharing one Gateway and one lifespan.

    The lifespan is the public app's; the server sends the lifespan events there only.
    """

    public: Starlette
    admin: Starlette
    bundle: Starlette
    metrics: GatewayMetrics


def create_app(settings: Settings) -> GatewayApps:
    """The gateway's apps; components start and stop with the public app's lifespan.

    ``settings`` must carry the bound ports (the server resolves a free port, 0,
    before calling this): the managed OPA is told the bundle service's port.
    """
    metrics_ = GatewayMetrics()
    admission = AdmissionControl(
        request_response(proxy),
        max_concurrent=settings.limits.max_concurrent,
        max_queued=settings.limits.max_queued,
        queue_timeout_s=settings.limits.queue_timeout_ms / 1000,
        on_shed=lambda reason: metrics_.shed.labels(reason).inc(),
    )
    metrics_.in_flight.set_function(lambda: admission.in_flight)
    metrics_.queued.set_function(lambda: admission.queued)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        gateway = await _start(settings, metrics_)
        for each in (apps.public, apps.admin, apps.bundle):
            each.state.gateway = gateway
            each.state.policy_store = gateway.store
        try:
            yield
        finally:
            await _stop(gateway)

    apps = GatewayApps(
        public=Starlette(
            routes=[
                Route("/healthz", healthz),
                Route("/readyz", public_readyz),
                Route("/transparency", transparency),
                Route("/v1/{path:path}", admission, methods=_PROXY_METHODS),
            ],
            lifespan=lifespan,
        ),
        admin=Starlette(routes=[Route("/metrics", metrics), Route("/readyz", readyz)]),
        bundle=Starlette(routes=[Route(BUNDLE_RESOURCE, bundle_endpoint)]),
        metrics=metrics_,
    )
    return apps


async def _start(settings: Settings, metrics_: GatewayMetrics) -> Gateway:
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
    store = PolicyStore()
    opa: ManagedOpa | None = None
    opa_url = str(settings.policy.opa_url)
    if settings.policy.opa == "managed":
        opa = ManagedOpa(settings.policy.opa_binary, settings.bundle_service_url)
        opa_url = opa.url
    gateway = Gateway(
        settings=settings,
        store=store,
        engine=PolicyEngine(
            opa_url,
            settings.policy.decision_path,
            settings.policy.timeout_ms,
            store,
            settings.policy.switch_overlap_ms,
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
        gateway.watcher = await start_watcher(settings, store, http, metrics_)
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


async def public_readyz(request: Request) -> Response:
    """Ready or not, with one line of reason: the component detail is on the admin listener."""
    reasons, _ = await _readiness(request.app.state.gateway)
    body: dict[str, Any] = {"ready": not reasons}
    if reasons:
        body["reason"] = reasons[0].splitlines()[0]
    return JSONResponse(body, status_code=503 if reasons else 200)


async def readyz(request: Request) -> Response:
    """The admin listener's readiness: the reasons, and every component's state."""
    reasons, detail = await _readiness(request.app.state.gateway)
    detail["ready"] = not reasons
    detail["reasons"] = reasons
    return JSONResponse(detail, status_code=503 if reasons else 200)


async def _readiness(gateway: Gateway) -> tuple[list[str], dict[str, Any]]:
    """Why the gateway is not ready (none: ready), and the detail operators see.

    Ready only when a verified version is active and OPA enforces it. OPA may
    lag the gateway by ``policy.switch_overlap_ms`` after a switch (its answers
    still count meanwhile); beyond that, OPA enforcing a superseded version (the
    new bundle did not compile in OPA, say) makes the gateway unready.
    """
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
        elif active is not None and enforced.revision != active.revision:
            since = gateway.store.seconds_since_switch
            lag = (
                f"OPA still enforces version {enforced.version}; version {active.version} "
                f"not activated by OPA for {since:.0f} s"
            )
            if since * 1000 > gateway.settings.policy.switch_overlap_ms:
                reasons.append(lag)
            else:
                detail["switching"] = lag
    if gateway.recorder.state is State.ERROR:
        reasons.append(f"the decision log is failing: {gateway.recorder.detail}")
    return reasons, detail


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
    limits = gateway.settings.limits

    # 1. Parse and bound the request: one canonical target, one parsed body.
    try:
        target = canonical_target(
            request.scope.get("raw_path") or b"", request.scope.get("query_string", b"")
        )
        api = classify_api(request.method, target.path)
        raw_body = await _read_bounded(request, limits.max_body_bytes, limits.body_timeout_s)
        parsed = await _parse_body(request, api, raw_body, limits.max_json_depth)
        body = parsed.value if parsed is not None else None
        model = body.get("model") if body is not None else model_in_path(target.path)
        if model is not None and not MODEL_NAME.fullmatch(model):
            raise InvalidTarget("the model name in the path is not a valid model name")
        if api in _MODEL_REQUIRED and model is None:
            raise MissingModel("you must provide a model parameter")
        upstream = gateway.routes.route(model)
        if upstream is None:
            raise ModelNotFound(
                f"The model `{model}` does not exist or is not served through this gateway"
            )
    except RequestRefused as refused:
        gateway.metrics.rejected.labels(refused.code).inc()
        if isinstance(refused, BodyTimeout):
            headers["Connection"] = "close"
        return error_response(
            refused.status, str(refused), refused.error_type, refused.code, headers
        )

    # 2. Authenticate the caller.
    try:
        caller = await gateway.authenticator.authenticate(request.headers.get("authorization"))
    except AuthError as exc:
        gateway.metrics.rejected.labels("invalid_token").inc()
        headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
        return error_response(401, str(exc), "authentication_error", "invalid_token", headers)
    auth_done = time.perf_counter_ns()

    # 3. Ask policy.
    facts = RequestFacts(
        api=api,
        model=model,
        stream=body is not None and body.get("stream") is True,
        body=body if body is not None else {},
        method=request.method,
        path=target.path,
        query=target.query,
        headers={
            k: v for k, v in request.headers.items() if k in gateway.settings.header_allowlist
        },
        upstream=upstream.name,
        texts=parsed.texts if parsed is not None else [],
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

    # 4. Refuse what policy denies, or allows only under an obligation that cannot be met.
    reasons = decision.reasons
    try:
        if not decision.allow:
            raise ObligationRefused("; ".join(reasons))
        forwarded = apply_obligations(
            api, body, raw_body, decision.max_tokens, upstream.chat_cap_field
        )
    except ObligationRefused as exc:
        reasons = reasons if not decision.allow else [str(exc)]
        await gateway.recorder.refused(outcome, 403, reasons)
        return error_response(
            403, "Request denied by policy: " + "; ".join(reasons), "policy_denied",
            "policy_denied", headers, decision_id=decision_id,
            policy_version=decision.version.version, reasons=reasons,
        )  # fmt: skip

    # 5. Forward what it allows, once its decision is in the log.
    try:
        await gateway.recorder.admit(outcome, forwarded.applied)
    except DecisionLogError as exc:
        await gateway.recorder.refused(outcome, 503, [str(exc)])
        return error_response(
            503, "the decision log cannot take this decision; the request was not forwarded",
            "decision_log_unavailable", "decision_log_unavailable", headers,
            decision_id=decision_id,
        )  # fmt: skip
    if api == "models" and target.path == "/v1/models":
        listing = await _list_models(gateway)
        await gateway.recorder.finished(outcome, 200, [])
        return JSONResponse(listing, headers=headers)
    forward_started = time.perf_counter_ns()
    try:
        upstream_response = await gateway.pool.open(
            upstream,
            request.method,
            target.path_and_query,
            request.headers.items(),
            forwarded.body,
            content_type="application/json" if parsed is not None else None,
            client=_client(request),
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
        status = stream.status if stream.reason not in ("upstream_cut", "deadline") else 502
        await gateway.recorder.finished(
            outcome, status, [] if stream.completed else [stream.reason]
        )

    return ProxyResponse(  # type: ignore[return-value]
        upstream_response, headers, forward_started, finished, upstream.timeout.total
    )


def _agora_headers(decision_id: str, version: int | None, digest: str | None) -> dict[str, str]:
    return {
        DECISION_ID: decision_id,
        POLICY_VERSION: "none" if version is None else str(version),
        POLICY_DIGEST: digest or "none",
    }


def _client(request: Request) -> Client | None:
    if request.client is None:
        return None
    return Client(request.client.host, request.url.scheme)


async def _read_bounded(request: Request, limit: int, timeout_s: float) -> bytes:
    """The whole request body within ``timeout_s`` (else 408), or 413 beyond ``limit`` bytes."""
    too_large = BodyTooLarge(f"request body exceeds the limit of {limit} bytes")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in read_within(request.stream(), timeout_s):
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def _parse_body(request: Request, api: str, raw: bytes, max_depth: int) -> JsonBody | None:
    """The JSON body as policy sees it; None for no body, or a non-JSON body of another API.

    Large bodies are parsed in a worker thread, so that one big request does not
    stall every other request's policy call on the event loop.
    """
    if request.headers.get("content-encoding", "identity").strip().lower() != "identity":
        raise UnsupportedBody("request bodies must not be compressed (content-encoding)")
    if not raw:
        if api in _JSON_APIS:
            raise InvalidBody("the request body is empty; expected JSON")
        return None
    if request.method in ("GET", "HEAD", "DELETE"):
        raise InvalidBody(f"a {request.method} request carries no body")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if api not in _JSON_APIS and content_type not in ("application/json", ""):
        return None
    if len(raw) > _PARSE_INLINE_BYTES:
        return await asyncio.to_thread(parse_json_body, raw, max_depth)
    return parse_json_body(raw, max_depth)


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


__all__ = ["Gateway", "GatewayApps", "create_app"]
