"""Rolling restart: two gateways behind a loopback balancer, each restarted in turn under load.

The balancer is what a Service or a load balancer does, reduced to its core: it
sends each connection to a ready backend, in turn (it reads each backend's
public ``/readyz`` every 100 ms), and when a connection to one is refused it
tries the other. Each gateway in turn gets SIGTERM (it stops accepting,
finishes what it has, flushes its log and exits) and is started again on the
same ports and log, while the load goes on, a new connection per request. No
request may fail, and both logs together account for everything forwarded.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.conftest import RunningGateway, StartGateway
from tests.reliability.accounting import Figures, account, log_files, read_log
from tests.reliability.harness import DEADLINE_S, RATE, soak_sections
from tests.reliability.load import Load
from tests.security.recording_upstream import RecordingUpstream
from tests.support import free_port

pytestmark = pytest.mark.timeout(120)

WARM_S = 2.0
SETTLE_S = 2.0


@dataclass
class Balancer:
    """A TCP balancer on loopback over ``backends`` (public ports), ready ones first."""

    backends: list[int]
    port: int = 0
    ready: dict[int, bool] = field(default_factory=dict)
    routed: dict[int, int] = field(default_factory=dict)
    retried: int = 0
    _server: asyncio.Server | None = None
    _poller: asyncio.Task[None] | None = None
    _next: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        self._poller = asyncio.create_task(self._poll())

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        if self._server is not None:
            self._server.close()

    async def _poll(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.5)) as session:
            while True:
                for port in self.backends:
                    try:
                        async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                            self.ready[port] = response.status == 200
                    except (aiohttp.ClientError, TimeoutError):
                        self.ready[port] = False
                await asyncio.sleep(0.1)

    def _order(self) -> list[int]:
        self._next += 1
        turn = (
            self.backends[self._next % len(self.backends) :]
            + self.backends[: self._next % len(self.backends)]
        )
        return sorted(turn, key=lambda port: not self.ready.get(port, False))

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        for attempt, port in enumerate(self._order()):
            try:
                upstream = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                continue
            self.retried += attempt > 0
            self.routed[port] = self.routed.get(port, 0) + 1
            break
        if upstream is None:
            client_w.close()
            return
        upstream_r, upstream_w = upstream
        await asyncio.gather(_pipe(client_r, upstream_w), _pipe(upstream_r, client_w))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


def fixed_ports() -> dict[str, Any]:
    """Listener sections with ports chosen now, so that a restart binds the same ones."""
    return {
        "listen": {"host": "127.0.0.1", "port": free_port()},
        "admin": {"listen": {"host": "127.0.0.1", "port": free_port()}},
        "bundle_service": {"listen": {"host": "127.0.0.1", "port": free_port()}},
    }


def test_a_rolling_restart_under_load_fails_no_request(
    tmp_path: Path,
    start_gateway: StartGateway,
    recorder: RecordingUpstream,
    ratified_digest: str,
) -> None:
    configs = [
        {**soak_sections(recorder.url, tmp_path / name / "decisions.jsonl", ratified_digest),
         **fixed_ports()}
        for name in ("a", "b")
    ]  # fmt: skip
    gateways = [start_gateway(**config) for config in configs]
    recorder.take()
    restarts: list[float] = []

    async def restart(index: int) -> None:
        """SIGTERM, wait for the exit (drained), start again; time until ready."""
        old: RunningGateway = gateways[index]
        started = time.monotonic()
        await asyncio.to_thread(old.process.stop, 40.0)
        gateways[index] = await asyncio.to_thread(start_gateway, **configs[index])
        restarts.append(time.monotonic() - started)

    async def run() -> tuple[list[Any], Balancer]:
        balancer = Balancer([int(g.url.rsplit(":", 1)[1]) for g in gateways])
        await balancer.open()
        await asyncio.sleep(0.3)  # first readiness poll
        try:
            load = Load(balancer.url, RATE, DEADLINE_S, fresh_connections=True)
            loading = asyncio.create_task(load.run(60.0))
            await asyncio.sleep(WARM_S)
            for index in range(len(gateways)):
                await restart(index)
                await asyncio.sleep(SETTLE_S)
            load.stop()
            return await loading, balancer
        finally:
            await balancer.close()

    results, balancer = asyncio.run(run())
    for gateway in gateways:
        gateway.process.stop()
    records = read_log([p for g in gateways for p in log_files(g.decision_log)])
    duration = max(r.sent_at for r in results)
    figures = Figures(
        "rolling-restart",
        "two gateways behind a loopback balancer, each restarted in turn (SIGTERM, start again)",
        f"{RATE:.0f} req/s, mixed, a connection per request",
        round(duration, 1),
    )
    account(figures, results, [r.body for r in recorder.take().requests], records, ratified_digest)
    figures.recovery_s = round(max(restarts), 2)
    figures.seen = (
        f"connections routed {sorted(balancer.routed.values())}, "
        f"{balancer.retried} retried on the other backend"
    )
    figures.write()

    failed = [
        (r.kind.name, r.status, r.error, round(r.sent_at, 2)) for r in results if not r.as_expected
    ]
    assert not failed, figures.answers
    assert figures.answered == figures.sent
    assert figures.unjudged == 0 and figures.lost == 0
    assert all(count > 0 for count in balancer.routed.values())
