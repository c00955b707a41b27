"""Connecting the chain watcher to the JSON-RPC nodes it reads the registry from.

The chain support (web3) is the ``chain`` extra; a gateway configured with
``governance`` but installed without it says what to install.
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import aiohttp

from gateway.config import Governance, Settings
from gateway.exceptions import ConfigError
from gateway.metrics import GatewayMetrics
from gateway.pinning.source import BundleSource
from gateway.pinning.store import PolicyStore
from gateway.redaction import protect_logs

if TYPE_CHECKING:
    from web3 import Web3

    from gateway.pinning.watcher import RatificationWatcher


async def start_watcher(
    settings: Settings,
    store: PolicyStore,
    http: aiohttp.ClientSession,
    metrics: GatewayMetrics,
) -> RatificationWatcher:
    """Build and start the watcher that activates ratified versions."""
    limit = sys.getrecursionlimit()
    try:
        from gateway.chain.registry import RegistryClient
        from gateway.pinning.watcher import RatificationWatcher
    except ImportError as exc:
        raise ConfigError(
            f"governance needs the chain extra ({exc.name} is missing): "
            "pip install 'agora-gateway[chain]'"
        ) from exc
    finally:
        # web3 loads py_ecc, which raises the recursion limit to 100,000 for pairing code
        # the gateway never runs: a runaway recursion must stay a RecursionError, not a crash.
        sys.setrecursionlimit(limit)
    config: Governance = settings.governance  # type: ignore[assignment]
    urls = [str(url) for url in config.rpc_urls]
    protect_logs(urls, loggers=("agora.ratification",))
    # One thread per node, so that a slow node does not delay the others.
    executor = ThreadPoolExecutor(len(urls), thread_name_prefix="agora-chain")
    registries = [
        RegistryClient(_rpc_web3(url, config.rpc_timeout_s), config.registry or "") for url in urls
    ]
    watcher = RatificationWatcher(
        config, registries, store, BundleSource(http, config.bundle_dir), metrics, executor
    )
    await watcher.start()
    return watcher


def _rpc_web3(url: str, timeout_s: float) -> Web3:
    """A Web3 on ``url`` that does not contact the node yet: a node down at start is not fatal.

    Redirects are not followed: the node that answers is the one configured
    (a redirect's body is not a JSON-RPC answer, so it reads as a failed call).
    Each call is tried once: the next poll is the retry, and a node that hangs
    costs one timeout per call to a round, not web3's backoff on top.
    """
    from web3 import HTTPProvider, Web3

    return Web3(
        HTTPProvider(
            url,
            request_kwargs={"timeout": timeout_s, "allow_redirects": False},
            exception_retry_configuration=None,
        )
    )
