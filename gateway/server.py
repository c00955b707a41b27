"""The uvicorn server of the gateway, aware of the gateway's shutdown needs."""

from __future__ import annotations

from types import FrameType

import uvicorn
from starlette.applications import Starlette


class GatewayServer(uvicorn.Server):
    """uvicorn, plus: when shutdown starts, long-polling bundle requests are released.

    uvicorn waits for in-flight requests before running the lifespan shutdown;
    without this, OPA's long poll (up to its timeout) would hold every shutdown.
    """

    def __init__(self, config: uvicorn.Config, app: Starlette):
        super().__init__(config)
        self._gateway_app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        store = getattr(self._gateway_app.state, "policy_store", None)
        if store is not None:
            store.close()
        super().handle_exit(sig, frame)
