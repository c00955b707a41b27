"""Connecting the gateway to governance: an RPC node's registry, or the embedded chain.

The chain support (web3, eth-tester) is the ``chain`` extra; a gateway configured
with ``governance`` but installed without it says what to install.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
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

    from gateway.gov.deploy import Deployment
    from gateway.pinning.watcher import RatificationWatcher


@dataclass(frozen=True)
class EmbeddedGovernance:
    """The in-process chain of ``governance.chain: embedded``, and where its contracts are.

    Every use of ``w3`` must go through ``executor`` (one thread): eth-tester is not thread-safe.
    """

    w3: Web3
    deployment: Deployment
    executor: ThreadPoolExecutor


async def start_watcher(
    settings: Settings,
    store: PolicyStore,
    http: aiohttp.ClientSession,
    metrics: GatewayMetrics,
) -> tuple[RatificationWatcher, EmbeddedGovernance | None]:
    """Build and start the watcher that activates ratified versions."""
    try:
        from gateway.chain.registry import RegistryClient
        from gateway.pinning.watcher import RatificationWatcher
    except ImportError as exc:
        raise ConfigError(
            f"governance needs the chain extra ({exc.name} is missing): "
            "pip install 'agora-gateway[chain]'"
        ) from exc
    config: Governance = settings.governance  # type: ignore[assignment]
    urls = [str(url) for url in config.rpc_urls]
    protect_logs(urls, loggers=("agora.ratification",))
    # One thread per node, so that a slow node does not delay the others; the
    # embedded chain is not thread-safe and gets exactly one.
    executor = ThreadPoolExecutor(max(len(urls), 1), thread_name_prefix="agora-chain")
    embedded: EmbeddedGovernance | None = None
    if config.chain == "embedded":
        embedded = await _start_embedded(settings, executor)
        registries = [RegistryClient(embedded.w3, embedded.deployment.registry)]
    else:
        registries = [
            RegistryClient(_rpc_web3(url, config.rpc_timeout_s), config.registry or "")
            for url in urls
        ]
    watcher = RatificationWatcher(
        config, registries, store, BundleSource(http, config.bundle_dir), metrics, executor
    )
    await watcher.start()
    return watcher, embedded


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


async def _start_embedded(settings: Settings, executor: ThreadPoolExecutor) -> EmbeddedGovernance:
    """Deploy the contracts in-process and ratify the configured bundle through a real vote."""
    from gateway.chain.demo import start_embedded_governance

    bundle = settings.policy.bundle.resolve()
    loop = asyncio.get_running_loop()
    w3, deployment, _ = await loop.run_in_executor(
        executor, start_embedded_governance, bundle, bundle.as_uri()
    )
    return EmbeddedGovernance(w3, deployment, executor)
