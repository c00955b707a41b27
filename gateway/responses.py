"""OpenAI-style error responses, so that SDKs surface the gateway's errors as API errors."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse


def error_response(
    status: int,
    message: str,
    error_type: str,
    code: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """``{"error": {"message", "type", "code", ...}}`` with the given HTTP status."""
    body: dict[str, Any] = {"message": message, "type": error_type, "code": code, "param": None}
    body.update(extra)
    return JSONResponse({"error": body}, status_code=status, headers=headers)
