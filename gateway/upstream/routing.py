"""Which upstream serves a model: the route table, first match wins."""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from gateway.config import Upstream


@dataclass(frozen=True)
class RouteTable:
    """First match wins, in configuration order; a model of ``None`` takes the first route."""

    upstreams: tuple[Upstream, ...]

    def route(self, model: str | None) -> Upstream | None:
        if model is None:
            return self.upstreams[0]
        for upstream in self.upstreams:
            if any(fnmatchcase(model, pattern) for pattern in upstream.models):
                return upstream
        return None
