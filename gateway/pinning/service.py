"""The bundle service: the one channel through which OPA receives verified versions.

OPA's bundle plugin downloads the active version from the gateway's loopback
bundle listener, long polling, and activates it in one transaction.
"""

from __future__ import annotations

import ipaddress
import re

from starlette.requests import Request
from starlette.responses import Response

from gateway.pinning.store import PolicyStore

BUNDLE_MEDIA_TYPE = "application/vnd.openpolicyagent.bundles"
BUNDLE_RESOURCE = "/_agora/bundles/active.tar.gz"
MAX_LONG_POLL_S = 60.0


async def bundle_endpoint(request: Request) -> Response:
    """OPA's bundle service: the active verified bundle, with ETag and long polling.

    Served on the loopback-only bundle listener, and there only to 127.0.0.1 and
    ::1: it is the channel from the gateway to its own OPA (managed, or the
    sidecar in the same pod).
    """
    if request.client is None or not _is_loopback(request.client.host):
        return Response(status_code=403)
    store: PolicyStore = request.app.state.gateway.store
    known = request.headers.get("if-none-match", "").strip('"') or None
    wait_s = _prefer_wait(request.headers.get("prefer"))
    if wait_s:
        await store.wait_for_change(known, wait_s)
    active = store.active
    if active is None:
        return Response(status_code=404, headers={"Cache-Control": "no-store"})
    headers = {"ETag": f'"{active.revision}"', "Cache-Control": "no-store"}
    if known == active.revision:
        return Response(status_code=304, headers=headers)
    return Response(active.archive, media_type=BUNDLE_MEDIA_TYPE, headers=headers)


_OWN_ADDRESSES = frozenset({ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")})


def _is_loopback(host: str) -> bool:
    """Whether a client is this host's own process: 127.0.0.1 or ::1, nothing else.

    Not all of 127.0.0.0/8: a service-mesh sidecar (Istio's Envoy) relays traffic
    from other pods to the application from 127.0.0.6, a loopback address, so a
    loopback source does not prove that the caller is in this pod.
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1 on a dual-stack socket
    return (mapped or address) in _OWN_ADDRESSES


def _prefer_wait(prefer: str | None) -> float:
    """Seconds to hold a long poll, from ``Prefer: wait=N``.

    OPA sends preferences separated by ``;`` and ``,``:
    ``Prefer: modes=snapshot,delta;wait=10``.
    """
    for item in re.split(r"[,;]", prefer or ""):
        name, _, value = item.strip().partition("=")
        if name.strip().lower() == "wait":
            try:
                return min(max(float(value), 0.0), MAX_LONG_POLL_S)
            except ValueError:
                return 0.0
    return 0.0
