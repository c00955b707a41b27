"""The ``agora`` command: serve, quickstart, policy tools, and the gov/log groups."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import uvicorn
import yaml

from gateway import __version__
from gateway.config import DEFAULT_BUNDLE_PORT, load_settings
from gateway.exceptions import AgoraError
from gateway.pinning.bundle import build_archive, load_bundle
from gateway.policy.opa import opa_config

Handler = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(args, "log_level", "info").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handler: Handler | None = getattr(args, "func", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return handler(args)
    except AgoraError as exc:
        print(f"agora: error: {exc}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agora", description=__doc__)
    parser.add_argument("--version", action="version", version=f"agora {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", type=Path, help="YAML configuration file")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(func=_serve)

    quickstart = commands.add_parser(
        "quickstart",
        help="run the whole system locally: dev chain (anvil), OPA, stand-in model, gateway",
    )
    quickstart.add_argument("--port", type=int, default=8080, help="gateway port")
    quickstart.add_argument(
        "--admin-port", type=int, default=9090, help="gateway admin port (/metrics)"
    )
    quickstart.add_argument("--model-port", type=int, default=9000, help="demo model port")
    quickstart.add_argument(
        "--rpc-port", type=int, default=8545, help="JSON-RPC port of the dev chain (anvil)"
    )
    quickstart.add_argument("--log-level", default="warning")
    quickstart.set_defaults(func=_quickstart)

    demo = commands.add_parser("demo-model", help="run the stand-in OpenAI-compatible model server")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=9000)
    demo.add_argument(
        "--token-delay-ms",
        type=float,
        default=20.0,
        help="pause between the words of a streamed answer (20)",
    )
    demo.set_defaults(func=_demo_model)

    opa = commands.add_parser("opa-config", help="print the configuration for an OPA sidecar")
    opa.add_argument(
        "--gateway-url",
        default=f"http://127.0.0.1:{DEFAULT_BUNDLE_PORT}",
        help="the gateway's bundle service, on loopback (bundle_service.listen)",
    )
    opa.set_defaults(func=_opa_config)

    policy = commands.add_parser("policy", help="policy bundle tools").add_subparsers(
        metavar="ACTION", required=True
    )
    digest = policy.add_parser("digest", help="print a bundle's digest (directory or .tar.gz)")
    digest.add_argument("bundle", type=Path)
    digest.set_defaults(func=_policy_digest)
    build = policy.add_parser("build", help="write a reproducible .tar.gz of a bundle directory")
    build.add_argument("bundle", type=Path)
    build.add_argument("-o", "--output", type=Path, required=True)
    build.set_defaults(func=_policy_build)

    _register_optional(commands)
    return parser


def _register_optional(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from gateway.decisionlog.cli import register as register_log

    register_log(commands)
    try:
        from gateway.gov.cli import register as register_gov
    except ImportError as exc:
        missing_module = exc.name or "web3"
        missing = commands.add_parser("gov", help="governance (needs the chain extra)")
        missing.set_defaults(func=lambda _args: _missing_extra(missing_module))
    else:
        register_gov(commands)


def _missing_extra(module: str) -> int:
    print(
        f"agora gov needs the chain extra ({module} is missing): "
        "pip install 'agora-gateway[chain]'",
        file=sys.stderr,
    )
    return 2


def _serve(args: argparse.Namespace) -> int:
    from gateway.serving.server import GatewayServer

    GatewayServer(load_settings(args.config), log_level=args.log_level).run()
    return 0


def _quickstart(args: argparse.Namespace) -> int:
    from demo.quickstart import run

    return run(
        gateway_port=args.port,
        admin_port=args.admin_port,
        model_port=args.model_port,
        log_level=args.log_level,
        rpc_port=args.rpc_port,
    )


def _demo_model(args: argparse.Namespace) -> int:
    from demo.model import create_demo_app

    app = create_demo_app(token_delay_s=args.token_delay_ms / 1000)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def _opa_config(args: argparse.Namespace) -> int:
    print(yaml.safe_dump(opa_config(args.gateway_url), sort_keys=False), end="")
    return 0


def _policy_digest(args: argparse.Namespace) -> int:
    print(load_bundle(args.bundle).digest)
    return 0


def _policy_build(args: argparse.Namespace) -> int:
    bundle = load_bundle(args.bundle)
    args.output.write_bytes(build_archive(bundle.files))
    print(json.dumps({"output": str(args.output), "digest": bundle.digest}))
    return 0
