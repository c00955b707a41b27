"""The request path, read top to bottom: what the gateway does with every request under /v1/.

Parse and bound the request (one canonical target, one parsed body),
authenticate the caller, route by model, ask OPA, apply the decision's
obligations, record the decision, then refuse (403/503) or forward and stream
the upstream's answer (judged by response policy when the bundle in force has
it: gateway.answers), recording how it ended (docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.decisionlog.errors import DecisionLogError
from gateway.decisionlog.recorder import Outcome
from gateway.exceptions import (
    AuthError,
    BodyTimeout,
    BodyTooLarge,
    InvalidBody,
    MissingModel,
    ModelNotFound,
    ObligationRefused,
    Overloaded,
    PolicyUnavailable,
    RateLimited,
    RequestRefused,
    UnsupportedBody,
    UpstreamError,
    UsageUnavailable,
)
from gateway.policy.input import RequestFacts
from gateway.policy.obligations import apply_obligations
from gateway.request.body import JsonBody, parse_json_body
from gateway.request.deadlines import read_within
from gateway.request.ids import decision_ids
from gateway.request.target import canonical_target, classify_api, model_in_path
from gateway.responses import answer_for, decision_headers, error_for
from gateway.runtime import Gateway
from gateway.serving.admission import RETRY_AFTER_S
from gateway.upstream.pool import Client, ProxyResponse, StreamOutcome
from gateway.usage.meter import UsageMeter
from gateway.usage.tap import UsageTap

logger = logging.getLogger("agora.gateway")


_JSON_APIS = frozenset({"chat.completions", "completions", "embeddings", "responses"})
_MODEL_REQUIRED = frozenset({"chat.completions", "completions", "embeddings"})
_PARSE_INLINE_BYTES = 64 * 1024


async def enforce(request: Request) -> Response:
    """Judge one request and forward it only as judged; every decision is logged first."""
    gateway: Gateway = request.app.state.gateway
    started = time.perf_counter_ns()
    decision_id = decision_ids.next()
    active = gateway.store.active
    headers = decision_headers(
        decision_id, active.version if active else None, active.digest if active else None
    )
    limits = gateway.settings.limits

    # A large body's work (parsing, judging, hashing for the log) takes a turn from
    # gateway.large_bodies, held until the upstream answers its headers.
    async with contextlib.AsyncExitStack() as heavy_work:
        # 1. Parse and bound the request: one canonical target, one parsed body.
        try:
            target = canonical_target(
                request.scope.get("raw_path") or b"", request.scope.get("query_string", b"")
            )
            api = classify_api(request.method, target.path)
            raw_body = await _read_bounded(request, limits.max_body_bytes, limits.body_timeout_s)
            await heavy_work.enter_async_context(gateway.large_bodies.turn(len(raw_body)))
            parsed = await _parse_body(request, api, raw_body, limits.max_json_depth)
            body = parsed.value if parsed is not None else None
            model = body.get("model") if body is not None else model_in_path(target.path)
            if api in _MODEL_REQUIRED and model is None:
                raise MissingModel("you must provide a model parameter")
            upstream = gateway.routes.route(model)
            if upstream is None:
                raise ModelNotFound(
                    f"The model `{model}` does not exist or is not served through this gateway"
                )
        except Overloaded as shed:
            gateway.metrics.shed.labels("large_bodies").inc()
            headers["Retry-After"] = str(RETRY_AFTER_S)
            return error_for(shed, headers)
        except RequestRefused as refused:
            gateway.metrics.rejected.labels(answer_for(refused).code).inc()
            if isinstance(refused, BodyTimeout):
                headers["Connection"] = "close"
            return error_for(refused, headers)

        # 2. Authenticate the caller.
        try:
            caller = await gateway.authenticator.authenticate(request.headers.get("authorization"))
        except AuthError as exc:
            gateway.metrics.rejected.labels("invalid_token").inc()
            headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
            return error_for(exc, headers)
        auth_done = time.perf_counter_ns()

        # 3. Count the request in the caller's budgets, and ask policy.
        request_headers = request.headers.items()  # decoded once: for policy, then the upstream
        facts = RequestFacts(
            api=api,
            model=model,
            stream=body is not None and body.get("stream") is True,
            body=body if body is not None else {},
            method=request.method,
            path=target.path,
            query=target.query,
            headers={k: v for k, v in request_headers if k in gateway.settings.header_allowlist},
            upstream=upstream.name,
            texts=parsed.texts if parsed is not None else [],
        )
        outcome = Outcome(decision_id=decision_id, facts=facts, caller=caller, started_ns=started)
        outcome.auth_ns = auth_done - started
        try:
            charge = await gateway.usage.charge(caller)
        except UsageUnavailable as exc:
            logger.warning("failing closed: %s", exc)
            await gateway.recorder.refused(outcome, 503, [str(exc)])
            return error_for(
                exc, headers, f"{exc}; the request was not forwarded", decision_id=decision_id
            )
        if charge.document is not None:
            facts = outcome.facts = dataclasses.replace(facts, usage=charge.document)
        try:
            decision, policy_input = await gateway.engine.decide(facts, caller, len(raw_body))
            # Response policy: whether this version judges the answer (asked once per version).
            judge = (
                await gateway.answers.judge_for(api, decision, policy_input, len(raw_body))
                if decision.allow
                else None
            )
        except PolicyUnavailable as exc:
            gateway.usage.refund(charge)
            logger.warning("failing closed: %s", exc)
            outcome.policy_ns = time.perf_counter_ns() - auth_done
            await gateway.recorder.refused(outcome, 503, [str(exc)])
            return error_for(
                exc, headers, "policy decision unavailable; the request was not forwarded",
                decision_id=decision_id,
            )  # fmt: skip
        outcome.policy_ns = time.perf_counter_ns() - auth_done
        outcome.decision = decision
        outcome.input_document = input_document = policy_input.document
        outcome.input_sha256 = policy_input.sha256()  # None: hashed by the recorder, if large
        if gateway.community is not None and gateway.community.shadow is not None:
            # Sampled for the open proposals, judged later in the background: never waited for.
            gateway.community.shadow.offer(
                input_document, decision.allow, decision.reasons, len(raw_body)
            )
        headers.update(
            decision_headers(decision_id, decision.version.version, decision.version.digest)
        )

        # 4. Refuse what policy denies, or allows only under an obligation that cannot be met.
        reasons = decision.reasons
        try:
            if not decision.allow and decision.retry_after_s is not None:
                raise RateLimited("; ".join(reasons), decision.retry_after_s)
            if not decision.allow:
                raise ObligationRefused("; ".join(reasons))
            forwarded = apply_obligations(
                api, body, raw_body, decision.max_tokens, upstream.chat_cap_field,
                stream_usage=charge.document is not None and upstream.stream_usage,
            )  # fmt: skip
        except RateLimited as exc:
            gateway.usage.refund(charge)
            await gateway.recorder.refused(outcome, 429, reasons)
            headers["Retry-After"] = str(exc.retry_after_s)
            return error_for(
                exc, headers, "Rate limit exceeded: " + "; ".join(reasons),
                decision_id=decision_id, policy_version=decision.version.version, reasons=reasons,
            )  # fmt: skip
        except ObligationRefused as exc:
            gateway.usage.refund(charge)
            reasons = reasons if not decision.allow else [str(exc)]
            await gateway.recorder.refused(outcome, 403, reasons)
            return error_for(
                exc, headers, "Request denied by policy: " + "; ".join(reasons),
                decision_id=decision_id, policy_version=decision.version.version, reasons=reasons,
            )  # fmt: skip

        # 5. Forward what it allows, once its decision is in the log.
        try:
            await gateway.recorder.admit(outcome, forwarded.applied)
        except DecisionLogError as exc:
            gateway.usage.refund(charge)
            await gateway.recorder.refused(outcome, 503, [str(exc)])
            return error_for(
                exc, headers,
                "the decision log cannot take this decision; the request was not forwarded",
                decision_id=decision_id,
            )  # fmt: skip
        if api == "models" and target.path == "/v1/models":
            listing = await _list_models(gateway)
            await gateway.recorder.finished(outcome, 200, [])
            return JSONResponse(listing, headers=headers)
        # A body judged as JSON goes out as JSON; an opaque one (another API's upload) as sent.
        opaque_type = request.headers.get("content-type") if raw_body else None
        forward_headers = request_headers
        if judge is not None or charge.cells:  # an answer to judge or meter must come uncompressed
            forward_headers = [(n, v) for n, v in forward_headers if n != "accept-encoding"]
            forward_headers.append(("accept-encoding", "identity"))
        forward_started = time.perf_counter_ns()
        try:
            upstream_response = await gateway.pool.open(
                upstream,
                request.method,
                target.path_and_query,
                forward_headers,
                forwarded.body,
                content_type="application/json" if parsed is not None else opaque_type,
                client=_client(request),
            )
        except UpstreamError as exc:
            gateway.usage.refund(charge)
            outcome.upstream_ns = time.perf_counter_ns() - forward_started
            await gateway.recorder.finished(outcome, answer_for(exc).status, [f"upstream: {exc}"])
            return error_for(exc, headers)

        # The answer's tokens are read as it passes (by response policy's stages when it judges
        # the answer, else by the usage tap), and counted once it is over.
        meter: UsageMeter | None = None
        tap: UsageTap | None = None
        if charge.cells:
            cut_usage = (
                forwarded.usage_requested and "content-length" not in upstream_response.headers
            )
            meter = UsageMeter(len(raw_body), cut_usage)
            if judge is None:
                tap = UsageTap(meter, upstream_response.headers.get("content-type"), cut_usage)

        async def finished(stream: StreamOutcome) -> None:
            if tap is not None:
                gateway.usage.add_tokens(charge, tap.result())
            elif meter is not None:
                gateway.usage.add_tokens(charge, meter.result())
            outcome.upstream_ns = stream.upstream_us * 1000
            status = stream.status if stream.reason not in ("upstream_cut", "deadline") else 502
            if judge is not None:
                await gateway.recorder.answered(outcome, judge.verdict, status)
            await gateway.recorder.finished(
                outcome, status, [] if stream.completed else [stream.reason]
            )

        if judge is not None:
            return await gateway.answers.respond(
                upstream_response, judge, headers, decision_id, forward_started, finished,
                upstream.timeout.total, stages=() if meter is None else (meter,),
            )  # fmt: skip
        return ProxyResponse(  # type: ignore[return-value]
            upstream_response, headers, forward_started, finished, upstream.timeout.total, tap
        )


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
