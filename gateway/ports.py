"""Loopback ports for processes started beside the gateway (OPA, shadow OPAs)."""

from __future__ import annotations

import collections
import socket

_RECENT: collections.deque[int] = collections.deque(maxlen=256)
"""Ports handed out lately, whose processes may not have bound them yet."""


def free_port() -> int:
    """A loopback port free now, and not one of the last ones handed out.

    The kernel may offer a port again as soon as the probe socket closes, before
    the process it was chosen for binds it: without the memory, two processes
    started together (the managed OPA and a shadow OPA; two listeners of one
    configuration) could be given one port.
    """
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port not in _RECENT:
            _RECENT.append(port)
            return port
