"""``agora quickstart``: the whole system on one machine, with nothing to configure.

A stand-in model, a managed OPA and the gateway enforcing the default policy
bundle, pinned to its digest. Callers are anonymous unless they present a token;
a token for the ``members`` group, signed with a secret made for this run, is
printed so that both policy tiers can be tried. Caller ids in the decision log
are keyed hashes, with a key made on the first run and kept beside the
governance files, so that one caller hashes the same across runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import jwt
import uvicorn
from starlette.applications import Starlette

from demo.model import create_demo_app
from gateway.config import Settings
from gateway.exceptions import ChainError
from gateway.serving.server import GatewayServer

if TYPE_CHECKING:
    from gateway.chain.rpc_bridge import RpcBridge

SECRET_ENV = "AGORA_QUICKSTART_SECRET"
CALLER_KEY_ENV = "AGORA_QUICKSTART_CALLER_KEY"
ISSUER = "agora-quickstart"
AUDIENCE = "agora"
RPC_PORT = 8545
WORKDIR = Path("agora-quickstart")  # the deployment file and a second policy version to propose
CALLER_KEY_FILE = WORKDIR / "caller-hash.key"


def default_bundle() -> Path:
    """The bundled default policy: ``policies/`` of the source tree, or the working directory."""
    for candidate in (Path(__file__).resolve().parent.parent / "policies", Path.cwd() / "policies"):
        if (candidate / ".manifest").is_file():
            return candidate
    raise FileNotFoundError("the default policy bundle (policies/) was not found")


def quickstart_settings(
    gateway_port: int, model_port: int, bundle: Path, log_path: Path, admin_port: int = 9090
) -> Settings:
    return Settings.model_validate(
        {
            "listen": {"host": "127.0.0.1", "port": gateway_port},
            "admin": {"listen": {"host": "127.0.0.1", "port": admin_port}},
            "upstreams": [
                {"name": "demo", "url": f"http://127.0.0.1:{model_port}", "models": ["demo-*"]}
            ],
            "policy": {
                "bundle": str(bundle),
                "opa": "managed",
                "timeout_ms": 500,  # a laptop busy with other work should not see 503s
            },
            # The embedded chain ratifies the bundle as version 1 by a real vote; the gateway
            # enforces whatever the chain ratifies next (one block deep, checked every second).
            "governance": {"chain": "embedded", "confirmations": 1, "poll_s": 1.0},
            "auth": {
                "required": False,
                "issuer": ISSUER,
                "audience": AUDIENCE,
                "algorithms": ["HS256"],
                "secret_env": SECRET_ENV,
            },
            "decision_log": {
                "path": str(log_path),
                "durability": "batch",
                "caller_hash_key_env": CALLER_KEY_ENV,
            },
        }
    )


def caller_hash_key(path: Path = CALLER_KEY_FILE) -> str:
    """The decision log's caller-hash key: read from ``path``, made there (owner-only) if absent."""
    if path.is_file():
        key = path.read_text(encoding="ascii").strip()
        if key:
            return key
    path.parent.mkdir(exist_ok=True)
    key = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(key + "\n")
    return key


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


def governance_files(bridge: RpcBridge, bundle: Path, workdir: Path = WORKDIR) -> tuple[Path, Path]:
    """Write the deployment file for `agora gov`, and a second policy version to propose.

    The second version is ``bundle`` with ``demo-large`` opened to anonymous callers;
    an existing one is kept (it may have been edited). Returns both absolute paths.
    """
    workdir.mkdir(exist_ok=True)
    deployment = bridge.write_deployment(workdir / "deployment.json").resolve()
    proposal = workdir / "policies-v2"
    if not proposal.exists():
        shutil.copytree(bundle, proposal)
        data = proposal / "agora" / "config" / "data.json"
        config = json.loads(data.read_text(encoding="utf-8"))
        config["models"]["anonymous"].append("demo-large")
        data.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return deployment, proposal.resolve()


async def start_rpc_bridge(app: Starlette, port: int, log_level: str) -> RpcBridge | None:
    """Serve the gateway's embedded chain over JSON-RPC, for `agora gov` from another terminal."""
    from gateway.chain.rpc_bridge import RpcBridge

    bridge = RpcBridge(app.state.gateway.embedded, port=port, log_level=log_level)
    try:
        await bridge.start()
    except ChainError as exc:
        print(f"agora quickstart: {exc}; pass --rpc-port PORT to use another", file=sys.stderr)
        return None
    return bridge


async def run(
    gateway_port: int,
    model_port: int,
    log_level: str,
    rpc_port: int = RPC_PORT,
    admin_port: int = 9090,
) -> int:
    os.environ.setdefault(SECRET_ENV, secrets.token_urlsafe(32))
    if not os.environ.get(CALLER_KEY_ENV):
        os.environ[CALLER_KEY_ENV] = caller_hash_key()
    bundle = default_bundle()
    settings = quickstart_settings(
        gateway_port, model_port, bundle, Path("decisions.jsonl"), admin_port
    )
    model_server = uvicorn.Server(
        uvicorn.Config(create_demo_app(), host="127.0.0.1", port=model_port, log_level=log_level)
    )
    gateway_server = GatewayServer(settings, log_level=log_level, graceful_shutdown_s=10)
    app = gateway_server.apps.public
    model_task = asyncio.create_task(model_server.serve())
    gateway_task = asyncio.create_task(gateway_server.serve())
    while not gateway_server.started and not gateway_task.done():  # noqa: ASYNC110
        await asyncio.sleep(0.05)  # uvicorn offers no event for "started"
    bridge: RpcBridge | None = None
    if gateway_server.started:
        bound = gateway_server.settings
        token = member_token(os.environ[SECRET_ENV])
        print(_instructions(bound.listen.port, bound.admin.listen.port, token), flush=True)
        bridge = await start_rpc_bridge(app, rpc_port, log_level)
        if bridge is not None:
            deployment, proposal = governance_files(bridge, bundle)
            print(_governance_instructions(bridge, deployment, proposal), flush=True)
    await gateway_task
    if bridge is not None:
        await bridge.stop()
    model_server.should_exit = True
    await model_task
    return 0


def _instructions(port: int, admin_port: int, token: str) -> str:
    base = f"http://127.0.0.1:{port}"
    admin = f"http://127.0.0.1:{admin_port}"
    return f"""
Agora is running: gateway {base}, enforcing the policy the embedded chain ratified.
Decisions are logged to decisions.jsonl, callers as HMAC-SHA256 of their sub keyed
with {CALLER_KEY_FILE} (or ${CALLER_KEY_ENV} when set). Press Ctrl-C to stop.

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

Health: {base}/readyz   Metrics: {admin}/metrics   Detailed readiness: {admin}/readyz
"""


def _governance_instructions(bridge: RpcBridge, deployment: Path, proposal: Path) -> str:
    return f"""
Governance: the community's chain runs in this process, served like a dev node at
{bridge.url} (chain id {bridge.chain_id}, a block every second). Version 1 of the
policy was ratified by a vote at startup. Ratify version 2 from another terminal:
{proposal} is the default policy with demo-large opened to anonymous callers
(edit it first if you like).

  export AGORA_RPC_URL={bridge.url}
  export AGORA_GOV_DEPLOYMENT={deployment}
  export AGORA_GOV_PRIVATE_KEY={bridge.deployer_key}   # public test key; holds every vote
  agora gov status
  agora gov propose --bundle {proposal} --uri {proposal.as_uri()}
  agora gov vote 2 for --wait      # within 30 s of the proposal
  agora gov queue 2 --wait         # when the vote has closed
  agora gov execute 2 --wait       # after the 10 s timelock delay

Then ask for demo-large again (the second request above): a couple of blocks after
the execution, the gateway answers with X-Agora-Policy-Version: 2.
"""
