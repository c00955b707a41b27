"""Crash consistency: SIGKILL at random points under load, again and again, on one decision log.

For each durability mode, a gateway under steady load is killed with SIGKILL
at a random moment (its managed OPA with it, as a pod's containers go), then
started again on the same log, several times over. After each restart the
chain verifies (``agora log verify``; a torn last line is set aside by the
restart). At the end, counted from the upstream's own record and the log:

- ``record``: every request the upstream received has its allow decision on
  disk; nothing was forwarded unlogged;
- ``batch`` and ``interval``: what a kill lost is measured, and it is what
  docs/decision-log.md says a crash can lose: only decisions still in the
  gateway's memory, so only requests sent in the moment before a kill. (A
  power loss, which also loses written records not yet fsynced, is not
  simulated here.)
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
from pathlib import Path

import pytest

from tests.integration.conftest import RunningGateway, StartGateway
from tests.reliability.accounting import Figures, account, log_files, read_log
from tests.reliability.faults import children_named
from tests.reliability.harness import DEADLINE_S, soak_sections
from tests.reliability.load import Load, Result, case_of
from tests.security.recording_upstream import RecordingUpstream
from tests.support import run_agora

pytestmark = pytest.mark.timeout(150)

RATE = 100.0
KILLS = {"record": 5, "batch": 2, "interval": 2}
LOSS_WINDOW_S = 1.0
"""A decision lost by a kill was still in memory: its request was sent at most this long before."""
SEED = int(os.environ.get("AGORA_SOAK_SEED", time.time_ns() % 2**32))


def kill_with_opa(gateway: RunningGateway) -> None:
    """SIGKILL the gateway, and then its managed OPA (orphaned otherwise)."""
    pid = gateway.process.popen.pid
    opa = children_named(pid, "opa")
    gateway.process.popen.send_signal(signal.SIGKILL)
    gateway.process.popen.wait(10)
    for child in opa:
        os.kill(child, signal.SIGKILL)


def verify(log_path: Path) -> str:
    done = run_agora("log", "verify", *map(str, log_files(log_path)))
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.parametrize("durability", list(KILLS))
def test_sigkill_under_load_again_and_again(
    durability: str,
    tmp_path: Path,
    start_gateway: StartGateway,
    recorder: RecordingUpstream,
    ratified_digest: str,
) -> None:
    rng = random.Random(f"{SEED}-{durability}")
    log_path = tmp_path / "decisions.jsonl"
    sections = soak_sections(recorder.url, log_path, ratified_digest)
    sections["decision_log"]["durability"] = durability
    recorder.take()
    results: list[Result] = []
    kills_at: list[float] = []  # on the clock of time.monotonic()
    restarts: list[float] = []
    loaded_s = 0.0

    for _ in range(KILLS[durability]):
        started = time.monotonic()
        gateway = start_gateway(**sections)
        if kills_at:
            restarts.append(time.monotonic() - started)
        verify(log_path)
        kill_at = rng.uniform(0.3, 2.0)
        loaded_s += kill_at
        load = Load(gateway.url, RATE, DEADLINE_S)

        async def cycle(
            load: Load = load, gateway: RunningGateway = gateway, kill_at: float = kill_at
        ) -> list[Result]:
            loading = asyncio.create_task(load.run(kill_at + 0.2))
            await asyncio.sleep(kill_at)
            kills_at.append(time.monotonic())
            kill_with_opa(gateway)
            return await loading

        cycle_results = asyncio.run(cycle())
        for result in cycle_results:  # onto the common clock, to compare with kills_at
            result.sent_at += load.started
        results.extend(cycle_results)

    final = start_gateway(**sections)
    verify(log_path)
    final.process.stop()
    verified = verify(log_path)

    records = read_log(log_files(log_path))
    figures = Figures(
        f"crash-{durability}",
        f"SIGKILL at random moments, {KILLS[durability]} times in a row (durability: {durability})",
        f"{RATE:.0f} req/s, mixed",
        round(loaded_s, 1),
    )
    bodies = [r.body for r in recorder.take().requests]
    account(figures, results, bodies, records, ratified_digest)
    figures.recovery_s = round(max(restarts), 2) if restarts else None
    forwarded_cases = {r.case for r in results} & {
        case_of(b.decode("utf-8", "replace")) for b in bodies
    }
    logged_cases = {case_of(json.dumps(r.get("body"))) for r in records if r.get("allow") is True}
    lost = [r for r in results if r.case in forwarded_cases - logged_cases]
    figures.seen = f"agora log verify after each restart: {verified.splitlines()[0]}; seed {SEED}"
    figures.write()

    assert figures.hung == 0
    assert figures.unjudged == 0
    assert figures.forwarded > 0
    if durability == "record":
        assert figures.lost == 0, f"forwarded without its decision on disk (seed {SEED})"
    else:
        late = [r for r in lost if not any(0 <= k - r.sent_at <= LOSS_WINDOW_S for k in kills_at)]
        assert not late, f"decisions lost that were not in memory at a kill (seed {SEED})"
