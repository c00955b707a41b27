"""Soak with faults on the governance side: the chain's RPC node and the bundle host.

A gateway under governance reads a dev chain (anvil) through a fault proxy,
and the steady load of test_faults.py runs through it while one fault is held:

- the RPC node refuses connections, or answers slower than ``rpc_timeout_s``;
- the RPC node answers from an older state of the chain (a fork of it taken
  before the version in force was ratified): it reports an older version;
- a new version is ratified while its bundle host serves a tampered bundle.

None of these may change what the gateway enforces: requests keep being
judged by a ratified version and answered, the chain component shows the
fault while it lasts, and once it clears the gateway follows the chain again
(for the tampered bundle: the new version is activated from the true one).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from demo.devchain import Anvil, anvil_binary, ratify_by_vote
from demo.quickstart import start_governance
from gateway.chain.registry import Ratification
from gateway.gov.deploy import Deployment
from gateway.gov.governance import Governance
from gateway.pinning.bundle import build_archive, load_bundle
from tests.integration.conftest import RunningGateway, StartGateway
from tests.reliability.accounting import Figures
from tests.reliability.faults import DELAY, OTHER, REFUSE, Fault, FaultProxy
from tests.reliability.harness import (
    AFTER_S,
    BEFORE_S,
    FAULT_S,
    RATE,
    Observation,
    Run,
    assert_nothing_lost_or_let_through,
    assert_recovered,
    settle,
    soak,
    soak_sections,
)
from tests.security.recording_upstream import RecordingUpstream
from tests.support import ROOT, free_port, wait_for_http

pytestmark = pytest.mark.timeout(120)

RPC_TIMEOUT_S = 1.0


@dataclass
class Chain:
    """The dev chain, its governance, and every digest ratified on it so far."""

    anvil: Anvil
    deployment: Deployment
    workdir: Path
    ratified: list[str] = field(default_factory=list)

    def ratify_new_version(self, uri: Callable[[Path], str] = lambda p: p.as_uri()) -> Path:
        """Ratify a bundle that decides as the default one but has a digest of its own."""
        n = len(self.ratified) + 1
        bundle = self.workdir / f"v{n}"
        shutil.copytree(ROOT / "policies", bundle)
        (bundle / "agora" / "soak.rego").write_text(f"package agora.soak\n\nversion := {n}\n")
        governance = Governance.from_deployment(self.anvil.w3, self.deployment)
        digest = load_bundle(bundle).digest
        ratification: Ratification = ratify_by_vote(
            self.anvil, governance, self.anvil.sender(), digest, uri(bundle), f"soak v{n}"
        )
        self.ratified.append(ratification.digest)
        return bundle

    def gateway_sections(self, rpc_url: str, recorder_url: str, log: Path) -> dict[str, Any]:
        sections = soak_sections(recorder_url, log, self.ratified[0])
        sections["policy"] = {"opa": "managed", "timeout_ms": 1000}
        sections["governance"] = {
            "rpc_urls": [rpc_url],
            "registry": self.deployment.registry,
            "chain_id": self.deployment.chain_id,
            "confirmations": 0,
            "poll_s": 0.5,
            "stale_after_s": 1.5,
            "rpc_timeout_s": RPC_TIMEOUT_S,
        }
        return sections


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    workdir = tmp_path_factory.mktemp("chain")
    anvil = Anvil.start(free_port(), workdir)
    try:
        deployment, ratified = start_governance(anvil, ROOT / "policies")
        yield Chain(anvil, deployment, workdir, [ratified.digest])
    finally:
        anvil.stop()


class Fork:
    """An anvil serving a fork of ``chain`` at ``block``: the chain as it was then."""

    def __init__(self, chain: Chain, block: int) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [anvil_binary(), "--port", str(self.port), "--fork-url", chain.anvil.url,
             "--fork-block-number", str(block)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for_http(f"http://127.0.0.1:{self.port}", status=None)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@dataclass
class BundleHost:
    """An http server on loopback for one ratified bundle: tampered while the fault lasts."""

    chain: Chain
    port: int = field(default_factory=free_port)
    tampered: bool = False
    bundle: Path | None = None
    _runner: web.AppRunner | None = None

    def uri(self, bundle: Path) -> str:
        return f"http://127.0.0.1:{self.port}/{bundle.name}.tar.gz"

    async def open(self) -> None:
        app = web.Application()
        app.router.add_get("/{name}", self._serve)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _serve(self, request: web.Request) -> web.Response:
        assert self.bundle is not None
        files = dict(load_bundle(self.bundle).files)
        if self.tampered:  # the same bundle, with the injection rule gone
            data = "agora/config/data.json"
            files[data] = files[data].replace(b'"prompt-injection"', b'"disabled"')
        return web.Response(body=build_archive(files), content_type="application/gzip")

    async def start(self) -> None:
        """Ratify a new version whose bundle this host serves, tampered."""
        self.tampered = True
        self.bundle = await asyncio.to_thread(self.chain.ratify_new_version, self.uri)

    async def clear(self) -> None:
        self.tampered = False


def chain_warns(before: Observation, now: Observation) -> str | None:
    state = now.component("chain")
    if state not in ("ok", ""):
        detail = str(now.ready["components"]["chain"]["detail"])
        return f"chain component {state}: {detail.split(';')[0].split(':')[0]}"
    return None


def mismatch_counted(before: Observation, now: Observation) -> str | None:
    name = "agora_bundle_verifications_total"
    if now.metric(name, result="mismatch") > before.metric(name, result="mismatch"):
        return f'{name}{{result="mismatch"}} rising'
    return None


@dataclass(frozen=True)
class Scenario:
    name: str
    fault: str


SCENARIOS = [
    Scenario("rpc-down", "chain RPC node refuses connections"),
    Scenario("rpc-slow", f"chain RPC node answers after 2 s (rpc_timeout_s {RPC_TIMEOUT_S:.0f})"),
    Scenario("rpc-older", "chain RPC node answers from before the version in force"),
    Scenario("bundle-tampered", "a new version ratified; its bundle host serves it tampered"),
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_a_chain_or_bundle_host_fault_under_load_changes_nothing_enforced(
    scenario: Scenario,
    chain: Chain,
    tmp_path: Path,
    start_gateway: StartGateway,
    recorder: RecordingUpstream,
) -> None:
    anvil_port = int(chain.anvil.url.rsplit(":", 1)[1])
    proxy = FaultProxy(anvil_port, delay_s=2.0, port=free_port())
    fork: Fork | None = None
    host = BundleHost(chain)
    if scenario.name == "rpc-older":
        behind = int(chain.anvil.w3.eth.block_number)
        chain.ratify_new_version()
        fork = Fork(chain, behind)
        proxy.other_port = fork.port
    in_force = chain.ratified[-1]
    faults: dict[str, tuple[Fault, Callable[[Observation, Observation], str | None]]] = {
        "rpc-down": (proxy.fault(REFUSE), chain_warns),
        "rpc-slow": (proxy.fault(DELAY), chain_warns),
        "rpc-older": (proxy.fault(OTHER), chain_warns),
        "bundle-tampered": (host, mismatch_counted),
    }
    fault, seen = faults[scenario.name]

    sections = chain.gateway_sections(proxy.url, recorder.url, tmp_path / "decisions.jsonl")

    async def run() -> tuple[RunningGateway, Run]:
        await proxy.open()
        await host.open()
        try:
            # In a thread: the gateway reads the chain through the proxy, on this loop.
            gateway = await asyncio.to_thread(start_gateway, **sections)
            recorder.take()
            return gateway, await soak(gateway, fault, seen)
        finally:
            await host.close()
            await proxy.close()

    try:
        gateway, soaked = asyncio.run(run())
    finally:
        if fork is not None:
            fork.stop()
    figures = settle(
        Figures(scenario.name, scenario.fault, f"{RATE:.0f} req/s, mixed",
                BEFORE_S + FAULT_S + AFTER_S),
        soaked, gateway, recorder, chain.ratified,
    )  # fmt: skip
    final = chain.ratified[-1]
    forwarded = [r for r in soaked.results if r.status == 200]
    if scenario.name == "bundle-tampered":
        first_new = min(
            (r.sent_at + r.elapsed for r in forwarded if r.policy_digest == final), default=None
        )
        figures.recovery_s = None if first_new is None else round(first_new - soaked.cleared_at, 2)
    figures.write()

    assert_recovered(soaked)
    assert_nothing_lost_or_let_through(figures, soaked.results)
    assert figures.seen, "neither /readyz nor /metrics showed the fault"
    assert figures.recovery_s is not None, figures.answers
    if scenario.name != "bundle-tampered":
        assert all(r.policy_digest == in_force for r in forwarded), "the version in force changed"
    else:
        assert {r.policy_digest for r in forwarded if r.sent_at < soaked.cleared_at} == {in_force}
        assert forwarded[-1].policy_digest == final, "the true bundle was not activated"
    assert soaked.ready_after.component("chain") == "ok", soaked.ready_after.ready
