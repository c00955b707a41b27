"""``agora quickstart``: the whole system on one machine, with nothing to configure.

A dev chain (anvil) where the governance contracts are deployed and the
default policy bundle is ratified by a real vote, a stand-in model, a managed
OPA, and the gateway configured as an operator would: it reads the registry
over JSON-RPC and enforces what the community ratified. Callers are anonymous
unless they present a token; a token for the ``members`` group, signed with a
secret made for this run, is printed so that both policy tiers can be tried.
Caller ids in the decision log are keyed hashes, with a key made on the first
run and kept in the work directory, so that one caller hashes the same across runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import time
from pathlib import Path
from types import FrameType

import jwt
import uvicorn
import yaml

from demo.devchain import Anvil, ratify_by_vote
from demo.model import create_demo_app
from gateway.chain.registry import Ratification
from gateway.config import Settings, load_settings
from gateway.gov.deploy import Deployment, GovernanceParams, deploy_governance
from gateway.gov.governance import Governance
from gateway.pinning.bundle import load_bundle
from gateway.serving.server import GatewayServer
from gateway.transparency.note import Signer, Verifier

SECRET_ENV = "AGORA_QUICKSTART_SECRET"
CALLER_KEY_ENV = "AGORA_QUICKSTART_CALLER_KEY"
ISSUER = "agora-quickstart"
AUDIENCE = "agora"
RPC_PORT = 8545
WORKDIR = Path("agora-quickstart")
"""The chain's log, the deployment file, the gateway's configuration, a second policy version."""
CALLER_KEY_FILE = WORKDIR / "caller-hash.key"
LOG_KEY_FILE = WORKDIR / "log.key"
"""The Ed25519 key that signs the decision log's checkpoints (made on first run, kept)."""
LOG_ORIGIN = "agora-quickstart.localhost/decisions"
DEMO_RULES = GovernanceParams(voting_delay=1, voting_period=30, timelock_delay=10)
"""With a block a second: a vote opens a block after its proposal and stays open about 30 s;
a passed proposal waits 10 s in the timelock."""


def default_bundle() -> Path:
    """The bundled default policy: ``policies/`` of the source tree, or the working directory."""
    for candidate in (Path(__file__).resolve().parent.parent / "policies", Path.cwd() / "policies"):
        if (candidate / ".manifest").is_file():
            return candidate
    raise FileNotFoundError("the default policy bundle (policies/) was not found")


def quickstart_config(
    gateway_port: int,
    admin_port: int,
    model_port: int,
    deployment: Deployment,
    rpc_url: str,
    log_path: Path,
    log_key_file: Path = LOG_KEY_FILE,
) -> dict[str, object]:
    """The gateway's configuration, as an operator would write it for this chain."""
    return {
        "listen": {"host": "127.0.0.1", "port": gateway_port},
        "admin": {"listen": {"host": "127.0.0.1", "port": admin_port}},
        "upstreams": [
            {"name": "demo", "url": f"http://127.0.0.1:{model_port}", "models": ["demo-*"]}
        ],
        "policy": {
            "opa": "managed",
            "timeout_ms": 500,  # a laptop busy with other work should not see 503s
        },
        # Enforce what the registry ratified, one block deep, checked every second.
        "governance": {
            "rpc_urls": [rpc_url],
            "registry": deployment.registry,
            "chain_id": deployment.chain_id,
            "confirmations": 1,
            "poll_s": 1.0,
        },
        # The community page shows this governor's proposals, and judges every request
        # by the open ones too (a demo's traffic is small: sample all of it).
        "community": {
            "governor": deployment.governor,
            "from_block": deployment.block_number,
            "poll_s": 2.0,
            "shadow": {"sample_rate": 1.0},
        },
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
        # Checkpoints of the log signed with the quickstart's key: often, so they show.
        "transparency": {
            "key_file": str(log_key_file),
            "checkpoint_every": 100,
            "checkpoint_interval_s": 5.0,
        },
    }


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


def log_key(path: Path = LOG_KEY_FILE) -> Verifier:
    """The log key's public half; the key is made at ``path`` (owner-only) if absent."""
    if path.is_file():
        return Signer.parse(path.read_text(encoding="utf-8")).verifier
    path.parent.mkdir(exist_ok=True)
    signer = Signer.generate(LOG_ORIGIN)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(signer.encode() + "\n")
    return signer.verifier


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


def start_governance(chain: Anvil, bundle: Path) -> tuple[Deployment, Ratification]:
    """Deploy the contracts from the chain's first account and ratify ``bundle`` as version 1.

    The same library calls as ``agora gov deploy``, ``propose``, ``vote``,
    ``queue`` and ``execute``; only the waits are fast-forwarded.
    """
    sender = chain.sender()
    deployment = deploy_governance(sender, DEMO_RULES)
    governance = Governance.from_deployment(chain.w3, deployment)
    digest = load_bundle(bundle).digest
    return deployment, ratify_by_vote(chain, governance, sender, digest, bundle.as_uri())


def second_version(bundle: Path, workdir: Path = WORKDIR) -> Path:
    """A second policy version to propose: ``bundle`` with ``demo-large`` opened to anonymous
    callers. An existing one is kept (it may have been edited). Its absolute path."""
    proposal = workdir / "policies-v2"
    if not proposal.exists():
        shutil.copytree(bundle, proposal)
        data = proposal / "agora" / "config" / "data.json"
        config = json.loads(data.read_text(encoding="utf-8"))
        config["models"]["anonymous"].append("demo-large")
        data.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return proposal.resolve()


def run(
    gateway_port: int,
    model_port: int,
    log_level: str,
    rpc_port: int = RPC_PORT,
    admin_port: int = 9090,
) -> int:
    """Start the chain and ratify version 1, then serve until Ctrl-C; the chain stops last."""
    WORKDIR.mkdir(exist_ok=True)
    os.environ.setdefault(SECRET_ENV, secrets.token_urlsafe(32))
    if not os.environ.get(CALLER_KEY_ENV):
        os.environ[CALLER_KEY_ENV] = caller_hash_key()
    verifier = log_key()
    bundle = default_bundle()
    # uvicorn re-raises the signal that stopped it once it is done: make that an exception,
    # so that the chain (a child process) is stopped too.
    handlers = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    chain: Anvil | None = None
    try:
        chain = Anvil.start(rpc_port, WORKDIR)
        print(f"anvil (dev chain) on {chain.url}; deploying the governance contracts", flush=True)
        deployment, ratified = start_governance(chain, bundle)
        deployment.save(WORKDIR / "deployment.json")
        print(f"ratified by vote: version {ratified.version}, {ratified.digest}", flush=True)
        config = quickstart_config(
            gateway_port, admin_port, model_port, deployment, chain.url, Path("decisions.jsonl")
        )
        config_file = WORKDIR / "agora.yaml"
        config_file.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        governance = _governance_instructions(chain, deployment.chain_id, second_version(bundle))
        governance += _transparency_instructions(gateway_port, verifier)
        asyncio.run(serve(load_settings(config_file), log_level, model_port, governance))
    except Stopped:
        pass
    finally:
        if chain is not None:
            chain.stop()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return 0


class Stopped(Exception):
    """Ctrl-C or SIGTERM: the quickstart stops, the chain last."""


def _stop(signum: int, frame: FrameType | None) -> None:
    raise Stopped(signal.Signals(signum).name)


async def serve(settings: Settings, log_level: str, model_port: int, governance: str) -> None:
    """Run the stand-in model and the gateway until the gateway stops (Ctrl-C); print what
    to try, and ``governance``, once the gateway listens."""
    gateway = GatewayServer(settings, log_level=log_level, graceful_shutdown_s=10)
    model = uvicorn.Server(
        uvicorn.Config(create_demo_app(), host="127.0.0.1", port=model_port, log_level="warning")
    )
    model_task = asyncio.create_task(model.serve())
    gateway_task = asyncio.create_task(gateway.serve())
    while not gateway.started and not gateway_task.done():  # noqa: ASYNC110
        await asyncio.sleep(0.05)  # uvicorn offers no event for "started"
    if gateway.started:
        bound = gateway.settings
        token = member_token(os.environ[SECRET_ENV])
        print(_instructions(bound.listen.port, bound.admin.listen.port, token), flush=True)
        print(governance, flush=True)
    try:
        await gateway_task
    finally:
        model.should_exit = True
        await model_task


def _instructions(port: int, admin_port: int, token: str) -> str:
    base = f"http://127.0.0.1:{port}"
    admin = f"http://127.0.0.1:{admin_port}"
    return f"""
Agora is running: gateway {base}, enforcing the policy ratified on the dev chain
(configuration: {WORKDIR / "agora.yaml"}). Decisions are logged to decisions.jsonl,
callers as HMAC-SHA256 of their sub keyed with {CALLER_KEY_FILE} (or
${CALLER_KEY_ENV} when set). Press Ctrl-C to stop.

The community page (the policy in force, proposals and their diffs, decision
figures, what open proposals would change): {base}/community

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


def _transparency_instructions(port: int, verifier: Verifier) -> str:
    base = f"http://127.0.0.1:{port}"
    return f"""
The decision log is a transparency log: checkpoints signed with {LOG_KEY_FILE}
(verifier key {verifier}).
  curl -s {base}/transparency/checkpoint
  curl -s '{base}/transparency/proof/inclusion?index=0'
  agora log verify decisions.jsonl --checkpoint <saved checkpoint> --key {verifier}
"""


def _governance_instructions(chain: Anvil, chain_id: int, proposal: Path) -> str:
    deployment = (WORKDIR / "deployment.json").resolve()
    return f"""
Governance: the community's chain is anvil at {chain.url} (chain id {chain_id},
a block every second; log in {WORKDIR / "anvil.log"}).
Version 1 of the policy was ratified by a vote at startup. Ratify version 2 from
another terminal: {proposal} is the default policy with demo-large opened to
anonymous callers (edit it first if you like).

  export AGORA_RPC_URL={chain.url}
  export AGORA_GOV_DEPLOYMENT={deployment}
  export AGORA_GOV_PRIVATE_KEY={chain.private_key}   # anvil's public test key; holds every vote
  agora gov status
  agora gov propose --bundle {proposal} --uri {proposal.as_uri()}
  agora gov vote 2 for --wait      # within 30 s of the proposal
  agora gov queue 2 --wait         # when the vote has closed
  agora gov execute 2 --wait       # after the 10 s timelock delay

Then ask for demo-large again (the second request above): a couple of blocks after
the execution, the gateway answers with X-Agora-Policy-Version: 2.
"""
