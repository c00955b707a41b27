"""One soak run: steady load on a gateway, a fault held midway, and what the gateway showed.

The gateway under test is a real ``agora serve`` (managed OPA, the default
policy pinned by digest) in front of the recording upstream, reached through a
fault proxy; its decision log keeps judged bodies, so each forwarded request
can be traced to its decision. While the fault lasts, the admin ``/readyz`` and
``/metrics`` are read every quarter second, and the run notes what they showed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import RunningGateway
from tests.reliability.accounting import Figures, account, log_files, read_log, recovery_after
from tests.reliability.faults import Fault, during, rss_bytes
from tests.reliability.load import Load, Result
from tests.security.recording_upstream import RecordingUpstream
from tests.support import ROOT

RATE = 50.0
"""Requests per second: modest, so that a shared 2-core machine keeps up with the test itself."""
BEFORE_S, FAULT_S, AFTER_S = 2.0, 4.0, 4.0
DEADLINE_S = 6.0
"""Each request's own deadline: above every timeout of the gateway on the way (policy 1 s,
upstream read 1.5 s), so that only a gateway that hangs makes a request miss it."""
UPSTREAM_READ_S = 1.5


def soak_sections(upstream_url: str, log_path: Path, digest: str, **extra: Any) -> dict[str, Any]:
    """Configuration sections of a gateway under soak (see ``start_gateway``)."""
    sections: dict[str, Any] = {
        "upstreams": [
            {
                "name": "recorder",
                "url": upstream_url,
                "models": ["demo-*"],
                "timeout": {"connect": 1.0, "read": UPSTREAM_READ_S},
            }
        ],
        "policy": {
            "bundle": str(ROOT / "policies"),
            "opa": "managed",
            "version": 1,
            "pinned_digest": digest,
            "timeout_ms": 1000,
        },
        "decision_log": {"path": str(log_path), "durability": "record", "include_body": True},
    }
    sections.update(extra)
    return sections


@dataclass
class Observation:
    """The admin listener's readiness and metrics at one moment."""

    ready_status: int
    ready: dict[str, Any]
    metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float]

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` whose labels include ``labels``."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.metrics.items() if n == name and wanted <= set(ls))

    def component(self, name: str) -> str:
        return str(self.ready.get("components", {}).get(name, {}).get("state", ""))


async def observe(session: aiohttp.ClientSession, admin_url: str) -> Observation | None:
    """Read the admin ``/readyz`` and ``/metrics``; None if the gateway does not answer."""
    try:
        async with session.get(f"{admin_url}/readyz") as response:
            status, ready = response.status, await response.json()
        async with session.get(f"{admin_url}/metrics") as response:
            text = await response.text()
    except (aiohttp.ClientError, TimeoutError):
        return None
    metrics = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    return Observation(status, ready, metrics)


Seen = Callable[[Observation, Observation], str | None]
"""Given the previous observation and the current one: what shows the fault now, if anything
(a state, or a counter that rose since the previous look)."""


@dataclass
class Run:
    """What a soak run measured, before the accounting."""

    results: list[Result]
    cleared_at: float
    seen: list[str] = field(default_factory=list)
    shown_until: float | None = None
    """When the fault was last shown after it cleared (load clock); None: not shown after."""
    rss_before: int = 0
    rss_after: int = 0
    ready_after: Observation | None = None


async def soak(
    gateway: RunningGateway,
    fault: Fault,
    seen: Seen,
    *,
    rate: float = RATE,
    before_s: float = BEFORE_S,
    fault_s: float = FAULT_S,
    after_s: float = AFTER_S,
    instant: bool = False,
) -> Run:
    """Load for ``before_s + fault_s + after_s`` seconds, with ``fault`` held in the middle.

    Recovery is timed from the fault's clearing, or with ``instant`` (a kill) from its start.
    """
    load = Load(gateway.url, rate, DEADLINE_S)
    loading = asyncio.create_task(load.run(before_s + fault_s + after_s))
    pid = gateway.process.popen.pid
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as admin:
        await asyncio.sleep(before_s)
        baseline = await observe(admin, gateway.admin_url)
        assert baseline is not None and baseline.ready_status == 200, "not ready before the fault"
        rss_before = rss_bytes(pid)
        shown: list[str] = []
        previous = baseline

        async def tick() -> None:
            nonlocal previous
            now = await observe(admin, gateway.admin_url)
            if now is not None:
                if (what := seen(previous, now)) and what not in shown:
                    shown.append(what)
                previous = now

        fault_at = load.now()
        await during(fault, fault_s, tick)
        cleared_at = fault_at if instant else load.now()
        shown_until = None
        while not loading.done():  # how long the fault stays shown once cleared
            now = await observe(admin, gateway.admin_url)
            if now is not None:
                if seen(previous, now):
                    shown_until = load.now()
                previous = now
            await asyncio.sleep(0.25)
        results = await loading
        ready_after = await wait_ready(admin, gateway.admin_url)
        rss_after = rss_bytes(pid)
    return Run(results, cleared_at, shown, shown_until, rss_before, rss_after, ready_after)


async def wait_ready(
    session: aiohttp.ClientSession, admin_url: str, timeout_s: float = 15.0
) -> Observation | None:
    """The first ready observation within ``timeout_s``; None if the gateway never got ready."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now = await observe(session, admin_url)
        if now is not None and now.ready_status == 200:
            return now
        await asyncio.sleep(0.1)
    return None


def settle(
    figures: Figures,
    run: Run,
    gateway: RunningGateway,
    recorder: RecordingUpstream,
    ratified: str | Collection[str],
) -> Figures:
    """Stop the gateway (flushing its log), then count from the three sides."""
    gateway.process.stop()
    answers_back = recovery_after(run.results, run.cleared_at)
    if answers_back is not None:
        shown = 0.0 if run.shown_until is None else run.shown_until - run.cleared_at
        figures.recovery_s = round(max(answers_back, shown), 2)
    bodies = [r.body for r in recorder.take().requests]
    records = read_log(log_files(gateway.decision_log))
    account(figures, run.results, bodies, records, ratified)
    figures.seen = "; ".join(run.seen)
    return figures


RSS_SLACK = 1.5
"""Resident memory after recovery may be at most this times the baseline (plus 32 MiB)."""


def assert_recovered(run: Run) -> None:
    """The same gateway process answers again, ready, its memory back near its baseline."""
    assert run.ready_after is not None, "not ready again after the fault cleared"
    assert run.rss_after <= run.rss_before * RSS_SLACK + 32 * 2**20, (
        f"resident memory {run.rss_before} bytes before the fault, {run.rss_after} after"
    )


def assert_nothing_lost_or_let_through(figures: Figures, results: Sequence[Result]) -> None:
    """The invariants of every soak run, fault or not."""
    assert figures.hung == 0, f"{figures.hung} requests passed their deadline unanswered"
    assert figures.answered == figures.sent, figures.answers
    assert figures.unjudged == 0, "forwarded without an allow decision by the ratified version"
    assert figures.lost == 0, "forwarded, and not in the decision log"
    denied_forwarded = [r for r in results if r.kind.expect == 403 and r.status == 200]
    assert not denied_forwarded
