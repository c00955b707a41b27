"""What counting usage costs on the request path, in the process and in Redis.

    .venv/bin/python bench/usage_bench.py [--charges 5000] [--concurrency 32]
    .venv/bin/python bench/usage_bench.py --end-to-end [--duration 4]

Measures ``UsageLedger.charge`` (what each request awaits before policy is
asked: count it, read what was used) for an anonymous caller (1 subject x 2
windows) and a member (its sub and one group x 2 windows), with local counters
and with a redis-server started on a loopback port (the `redis-server` binary;
scripts/install-tools.sh redis). One caller at a time gives the latency of one
charge (p50, p99); ``--concurrency`` callers at once give the throughput, and
the CPU the gateway's process spends per charge, in Python (user) and in the
kernel (system: the loopback socket's work is charged to the sender). The
tokens added after each answer are written in the background and counted in
the CPU figures too.

``--end-to-end`` measures the whole gateway instead (bench/proxy_overhead.py's
gateway, model and load client; a member's token): without counting
(``usage.enabled: false``), counting in the process, and counting in Redis,
each at 1 connection (latency) and 32 (throughput, the gateway's CPU per
request).

Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import proxy_overhead as po

from gateway.auth import ANONYMOUS, Caller
from gateway.config import Usage
from gateway.metrics import GatewayMetrics
from gateway.usage.counters import Tokens
from gateway.usage.ledger import UsageLedger

MEMBER = Caller(True, "bench-user", "https://issuer", {"groups": ["members"]})


@contextmanager
def redis_server() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed: scripts/install-tools.sh redis")
    port = po.free_port()
    with tempfile.TemporaryDirectory(prefix="agora-usage-bench-") as workdir:
        args = [binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", workdir,
                "--save", "", "--appendonly", "no"]  # fmt: skip
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            process.wait(10)


async def measure(
    config: Usage, caller: Caller, charges: int, concurrency: int
) -> dict[str, float]:
    ledger = UsageLedger(config, GatewayMetrics())
    await ledger.start()
    try:
        for _ in range(200):  # warm-up: connections, code paths
            await ledger.charge(caller)
        latencies = []
        for _ in range(charges):
            started = time.perf_counter_ns()
            charge = await ledger.charge(caller)
            latencies.append((time.perf_counter_ns() - started) / 1000)
            ledger.add_tokens(charge, Tokens(20, 30))
        latencies.sort()

        async def worker(count: int) -> None:
            for _ in range(count):
                charge = await ledger.charge(caller)
                ledger.add_tokens(charge, Tokens(20, 30))

        before, wall = os.times(), time.perf_counter()
        await asyncio.gather(*(worker(charges // concurrency) for _ in range(concurrency)))
        done = charges // concurrency * concurrency
        elapsed = time.perf_counter() - wall
        after = os.times()
        user_us = (after.user - before.user) / done * 1e6
        system_us = (after.system - before.system) / done * 1e6
    finally:
        await ledger.stop()
    return {
        "p50": statistics.median(latencies),
        "p99": latencies[int(len(latencies) * 0.99)],
        "rate": done / elapsed,
        "user": user_us,
        "system": system_us,
    }


async def run(args: argparse.Namespace) -> None:
    rows = []
    with redis_server() as url:
        for where, config in (
            ("local", Usage()),
            ("redis", Usage(redis_url=url, timeout_ms=1000)),
        ):
            for name, caller in (("anonymous", ANONYMOUS), ("member + 1 group", MEMBER)):
                result = await measure(config, caller, args.charges, args.concurrency)
                rows.append((where, name, result))
    print(f"charges: {args.charges} one at a time, then {args.concurrency} at once; "
          f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs\n")  # fmt: skip
    print("| counters | caller | p50 | p99 | charges/s at once | CPU per charge: user + system |")
    print("|---|---|---:|---:|---:|---:|")
    for where, name, r in rows:
        print(
            f"| {where} | {name} | {r['p50']:.0f} µs | {r['p99']:.0f} µs "
            f"| {r['rate']:,.0f} | {r['user']:.0f} + {r['system']:.0f} µs |"
        )


def end_to_end(args: argparse.Namespace) -> None:
    """The gateway without counting, counting locally, counting in Redis."""
    workdir = Path(tempfile.mkdtemp(prefix="agora-usage-e2e-"))
    model = po.start_model(workdir)
    rows = []
    try:
        with redis_server() as url:
            for label, usage in (
                ("not counted", {"enabled": False}),
                ("local", {}),
                ("redis", {"redis_url": url}),
            ):
                gwdir = workdir / label.replace(" ", "-")
                gwdir.mkdir()
                group = po.start_gateway(gwdir, model, "gateway", ["gateway-jwt"], usage)
                try:
                    (target,) = group.targets
                    one = po.measure(target, 1, 1.0, args.duration, model.pid)
                    many = po.measure(target, args.concurrency, 1.0, args.duration, model.pid)
                finally:
                    for server in group.servers:
                        server.stop()
                rows.append((label, one, many))
    finally:
        model.stop()
    print(f"end to end: {args.duration:g} s per cell after 1 s of warm-up; {po.machine_line()}\n")
    print(f"| usage | p50 at 1 | p99 at 1 | req/s at {args.concurrency} "
          f"| gateway CPU per request | non-200 |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|")
    for label, one, many in rows:
        print(
            f"| {label} | {one.p('p50'):.2f} ms | {one.p('p99'):.2f} ms | {many.rps:,.0f} "
            f"| {many.cpu_us.get('proxy', 0):.0f} µs | {one.non_200 + many.non_200} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--charges", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--end-to-end", action="store_true")
    parser.add_argument("--duration", type=float, default=4.0)
    args = parser.parse_args()
    if args.end_to_end:
        end_to_end(args)
    else:
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
