"""A running gateway enforcing what a real Ethereum node ratified.

One ``geth --dev`` node (a block every second) for the whole module, the
contracts deployed once by ``agora gov deploy`` with short voting and timelock
delays, and one gateway configured with ``governance.chain: rpc`` that follows
the registry. The tests run in order and build on each other:

1. version 1 is ratified before the gateway starts: it becomes ready on it;
2. under steady load, version 2 is ratified through ``agora gov propose, vote,
   queue, execute``: the gateway switches with zero failed requests, the switch
   is monotonic, and the headers and the decision log show both versions;
3. version 3 is ratified, but its bundle is changed by one byte after the vote:
   the gateway refuses it and keeps serving version 2 (once the bundle is put
   back, it activates version 3);
4. a second gateway started with no node listening is not ready and fails closed;
5. last, the node is stopped: the gateway keeps the last verified version,
   keeps serving, and reports the chain unreachable, then stale.

Versions 1 and 3 are ratified through the library in-process (each ``agora gov``
command costs a Python start-up); version 2, the one switched to under load,
goes through the CLI.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.chain.registry import Ratification, RegistryClient
from gateway.chain.rpc import connect
from gateway.gov.deploy import Deployment
from gateway.gov.environment import DEPLOYMENT_ENV, PRIVATE_KEY_ENV, RPC_URL_ENV
from gateway.gov.governance import Governance, Support
from gateway.gov.keys import load_account
from gateway.gov.transactions import Sender
from gateway.pinning.bundle import load_bundle
from tests.integration.conftest import DemoModel, RunningGateway, StartGateway
from tests.integration.geth import DEV_CHAIN_ID, GethNode, start_geth
from tests.support import ROOT, free_port, run_agora

pytestmark = pytest.mark.integration

FAST_RULES = ["--voting-delay", "1", "--voting-period", "5", "--timelock-delay", "1"]
STALE_AFTER_S = 4.0
POLL_S = 0.5
CONFIRMATIONS = 1
# The policy section of every gateway here. OPA's answer budget is raised from the
# 100 ms default: on a small, busy CI machine a starved OPA (or gateway) would fail
# requests closed (test_fail_closed.py covers that) and mask what is under test
# here, the switch between ratified versions.
POLICY = {"bundle": str(ROOT / "policies"), "opa": "managed", "timeout_ms": 2000}
# Allowed by every version here (anonymous caps: 256 in v1, 200 in v2, 150 in v3).
CHAT = {
    "model": "demo-small",
    "messages": [{"role": "user", "content": "Hello"}],
    "max_tokens": 16,
}


def chat(max_tokens: int) -> dict[str, Any]:
    return {**CHAT, "max_tokens": max_tokens}


# --- the chain ---------------------------------------------------------------------------


def agora(env: dict[str, str], *args: str) -> Any:
    """``agora ARGS --json`` through the real entry point in a fresh process; its output."""
    result = run_agora(*args, "--json", env=env)
    assert result.returncode == 0, f"agora {' '.join(args)} failed:\n{result.stderr}"
    return json.loads(result.stdout)


@dataclass
class Chain:
    """geth with the contracts deployed, the deployer's CLI environment and library handles."""

    node: GethNode
    env: dict[str, str]
    deployment: Deployment
    governance: Governance
    sender: Sender
    bundle_dir: Path
    workdir: Path

    def ratify(
        self, bundle: Path, uri: str, after_vote: Callable[[], object] | None = None
    ) -> Ratification:
        """The whole lifecycle through the library, in this process (no CLI start-ups)."""
        gov, sender = self.governance, self.sender
        digest = load_bundle(bundle).digest
        pid = gov.propose_ratification(sender, digest, uri).proposal_id
        gov.wait_until(pid, "vote", 60, poll_s=0.2)
        gov.vote(sender, pid, Support.FOR)
        if after_vote is not None:
            after_vote()
        gov.wait_until(pid, "queue", 60, poll_s=0.2)
        gov.queue(sender, pid)
        gov.wait_until(pid, "execute", 60, poll_s=0.2)
        ratification = gov.execute(sender, pid)
        assert ratification is not None and ratification.digest == digest
        return ratification

    def block_time(self, block_number: int) -> int:
        return int(self.node.w3.eth.get_block(block_number)["timestamp"])


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    workdir = tmp_path_factory.mktemp("geth-gateway")
    with start_geth(workdir) as node:
        deployer = node.new_account()
        out = workdir / "deployment.json"
        env = {RPC_URL_ENV: node.url, PRIVATE_KEY_ENV: deployer.key.hex()}
        agora(env, "gov", "deploy", *FAST_RULES, "--out", str(out))
        deployment = Deployment.load(out)
        assert deployment.chain_id == DEV_CHAIN_ID
        w3 = connect(node.url, expected_chain_id=DEV_CHAIN_ID, timeout_s=10)
        bundle_dir = workdir / "bundles"
        bundle_dir.mkdir()
        yield Chain(
            node=node,
            env={**env, DEPLOYMENT_ENV: str(out)},
            deployment=deployment,
            governance=Governance.from_deployment(w3, deployment),
            sender=Sender(w3, load_account(environ=env)),
            bundle_dir=bundle_dir,
            workdir=workdir,
        )


def policy_copy(dest: Path, anonymous_max_tokens: int | None = None) -> Path:
    """A copy of the default policy, with another output-token cap for anonymous callers."""
    shutil.copytree(ROOT / "policies", dest)
    if anonymous_max_tokens is not None:
        data_file = dest / "agora" / "config" / "data.json"
        data = json.loads(data_file.read_text())
        data["max_tokens"]["anonymous"] = anonymous_max_tokens
        data_file.write_text(json.dumps(data, indent=2) + "\n")
    return dest


@pytest.fixture(scope="module")
def v1(chain: Chain) -> Ratification:
    """Version 1 (the default policy), served from the bundle directory keyed by digest.

    Its URI points nowhere: the gateway must find it in ``governance.bundle_dir``.
    """
    digest = load_bundle(ROOT / "policies").digest
    policy_copy(chain.bundle_dir / digest.removeprefix("sha256:"))
    started = time.monotonic()
    ratification = chain.ratify(ROOT / "policies", "https://bundles.invalid/agora-v1.tar.gz")
    print(f"\nversion 1 ratified through the library in {time.monotonic() - started:.1f} s")
    assert ratification.version == 1
    return ratification


@pytest.fixture(scope="module")
def gateway(start_gateway: StartGateway, chain: Chain, v1: Ratification) -> RunningGateway:
    """A gateway following the registry on geth, started once version 1 is ratified."""
    return start_gateway(
        policy=POLICY,
        governance={
            "chain": "rpc",
            "rpc_urls": [chain.node.url],
            "registry": chain.deployment.registry,
            "confirmations": CONFIRMATIONS,
            "poll_s": POLL_S,
            "bundle_dir": str(chain.bundle_dir),
            "stale_after_s": STALE_AFTER_S,
            "rpc_timeout_s": 2,
        },
    )


# --- load and observation -----------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    started: float  # monotonic
    ended: float  # monotonic
    wall_ended: float  # time.time(), to compare with block timestamps
    status: int | None
    version: str | None
    digest: str | None
    error: str | None = None


@dataclass
class Load:
    """Steady load: ``threads`` clients, each sending ``rate`` chat requests a second."""

    url: str
    threads: int = 3
    rate: float = 10.0
    results: list[Result] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Load:
        for n in range(self.threads):
            worker = threading.Thread(target=self._run, name=f"load-{n}", daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(15)

    def _run(self) -> None:
        interval = 1 / self.rate
        with httpx.Client(base_url=self.url, timeout=10) as client:
            tick = time.monotonic()
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    response = client.post("/v1/chat/completions", json=CHAT)
                    result = Result(
                        started, time.monotonic(), time.time(), response.status_code,
                        response.headers.get("x-agora-policy-version"),
                        response.headers.get("x-agora-policy-digest"),
                        None if response.status_code == 200 else response.text[:300],
                    )  # fmt: skip
                except httpx.HTTPError as exc:
                    result = Result(
                        started, time.monotonic(), time.time(), None, None, None, repr(exc)
                    )
                self.results.append(result)
                tick = max(tick + interval, time.monotonic() - interval)
                self._stop.wait(max(0.0, tick - time.monotonic()))

    def snapshot(self) -> list[Result]:
        return sorted(list(self.results), key=lambda r: r.ended)

    def first(self, version: int) -> Result | None:
        """The first response (by completion) that a ``version`` decision let through."""
        return next(
            (r for r in self.snapshot() if r.status == 200 and r.version == str(version)), None
        )

    def wait_for(self, version: int, timeout_s: float) -> Result:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = self.first(version)
            if found is not None:
                return found
            time.sleep(0.05)
        raise AssertionError(f"no response carried version {version} within {timeout_s} s")

    def failures(self) -> list[str]:
        """What went wrong with each request that did not get a 200."""
        return [f"{r.status}: {r.error}" for r in self.snapshot() if r.status != 200]


class MinedWatch:
    """Notes (wall clock, 50 ms resolution) when the registry at the head reaches a version."""

    def __init__(self, node_url: str, registry: str, version: int) -> None:
        self._registry = RegistryClient(connect(node_url, timeout_s=5), registry)
        self._version = version
        self.seen_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mined-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set() and self.seen_at is None:
            current = self._registry.current()
            if current is not None and current.version >= self._version:
                self.seen_at = time.time()
            self._stop.wait(0.05)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


def readyz(gateway: RunningGateway) -> httpx.Response:
    return httpx.get(f"{gateway.admin_url}/readyz", timeout=10)


def wait_until(
    predicate: Callable[[], Any], timeout_s: float, what: str, poll_s: float = 0.1
) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(poll_s)


def chain_component(gateway: RunningGateway) -> dict[str, Any]:
    component: dict[str, Any] = readyz(gateway).json()["components"]["chain"]
    return component


def log_stats(path: Path) -> dict[str, Any]:
    return agora({}, "log", "stats", str(path))  # type: ignore[no-any-return]


# --- the tests, in order ------------------------------------------------------------------


def test_a_gateway_started_after_version_1_enforces_it(
    gateway: RunningGateway, v1: Ratification
) -> None:
    ready = readyz(gateway)
    assert ready.status_code == 200, ready.text
    detail = ready.json()
    assert detail["policy"]["version"] == 1
    assert detail["policy"]["digest"] == v1.digest
    assert detail["policy"]["ratified_block"] == v1.block_number
    assert detail["opa_enforces"] == 1
    assert detail["components"]["chain"] == {
        "state": "ok",
        "detail": "enforcing ratified version 1",
    }
    with gateway.client() as client:
        response = client.post("/v1/chat/completions", json=chat(240))
    assert response.status_code == 200, response.text
    assert response.headers["x-agora-policy-version"] == "1"
    assert response.headers["x-agora-policy-digest"] == v1.digest


def test_the_gateway_switches_to_version_2_under_load_with_no_failed_request(
    gateway: RunningGateway,
    chain: Chain,
    tmp_path_factory: pytest.TempPathFactory,
    v1: Ratification,
) -> None:
    bundle = policy_copy(tmp_path_factory.mktemp("v2") / "policies", anonymous_max_tokens=200)
    digest = load_bundle(bundle).digest
    uri = bundle.as_uri()

    with Load(gateway.url) as load:
        lifecycle_started = time.monotonic()
        pid = str(agora(chain.env, "gov", "propose", "--bundle", str(bundle), "--uri", uri)[
            "proposal_id"
        ])  # fmt: skip
        agora(chain.env, "gov", "vote", pid, "for", "--wait", "60")
        agora(chain.env, "gov", "queue", pid, "--wait", "60")
        mined = MinedWatch(chain.node.url, chain.deployment.registry, 2)
        try:
            executed = agora(chain.env, "gov", "execute", pid, "--wait", "60")
            cli_returned_at = time.time()
            first_v2 = load.wait_for(2, timeout_s=30)
        finally:
            mined.close()
        lifecycle_s = time.monotonic() - lifecycle_started
        time.sleep(2)  # keep the load on after the switch
    results = load.snapshot()
    ratification = executed["ratification"]
    block_time = chain.block_time(ratification["block_number"])

    # Measured first, so that a failure below still reports them.
    served = [r for r in results if r.status == 200]
    first_v2_done = min(r.ended for r in served if r.version == "2")
    last_v1_started = max(r.started for r in served if r.version == "1")
    overlapping = sum(1 for r in served if r.version == "1" and r.ended > first_v2_done)
    rate = len(results) / (results[-1].ended - results[0].started)
    latencies = sorted(r.ended - r.started for r in results)
    around_switch = [
        r.ended - r.started for r in results if abs(r.ended - first_v2_done) < 1.0
    ] or [0.0]
    since_mined = "n/a" if mined.seen_at is None else f"{first_v2.wall_ended - mined.seen_at:.2f} s"
    print(
        f"\nswitch to version 2 under load ({len(results)} requests, {rate:.0f} req/s, "
        f"{CONFIRMATIONS} confirmation(s), 1 s blocks, poll {POLL_S} s):"
        f"\n  propose+vote+queue+execute through agora gov: {lifecycle_s:.1f} s"
        f"\n  execute mined (seen by a 50 ms poller) -> first v2 response: {since_mined}"
        f"\n  execute block timestamp (1 s resolution) -> first v2 response: "
        f"{first_v2.wall_ended - block_time:.2f} s"
        f"\n  agora gov execute returned -> first v2 response: "
        f"{first_v2.wall_ended - cli_returned_at:.2f} s"
        f"\n  v1 responses completing after the first v2 one (in flight across the switch): "
        f"{overlapping}; last v1 request started {first_v2_done - last_v1_started:.3f} s "
        "before the first v2 response completed"
        f"\n  latency: median {latencies[len(latencies) // 2] * 1000:.0f} ms, max "
        f"{latencies[-1] * 1000:.0f} ms; max within 1 s of the switch "
        f"{max(around_switch) * 1000:.0f} ms"
        f"\n  failed requests: {len(results) - len(served)}"
    )

    assert (ratification["version"], ratification["digest"], ratification["uri"]) == (
        2,
        digest,
        uri,
    )
    # Zero failed requests: every response, before, during and after the switch, is a 200.
    assert load.failures() == []
    # Every response names one of the two versions, with its digest.
    assert {(r.version, r.digest) for r in results} == {("1", v1.digest), ("2", digest)}

    # The switch is monotonic. OPA activates a bundle in one transaction and the
    # gateway never goes back to an older version, so a decision taken after a
    # version-2 decision is a version-2 decision. A request that started after
    # another one had completed was decided after it; hence no version-1
    # response may have started after a version-2 response completed. (Requests
    # in flight across the switch may complete in either order, so ordering by
    # completion alone would be too strict.)
    late_v1 = [r for r in results if r.version == "1" and r.started >= first_v2_done]
    assert late_v1 == [], f"{len(late_v1)} requests judged by version 1 after the switch"
    v2_count = sum(1 for r in results if r.version == "2")
    assert v2_count >= 10

    # The new version is visible: a request version 1 allowed is now denied, by version 2.
    with gateway.client() as client:
        probe = client.post("/v1/chat/completions", json=chat(240))
    assert probe.status_code == 403, probe.text
    assert probe.headers["x-agora-policy-version"] == "2"
    assert "max_tokens" in probe.json()["error"]["message"]
    ready = readyz(gateway).json()
    assert (ready["policy"]["version"], ready["policy"]["digest"]) == (2, digest)
    assert ready["opa_enforces"] == 2
    assert ready["components"]["chain"]["detail"] == "enforcing ratified version 2"

    # And the decision log records which version judged each request.
    def both_logged() -> dict[str, Any] | None:
        stats = log_stats(gateway.decision_log)
        versions = stats["by_version"]
        v1_loaded = sum(1 for r in results if r.version == "1")
        if versions.get("2", {}).get("total", 0) < v2_count + 1:
            return None
        assert versions["1"]["digests"] == [v1.digest]
        assert versions["2"]["digests"] == [digest]
        assert versions["1"]["allowed"] >= v1_loaded
        assert versions["2"]["denied"] >= 1
        return stats

    stats = wait_until(both_logged, 10, "the decision log to record both versions", poll_s=0.5)
    print(f"  decision log: {json.dumps({k: v['total'] for k, v in stats['by_version'].items()})}")


def test_a_tampered_bundle_is_refused_and_version_2_keeps_serving(
    gateway: RunningGateway, chain: Chain, tmp_path_factory: pytest.TempPathFactory
) -> None:
    bundle = policy_copy(tmp_path_factory.mktemp("v3") / "policies", anonymous_max_tokens=150)
    digest = load_bundle(bundle).digest
    data_file = bundle / "agora" / "config" / "data.json"
    original = data_file.read_bytes()
    tampered = original.replace(b'"anonymous": 150', b'"anonymous": 151')
    assert len(tampered) == len(original) and tampered.count(b"151") == 1

    with Load(gateway.url, threads=2, rate=5) as load:
        # The community votes on the right digest; then the file at the URI changes.
        ratification = chain.ratify(
            bundle, bundle.as_uri(), after_vote=lambda: data_file.write_bytes(tampered)
        )
        assert ratification.version == 3 and load_bundle(bundle).digest != digest
        refused = wait_until(
            lambda: "digest mismatch" in (c := chain_component(gateway))["detail"] and c,
            30,
            "the gateway to refuse version 3",
        )
        time.sleep(2)  # it keeps refusing, and keeps serving version 2
    results = load.snapshot()

    assert refused["state"] == "warn"
    assert refused["detail"].startswith("ratified version 3 refused: digest mismatch")
    assert digest in refused["detail"] and refused["detail"].endswith("keeping version 2")
    assert load.failures() == [] and len(results) > 10
    assert {r.version for r in results} == {"2"}
    ready = readyz(gateway)
    assert ready.status_code == 200
    assert ready.json()["policy"]["version"] == 2 and ready.json()["opa_enforces"] == 2
    metrics = httpx.get(f"{gateway.admin_url}/metrics").text
    assert 'agora_bundle_verifications_total{result="mismatch"}' in metrics
    with gateway.client() as client:
        response = client.post("/v1/chat/completions", json=chat(180))
    assert response.status_code == 200 and response.headers["x-agora-policy-version"] == "2"

    # The refusal is about the content, not the version: the right bytes are activated.
    data_file.write_bytes(original)
    wait_until(lambda: readyz(gateway).json()["opa_enforces"] == 3, 30, "version 3 to be activated")
    with gateway.client() as client:
        response = client.post("/v1/chat/completions", json=chat(180))
    assert response.status_code == 403 and response.headers["x-agora-policy-version"] == "3"
    assert response.headers["x-agora-policy-digest"] == digest


def test_a_gateway_started_with_the_node_down_is_not_ready_and_fails_closed(
    start_gateway: StartGateway, chain: Chain, demo_model: DemoModel
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    gateway = start_gateway(
        wait_ready=False,
        policy=POLICY,
        governance={
            "chain": "rpc",
            "rpc_urls": [nowhere],
            "registry": chain.deployment.registry,
            "confirmations": CONFIRMATIONS,
            "poll_s": POLL_S,
        },
    )
    component = wait_until(
        lambda: (c := chain_component(gateway))["detail"].startswith("chain unreachable") and c,
        15,
        "the chain to be reported unreachable",
    )
    assert component["state"] == "error"
    assert component["detail"].endswith("no version is active")
    time.sleep(1)  # a few more polls: still nothing
    ready = readyz(gateway)
    assert ready.status_code == 503
    assert ready.json()["policy"] is None
    assert "no verified policy version is active" in ready.json()["reasons"]

    forwarded = demo_model.stats()["requests"]
    with gateway.client() as client:
        responses = [client.post("/v1/chat/completions", json=CHAT) for _ in range(3)]
    for response in responses:
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "policy_unavailable"
        assert response.headers["x-agora-policy-version"] == "none"
    assert demo_model.stats()["requests"] == forwarded


def test_with_the_node_stopped_the_last_verified_version_keeps_serving(
    gateway: RunningGateway, chain: Chain
) -> None:
    """Last: it stops the module's node."""
    with Load(gateway.url, threads=2, rate=5) as load:
        time.sleep(1)
        chain.node.process.stop()
        stopped = time.monotonic()
        unreachable = wait_until(
            lambda: (c := chain_component(gateway))["detail"].startswith("chain unreachable") and c,
            15,
            "the chain to be reported unreachable",
        )
        stale = wait_until(
            lambda: readyz(gateway).json()["stale"],
            STALE_AFTER_S + 10,
            "the policy to be reported stale",
        )
        stale_after = time.monotonic() - stopped
        time.sleep(1)
    results = load.snapshot()

    assert unreachable["state"] == "warn"
    assert unreachable["detail"].endswith("keeping version 3")
    assert stale is True
    assert load.failures() == [] and len(results) > 10
    assert {r.version for r in results} == {"3"}
    ready = readyz(gateway)
    assert ready.status_code == 200, ready.text
    assert ready.json()["policy"]["version"] == 3 and ready.json()["opa_enforces"] == 3
    print(
        f"\nnode stopped: reported stale after {stale_after:.1f} s (stale_after_s {STALE_AFTER_S})"
    )
