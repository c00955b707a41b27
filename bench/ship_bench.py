"""Decision log shipping: how fast the sink sends, what gzip saves, what it costs the writer.

    .venv/bin/python bench/ship_bench.py [--records N] [--batch-records B]

1. The writer appends N records (``durability: batch``) with no sink: records/s.
2. The same with a sink running beside it, shipping to a receiver on loopback
   (an aiohttp server in this process, as a collector would be in another):
   the writer's records/s while the sink follows it, and how long after the
   last record the receiver had everything.
3. A sink started on the N records already written (a backlog: a receiver back
   after an outage): records/s shipped, batches, JSON and gzip'd bytes.

Prints markdown; a measurement, never a pass/fail test.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import platform
import tempfile
import time
from pathlib import Path

from aiohttp import web

from gateway.config import DecisionLog, LogShip
from gateway.decisionlog import DecisionLogWriter
from gateway.decisionlog.ship import LogShipper
from tests.support import free_port
from tests.unit.decisionlog.samples import decision, refusal

ENV = {"AGORA_BENCH_CALLER_KEY": "k" * 32}


class Receiver:
    def __init__(self) -> None:
        self.port = free_port()
        self.wire_bytes = 0
        self.json_bytes = 0
        self.batches = 0

    async def upload(self, request: web.Request) -> web.Response:
        raw = await request.content.read()
        self.wire_bytes += len(raw)
        self.json_bytes += len(gzip.decompress(raw))
        self.batches += 1
        return web.Response(status=204)


async def write(writer: DecisionLogWriter, count: int) -> float:
    started = time.perf_counter()
    for i in range(count):
        await writer.submit(refusal(i) if i % 3 == 0 else decision(i))
    return count / (time.perf_counter() - started)


async def caught_up(shipper: LogShipper, seq: int) -> None:
    while shipper.shipped_seq < seq:  # noqa: ASYNC110 (polling the sink from outside)
        await asyncio.sleep(0.01)


async def writer_run(path: Path, ship: LogShip | None, records: int) -> str:
    """One row: the writer's rate, alone or with a sink following it."""
    config = DecisionLog(path=path, caller_hash_key_env="AGORA_BENCH_CALLER_KEY")
    writer = DecisionLogWriter(config, environ=ENV)
    await writer.start()
    shipper = None
    if ship is not None:
        shipper = LogShipper(ship, path, decision_path="agora/main", head=lambda: writer.count)
        await shipper.start()
    rate = await write(writer, records)
    written_at = time.perf_counter()
    await writer.stop()
    if shipper is None:
        return f"| writer alone | {rate:,.0f} | |"
    await caught_up(shipper, records)
    behind = time.perf_counter() - written_at
    await shipper.stop()
    return (
        f"| writer with a sink following it | {rate:,.0f} | "
        f"receiver complete {behind:.2f} s after the last write |"
    )


async def main(records: int, batch_records: int) -> None:
    receiver = Receiver()
    app = web.Application(client_max_size=64 << 20)
    app.router.add_post("/", receiver.upload)
    runner = web.AppRunner(app, auto_decompress=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", receiver.port).start()
    url = f"http://127.0.0.1:{receiver.port}/"
    ship = LogShip.model_validate({"url": url, "batch_records": batch_records, "interval_s": 0.05})
    with tempfile.TemporaryDirectory() as tmp:
        rows = [
            await writer_run(Path(tmp) / "alone" / "decisions.jsonl", None, records),
            await writer_run(Path(tmp) / "shipped" / "decisions.jsonl", ship, records),
        ]
        # A backlog: everything written, then a sink starts.
        receiver.wire_bytes = receiver.json_bytes = receiver.batches = 0
        backlog = LogShipper(
            ship.model_copy(update={"state_path": Path(tmp) / "backlog.json"}),
            Path(tmp) / "shipped" / "decisions.jsonl",
            decision_path="agora/main",
            head=lambda: records,
        )
        started = time.perf_counter()
        await backlog.start()
        await caught_up(backlog, records)
        elapsed = time.perf_counter() - started
        await backlog.stop()
    await runner.cleanup()
    rows.append(
        f"| sink over a backlog of {records:,} | {records / elapsed:,.0f} shipped | "
        f"{receiver.batches} batches, {receiver.json_bytes / records:,.0f} B of JSON per event, "
        f"gzip'd to {receiver.wire_bytes / receiver.json_bytes:.0%} |"
    )
    machine = platform.processor() or platform.machine()
    print(
        f"{records:,} records, batch_records {batch_records}, {machine}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}\n"
    )
    print("| run | records/s | |\n|---|---:|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--batch-records", type=int, default=500)
    options = parser.parse_args()
    asyncio.run(main(options.records, options.batch_records))
