"""The gateway's server: one uvicorn server, one event loop, three listening sockets.

- public (``listen``): the proxied API under ``/v1/``, ``/healthz``, ``/readyz``, ``/transparency``;
- admin (``admin.listen``): ``/metrics`` and the detailed ``/readyz``, for operators;
- bundle service (``bundle_service.listen``, loopback only): the verified bundle OPA pulls.

One uvicorn server owns the three sockets, so there is one lifespan (components
start once, stop once, after every connection drained), one SIGTERM handling,
and one graceful shutdown. Each request goes to the app of the socket it
arrived on: the ASGI scope's ``server`` is the connection's local address, set
from the socket, never from anything the client sends; ports are distinct, so
the local port names the listener.
"""

from __future__ import annotations

import gc
import logging
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from types import FrameType

import uvicorn
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.app import GatewayApps, create_app
from gateway.config import Admin, AdminListen, BundleListen, BundleService, Listen, Settings
from gateway.exceptions import ConfigError
from gateway.metrics import GatewayMetrics
from gateway.serving.http_protocol import bounded_protocol

logger = logging.getLogger("agora.server")


@dataclass(frozen=True)
class Listener:
    """One bound socket and the configuration key it comes from."""

    name: str
    key: str
    sock: socket.socket

    @property
    def port(self) -> int:
        port: int = self.sock.getsockname()[1]
        return port

    @property
    def url(self) -> str:
        host = self.sock.getsockname()[0]
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"


class ListenerRouter:
    """The ASGI app uvicorn runs: each request to the app of the listener it arrived on."""

    def __init__(self, lifespan_app: ASGIApp, apps_by_port: Mapping[int, ASGIApp]):
        self._lifespan_app = lifespan_app
        self._apps_by_port = dict(apps_by_port)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan_app(scope, receive, send)
            return
        server = scope.get("server")
        app = self._apps_by_port.get(server[1]) if server else None
        if app is None:  # not one of our sockets: cannot happen, refuse rather than guess
            await PlainTextResponse("Not Found", status_code=404)(scope, receive, send)
            return
        await app(scope, receive, send)


class GatewayServer(uvicorn.Server):
    """The gateway on its three listeners; ``run()`` (or ``await serve()``) until SIGTERM.

    The sockets are bound here, before the lifespan starts, so that a port in use
    fails at once with the key to change, and so that a free bundle port (0) is
    known before the managed OPA is told where to pull from.
    """

    def __init__(self, settings: Settings, log_level: str = "info", graceful_shutdown_s: int = 30):
        self.listeners = _bind_all(settings)
        public, admin, bundle = self.listeners
        self.settings = settings.model_copy(
            update={
                "listen": Listen(host=settings.listen.host, port=public.port),
                "admin": Admin(
                    listen=AdminListen(host=settings.admin.listen.host, port=admin.port)
                ),
                "bundle_service": BundleService(
                    listen=BundleListen(host=settings.bundle_service.listen.host, port=bundle.port)
                ),
            }
        )
        self.apps: GatewayApps = create_app(self.settings)
        router = ListenerRouter(
            self.apps.public,
            {
                public.port: self.apps.public,
                admin.port: self.apps.admin,
                bundle.port: self.apps.bundle,
            },
        )
        metrics: GatewayMetrics = self.apps.metrics
        config = uvicorn.Config(
            router,
            http=bounded_protocol(
                settings.limits, lambda reason: metrics.connections_timed_out.labels(reason).inc()
            ),
            lifespan="on",
            ws="none",  # no WebSocket routes: an upgrade is never taken
            log_level=log_level,
            access_log=False,
            proxy_headers=False,  # the bundle service trusts the peer address; nothing rewrites it
            timeout_keep_alive=settings.limits.keep_alive_s,
            timeout_graceful_shutdown=graceful_shutdown_s,
        )
        super().__init__(config)

    def run(self, sockets: list[socket.socket] | None = None) -> None:
        super().run(sockets or self._sockets())

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        await super().serve(sockets or self._sockets())

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Start the listeners (and, through the lifespan, every component), then freeze the
        objects made so far out of the garbage collector's sight.

        Modules, configuration and the components live as long as the process;
        without the freeze, every full collection under load walks all of them
        again (some 80,000 objects: about 20 ms with every request stalled, a
        few times a minute at saturation) for garbage that only requests make.
        """
        await super().startup(sockets)
        gc.freeze()
        for listener in self.listeners:
            logger.info("%s listener on %s", listener.name, listener.url)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Release long-polling bundle requests first: uvicorn waits for in-flight requests
        before the lifespan shutdown, and OPA's long poll would hold every shutdown.
        """
        gateway = getattr(self.apps.bundle.state, "gateway", None)
        if gateway is not None:
            gateway.store.close()
        super().handle_exit(sig, frame)

    def _sockets(self) -> list[socket.socket]:
        return [listener.sock for listener in self.listeners]


def _bind_all(settings: Settings) -> tuple[Listener, Listener, Listener]:
    """The public, admin and bundle service sockets, on ports that differ; ConfigError if not."""
    wanted = (
        ("public", "listen", settings.listen.host, settings.listen.port),
        ("admin", "admin.listen", settings.admin.listen.host, settings.admin.listen.port),
        (
            "bundle service",
            "bundle_service.listen",
            settings.bundle_service.listen.host,
            settings.bundle_port,
        ),
    )
    bound: list[Listener] = []
    try:
        for name, key, host, port in wanted:
            bound.append(_bind(name, key, host, port))
        ports = [listener.port for listener in bound]
        if len(set(ports)) != len(ports):  # only a free port (0) can land on another's
            raise ConfigError(f"two listeners were given the same port: {ports}; set them apart")
    except ConfigError:
        for listener in bound:
            listener.sock.close()
        raise
    return bound[0], bound[1], bound[2]


def _bind(name: str, key: str, host: str, port: int) -> Listener:
    """A socket bound (not yet listening) to ``host:port``; ConfigError naming ``key`` if not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"{key}: cannot listen on {host}:{port}: {exc.strerror}") from exc
    return Listener(name, key, sock)
