"""Soak with faults: steady load through a real gateway while one fault is held midway.

For each fault, one run of 50 requests per second (a mix of plain and streamed
chats and prompt injections the default policy denies) for a few seconds before,
during and after it. Then, counted from the callers, the upstream's own record
and the decision log:

- every request was answered, none past its deadline;
- nothing reached the upstream without an allow decision by the ratified
  version, and everything that reached it is in the log;
- the admin ``/readyz`` or ``/metrics`` showed the fault while it lasted;
- once the fault cleared, the same gateway process answered as before (no
  restart), and its resident memory came back near where it was.

The figures go to docs/reliability.md (see tests/reliability/table.py).
"""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.conftest import RunningGateway, StartGateway
from tests.reliability.accounting import Figures
from tests.reliability.faults import (
    HANG,
    REFUSE,
    RESET,
    DiskFull,
    Fault,
    FaultProxy,
    MountImpossible,
    Signals,
    SlowLoris,
    Tmpfs,
    WriteErrors,
)
from tests.reliability.harness import (
    AFTER_S,
    BEFORE_S,
    FAULT_S,
    RATE,
    Observation,
    Run,
    Seen,
    assert_nothing_lost_or_let_through,
    assert_recovered,
    settle,
    soak,
    soak_sections,
)
from tests.security.recording_upstream import RecordingUpstream
from tests.support import free_port

pytestmark = pytest.mark.timeout(90)

HEADER_TIMEOUT_S = 2.0


# --- what shows a fault ----------------------------------------------------------------------


def unready(before: Observation, now: Observation) -> str | None:
    if now.ready_status == 503 and now.ready.get("reasons"):
        reason = str(now.ready["reasons"][0]).split(";")[0]  # without changing counts
        reason = re.sub(r"\d+", "N", re.sub(r"/\S+", "<path>", reason))
        return f"readyz 503: {reason}"
    return None


def rising(name: str, **labels: str) -> Seen:
    """The metric sample ``name{labels}`` is above its value before the fault."""

    def check(before: Observation, now: Observation) -> str | None:
        if now.metric(name, **labels) > before.metric(name, **labels):
            shown = ",".join(f'{k}="{v}"' for k, v in labels.items())
            return f"{name}{{{shown}}} rising" if shown else f"{name} rising"
        return None

    return check


def upstream_failing(before: Observation, now: Observation) -> str | None:
    for status in ("502", "504"):
        if shown := rising("agora_upstream_duration_seconds_count", status=status)(before, now):
            return shown
    return None


def any_of(*checks: Seen) -> Seen:
    def check(before: Observation, now: Observation) -> str | None:
        for one in checks:
            if shown := one(before, now):
                return shown
        return None

    return check


FAILED_CLOSED = rising("agora_decisions_total", outcome="failed_closed")
OPA_DOWN = any_of(unready, FAILED_CLOSED)
LOG_FAILING = any_of(unready, rising("agora_decision_log_admission_failures_total"))


# --- the faults ------------------------------------------------------------------------------


@dataclass
class Setting:
    """What a fault acts on: the gateway, the proxy before its upstream, the log's directory."""

    gateway: RunningGateway
    proxy: FaultProxy
    log_dir: Path

    def opa_pid(self) -> int:
        detail = str(self.gateway.ready()["components"]["opa"]["detail"])  # "pid N on URL"
        return int(detail.split()[1])

    def gateway_pid(self) -> int:
        return self.gateway.process.popen.pid


@dataclass(frozen=True)
class Scenario:
    name: str
    fault: str
    make: Callable[[Setting], Fault]
    seen: Seen
    instant: bool = False
    """The fault is one event (a kill): recovery is timed from it, not from a clearing."""
    on_tmpfs: bool = False
    """The decision log on a small tmpfs of its own."""


SCENARIOS = [
    Scenario("opa-killed", "OPA killed (SIGKILL); the gateway restarts it",
             lambda s: Signals(s.opa_pid, signal.SIGKILL), OPA_DOWN, instant=True),
    Scenario("opa-paused", "OPA paused (SIGSTOP), resumed (SIGCONT) 4 s later",
             lambda s: Signals(s.opa_pid, signal.SIGSTOP, signal.SIGCONT), OPA_DOWN),
    Scenario("upstream-refusing", "upstream refuses connections (and resets open ones)",
             lambda s: s.proxy.fault(REFUSE), upstream_failing),
    Scenario("upstream-reset", "upstream resets every response mid-body (mid-stream for SSE)",
             lambda s: s.proxy.fault(RESET), upstream_failing),
    Scenario("upstream-hanging", "upstream takes requests and never answers",
             lambda s: s.proxy.fault(HANG), upstream_failing),
    Scenario("log-disk-full", "decision log's filesystem full (8 MiB tmpfs, filled)",
             lambda s: DiskFull(s.log_dir), LOG_FAILING, on_tmpfs=True),
    Scenario("log-read-only", "decision log's writes and fsyncs fail with EROFS",
             lambda s: WriteErrors(s.gateway_pid, s.gateway.decision_log), LOG_FAILING),
    Scenario("slow-loris", "200 slow-loris connections, reopened as soon as they are cut",
             lambda s: SlowLoris(int(s.gateway.url.rsplit(":", 1)[1]), count=200),
             rising("agora_connections_timed_out_total", reason="header_timeout")),
]  # fmt: skip


@pytest.fixture
def log_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """Where the decision log goes: a tmpfs of its own for the disk scenarios."""
    scenario: Scenario = request.getfixturevalue("scenario")
    if not scenario.on_tmpfs:
        yield tmp_path / "log"
        return
    tmpfs = Tmpfs(tmp_path / "log")
    try:
        tmpfs.mount()
    except MountImpossible as exc:
        pytest.skip(f"cannot mount a tmpfs for the decision log here: {exc}")
    try:
        yield tmpfs.path
    finally:
        tmpfs.unmount()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_a_fault_under_load_loses_nothing_lets_nothing_through_and_clears(
    scenario: Scenario,
    log_dir: Path,
    start_gateway: StartGateway,
    recorder: RecordingUpstream,
    ratified_digest: str,
) -> None:
    if scenario.name == "log-read-only" and (why := WriteErrors.available()):
        pytest.skip(why)
    proxy = FaultProxy(int(recorder.url.rsplit(":", 1)[1]), port=free_port())
    gateway = start_gateway(
        **soak_sections(
            proxy.url, log_dir / "decisions.jsonl", ratified_digest,
            limits={"header_timeout_s": HEADER_TIMEOUT_S},
        )
    )  # fmt: skip
    setting = Setting(gateway, proxy, log_dir)
    recorder.take()

    async def run() -> Run:
        await proxy.open()
        try:
            return await soak(
                gateway, scenario.make(setting), scenario.seen, instant=scenario.instant
            )
        finally:
            await proxy.close()

    soaked = asyncio.run(run())
    pid_after = gateway.process.popen.poll()
    figures = settle(
        Figures(scenario.name, scenario.fault, f"{RATE:.0f} req/s, mixed",
                BEFORE_S + FAULT_S + AFTER_S),
        soaked, gateway, recorder, ratified_digest,
    )  # fmt: skip
    figures.write()

    assert pid_after is None, "the gateway process exited"
    assert_recovered(soaked)
    assert_nothing_lost_or_let_through(figures, soaked.results)
    assert figures.seen, "neither /readyz nor /metrics showed the fault"
    assert figures.recovery_s is not None, f"still failing at the end: {figures.answers}"
    assert figures.forwarded > 0.5 * figures.sent * (BEFORE_S + AFTER_S) / (
        BEFORE_S + FAULT_S + AFTER_S
    ), figures
