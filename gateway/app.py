"""The gateway's ASGI apps, one per listener, sharing one set of components and one lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.routing import Route, request_response

from gateway.community.page import routes as community_routes
from gateway.config import Settings
from gateway.endpoints import healthz, metrics, public_readyz, readyz, transparency
from gateway.enforcement import enforce
from gateway.metrics import GatewayMetrics
from gateway.pinning.service import BUNDLE_RESOURCE, bundle_endpoint
from gateway.request.ids import decision_ids
from gateway.responses import decision_headers
from gateway.runtime import running
from gateway.serving.admission import AdmissionControl
from gateway.transparency import endpoints as tlog

_PROXY_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


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
        request_response(enforce),
        max_concurrent=settings.limits.max_concurrent,
        max_queued=settings.limits.max_queued,
        queue_timeout_s=settings.limits.queue_timeout_ms / 1000,
        on_shed=lambda reason: metrics_.shed.labels(reason).inc(),
        shed_headers=lambda: _shed_headers(apps.public),
    )
    metrics_.in_flight.set_function(lambda: admission.in_flight)
    metrics_.queued.set_function(lambda: admission.queued)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with running(settings, metrics_) as gateway:
            for each in (apps.public, apps.admin, apps.bundle):
                each.state.gateway = gateway
            yield

    apps = GatewayApps(
        public=Starlette(
            routes=[
                # First: Starlette tries routes in order, and nearly every request is a /v1/ one.
                Route("/v1/{path:path}", admission, methods=_PROXY_METHODS),
                Route("/healthz", healthz),
                Route("/readyz", public_readyz),
                Route("/transparency", transparency),
                *community_routes(settings),
                Route("/transparency/checkpoint", tlog.checkpoint),
                Route("/transparency/proof/inclusion", tlog.inclusion),
                Route("/transparency/proof/consistency", tlog.consistency),
                Route("/transparency/cosignature", tlog.cosignature, methods=["POST"]),
            ],
            lifespan=lifespan,
        ),
        admin=Starlette(routes=[Route("/metrics", metrics), Route("/readyz", readyz)]),
        bundle=Starlette(routes=[Route(BUNDLE_RESOURCE, bundle_endpoint)]),
        metrics=metrics_,
    )
    return apps


def _shed_headers(public: Starlette) -> dict[str, str]:
    """A shed request is answered under the policy in force, like every other one."""
    gateway = getattr(public.state, "gateway", None)
    active = gateway.store.active if gateway is not None else None
    return decision_headers(
        decision_ids.next(), active.version if active else None, active.digest if active else None
    )


__all__ = ["GatewayApps", "create_app"]
