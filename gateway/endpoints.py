"""The gateway's own endpoints: liveness, readiness, transparency figures and metrics."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.exceptions import PolicyUnavailable
from gateway.lifecycle import unready_reasons
from gateway.metrics import CONTENT_TYPE
from gateway.runtime import Gateway


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
            for component in gateway.workers
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
    reasons.extend(unready_reasons(gateway.workers))
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
