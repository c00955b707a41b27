"""What each side imports: the gateway never loads the demo, agora gov or eth-tester.

Each check runs in a fresh interpreter, so that what the test suite itself
imported does not count.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support import ROOT

NEVER_IN_THE_GATEWAY = ("demo", "gateway.gov", "eth_tester", "eth")
"""The demo, the community's CLI, and eth-tester with py-evm (``eth``)."""
DEFAULT_RECURSION_LIMIT = 1000


def modules_after(*statements: str) -> tuple[set[str], int]:
    """The modules loaded and the recursion limit after running ``statements``."""
    code = "\n".join(
        [
            "import json, sys",
            *statements,
            "print(json.dumps([sorted(sys.modules), sys.getrecursionlimit()]))",
        ]
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    modules, limit = json.loads(result.stdout.splitlines()[-1])
    return set(modules), int(limit)


def under(modules: set[str], *packages: str) -> set[str]:
    return {m for m in modules for p in packages if m == p or m.startswith(p + ".")}


def test_the_gateway_server_imports_no_demo_cli_or_chain_library() -> None:
    modules, limit = modules_after(
        "import gateway.app, gateway.serving.server, gateway.pinning.nodes"
    )
    assert under(modules, *NEVER_IN_THE_GATEWAY, "web3") == set()
    assert limit == DEFAULT_RECURSION_LIMIT


def test_reading_a_chain_loads_web3_but_keeps_the_recursion_limit() -> None:
    modules, limit = modules_after(
        "import asyncio, aiohttp",
        "from gateway.config import Settings",
        "from gateway.pinning.nodes import start_watcher",
        "from gateway.metrics import GatewayMetrics",
        "from gateway.pinning.store import PolicyStore",
        "async def main():",
        "    nodes = {'rpc_urls': ['http://127.0.0.1:9'], 'registry': '0x' + '11' * 20}",
        "    config = {'auth': {'required': False}, 'governance': {**nodes, 'poll_s': 60}}",
        "    settings = Settings.model_validate(config)",
        "    async with aiohttp.ClientSession() as http:",
        "        watcher = await start_watcher(settings, PolicyStore(), http, GatewayMetrics())",
        "        await watcher.stop()",
        "asyncio.run(main())",
    )
    assert "web3" in modules and "gateway.chain.registry" in modules
    assert under(modules, *NEVER_IN_THE_GATEWAY) == set()
    assert limit == DEFAULT_RECURSION_LIMIT


def test_building_the_agora_parser_loads_neither_web3_nor_the_demo() -> None:
    modules, _ = modules_after("import gateway.cli", "gateway.cli.build_parser()")
    assert "gateway.gov.cli" in modules
    assert under(modules, "web3", "demo", "gateway.gov.commands") == set()


def test_the_gov_handlers_do_not_import_the_parser() -> None:
    modules, _ = modules_after("import gateway.gov.commands")
    assert under(modules, "gateway.gov.cli", "demo", "eth_tester", "eth") == set()
