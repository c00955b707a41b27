"""Which API a request targets, which model it names, and which upstream serves it."""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from gateway.config import Upstream

_API_BY_PATH = {
    "/v1/chat/completions": "chat.completions",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
    "/v1/responses": "responses",
    "/v1/models": "models",
}


def classify_api(path: str) -> str:
    """The API family of a ``/v1/...`` path, as the policy input names it."""
    if path in _API_BY_PATH:
        return _API_BY_PATH[path]
    if path.startswith("/v1/models/"):
        return "models"
    if path.startswith("/v1/responses/"):
        return "responses"
    return "other"


def model_of(path: str, body: Any) -> str | None:
    """The model a request names: ``body.model``, or the id in ``/v1/models/{id}``."""
    if isinstance(body, dict) and isinstance(body.get("model"), str):
        return str(body["model"])
    if path.startswith("/v1/models/"):
        return path.removeprefix("/v1/models/") or None
    return None


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

    def listed_models(self) -> list[str]:
        """Model names the routes expose explicitly (patterns without wildcards)."""
        names: list[str] = []
        for upstream in self.upstreams:
            for pattern in upstream.models:
                if not any(ch in pattern for ch in "*?[") and pattern not in names:
                    names.append(pattern)
        return names
