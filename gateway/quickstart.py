"""``agora quickstart``: the whole system on one machine, with nothing to configure.

A stand-in model, a managed OPA and the gateway enforcing the default policy
bundle, pinned to its digest. Callers are anonymous unless they present a token;
a token for the ``members`` group, signed with a secret made for this run, is
printed so that both policy tiers can be tried.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from pathlib import Path

import jwt
import uvicorn

from gateway.app import create_app
from gateway.bundle import load_bundle
from gateway.config import Settings
from gateway.demo_model import create_demo_app
from gateway.server import GatewayServer

SECRET_ENV = "AGORA_QUICKSTART_SECRET"
ISSUER = "agora-quickstart"
AUDIENCE = "agora"


def default_bundle() -> Path:
    """The bundled default policy: ``policies/`` of the source tree, or the working directory."""
    for candidate in (Path(__file__).resolve().parent.parent / "policies", Path.cwd() / "policies"):
        if (candidate / ".manifest").is_file():
            return candidate
    raise FileNotFoundError("the default policy bundle (policies/) was not found")


def quickstart_settings(
    gateway_port: int, model_port: int, bundle: Path, log_path: Path
) -> Settings:
    return Settings.model_validate(
        {
            "listen": {"host": "127.0.0.1", "port": gateway_port},
            "upstreams": [
                {"name": "demo", "url": f"http://127.0.0.1:{model_port}", "models": ["demo-*"]}
            ],
            "policy": {
                "bundle": str(bundle),
                "pinned_digest": load_bundle(bundle).digest,
                "opa": "managed",
                "version": 1,
                "timeout_ms": 500,  # a laptop busy with other work should not see 503s
            },
            "auth": {
                "required": False,
                "issuer": ISSUER,
                "audience": AUDIENCE,
                "algorithms": ["HS256"],
                "secret_env": SECRET_ENV,
            },
            "decision_log": {"path": str(log_path), "durability": "batch"},
        }
    )


def member_token(secret: str, sub: str = "alice", groups: tuple[str, ...] = ("members",)) -> str:
    now = int(time.time())
    claims = {
        "sub": sub,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 86400,
        "groups": list(groups),
    }
    return jwt.encode(claims, secret, algorithm="HS256")


async def run(gateway_port: int, model_port: int, log_level: str) -> int:
    os.environ.setdefault(SECRET_ENV, secrets.token_urlsafe(32))
    bundle = default_bundle()
    settings = quickstart_settings(gateway_port, model_port, bundle, Path("decisions.jsonl"))
    model_server = uvicorn.Server(
        uvicorn.Config(create_demo_app(), host="127.0.0.1", port=model_port, log_level=log_level)
    )
    app = create_app(settings)
    gateway_server = GatewayServer(
        uvicorn.Config(
            app, host="127.0.0.1", port=gateway_port, log_level=log_level,
            access_log=False, timeout_graceful_shutdown=10,
        ),
        app,
    )  # fmt: skip
    model_task = asyncio.create_task(model_server.serve())
    gateway_task = asyncio.create_task(gateway_server.serve())
    while not gateway_server.started and not gateway_task.done():  # noqa: ASYNC110
        await asyncio.sleep(0.05)  # uvicorn offers no event for "started"
    if gateway_server.started:
        print(
            _instructions(gateway_port, settings, member_token(os.environ[SECRET_ENV])), flush=True
        )
    await gateway_task
    model_server.should_exit = True
    await model_task
    return 0


def _instructions(port: int, settings: Settings, token: str) -> str:
    base = f"http://127.0.0.1:{port}"
    return f"""
Agora is running: gateway {base}, policy {settings.policy.pinned_digest}
Decisions are logged to {settings.decision_log.path}. Press Ctrl-C to stop.

Allowed (anonymous callers may use demo-small):
  curl -s {base}/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{{"model": "demo-small", "messages": [{{"role": "user", "content": "Hello"}}]}}'

Denied with reasons (demo-large is for members):
  curl -s {base}/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{{"model": "demo-large", "messages": [{{"role": "user", "content": "Hello"}}]}}'

Allowed for a member (token valid 24 h):
  curl -s {base}/v1/chat/completions -H 'Content-Type: application/json' \\
    -H 'Authorization: Bearer {token}' \\
    -d '{{"model": "demo-large", "messages": [{{"role": "user", "content": "Hello"}}]}}'

With the openai SDK:
  OpenAI(base_url="{base}/v1", api_key="<the member token above>").chat.completions.create(
      model="demo-small", messages=[{{"role": "user", "content": "Hello"}}], stream=True)

Health: {base}/readyz   Metrics: {base}/metrics
"""
