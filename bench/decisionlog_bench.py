"""Decision log throughput per durability mode: records per second and submit latency.

    .venv/bin/python bench/decisionlog_bench.py [--records N] [--concurrency C] [--repeat R]

Concurrent producers submit decisions to one writer; the time runs from the
first submit to ``stop()`` returning, with everything on disk. Rows whose submit
returns "after fsync" use ``submit(..., durable=True)``. Each row is the median
run (by records/s) of ``--repeat`` runs, as shared machines are noisy. The last
line times ``verify`` over one of the files. Prints a markdown table; a
measurement, never a pass/fail test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from gateway.config import DecisionLog
from gateway.decisionlog import Decision, DecisionLogWriter, verify

KEY_ENV = {"BENCH_CALLER_KEY": "bench-key-" + "0" * 22}


def decisions(count: int) -> list[Decision]:
    now = datetime.now(UTC)
    return [
        Decision(
            decision_id=f"bench-{i:08d}",
            time=now,
            policy_version=7,
            policy_digest="sha256:" + "ab" * 32,
            caller_sub=f"user-{i % 100}",
            api="chat.completions",
            model="gpt-4o-mini",
            upstream="openai",
            allow=i % 10 != 0,
            reasons=[] if i % 10 else ["model not allowed for group"],
            status=200 if i % 10 else 403,
            latency_us={"auth": 35, "policy": 410, "upstream": 180_000, "total": 180_600},
            input_document={
                "request": {
                    "model": "gpt-4o-mini",
                    "temperature": 0.7,
                    "max_tokens": 256,
                    "messages": [{"role": "user", "content": "Summarise this text. " * 8}],
                },
                "caller": {"sub": f"user-{i % 100}", "groups": ["staff"]},
                "headers": {"user-agent": "bench/1.0"},
            },
        )
        for i in range(count)
    ]


async def run(
    directory: Path, durability: str, durable: bool, count: int, concurrency: int
) -> tuple[float, float, float]:
    """Records per second, and p50 and p99 submit latency in microseconds."""
    path = directory / f"{durability}-{'durable' if durable else 'queued'}.jsonl"
    config = DecisionLog(
        path=path,
        durability=durability,  # type: ignore[arg-type]
        caller_hash_key_env="BENCH_CALLER_KEY",
    )
    writer = DecisionLogWriter(config, environ=KEY_ENV)
    await writer.start()
    batch = decisions(count)
    latencies: list[int] = []

    async def producer(start: int) -> None:
        for i in range(start, count, concurrency):
            began = time.perf_counter_ns()
            await writer.submit(batch[i], durable=durable)
            latencies.append(time.perf_counter_ns() - began)

    began = time.perf_counter()
    await asyncio.gather(*(producer(p) for p in range(concurrency)))
    await writer.stop()
    elapsed = time.perf_counter() - began
    result = verify([path])
    if not result.ok or result.count != count:
        raise SystemExit(f"{path}: log does not verify ({result})")
    cuts = statistics.quantiles(latencies, n=100)
    return count / elapsed, cuts[49] / 1000, cuts[98] / 1000


def machine(directory: Path) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if "model name" in line)
    except (OSError, StopIteration):
        pass
    fs = subprocess.run(
        ["findmnt", "-n", "-o", "FSTYPE,SOURCE", "-T", str(directory)],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    return (
        f"{cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}, log on {' '.join(fs) or 'unknown filesystem'}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=20_000, help="records per row")
    parser.add_argument(
        "--durable-records", type=int, default=5_000, help="records per durable=True row"
    )
    parser.add_argument("--concurrency", type=int, default=64, help="concurrent producers")
    parser.add_argument("--repeat", type=int, default=3, help="runs per row; the median is shown")
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: temp)")
    args = parser.parse_args()
    rows = [
        ("record", False, args.records),
        ("batch", False, args.records),
        ("interval", False, args.records),
        ("record", True, args.durable_records),
        ("batch", True, args.durable_records),
    ]
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        directory = Path(tmp)
        print(f"Machine: {machine(directory)}; {args.concurrency} concurrent producers.\n")
        print("| durability | submit returns | records | records/s | submit p50 | submit p99 |")
        print("|---|---|---:|---:|---:|---:|")
        for durability, durable, count in rows:
            runs = []
            for attempt in range(args.repeat):
                target = directory / str(attempt)
                target.mkdir(exist_ok=True)
                runs.append(await run(target, durability, durable, count, args.concurrency))
            rate, p50, p99 = sorted(runs)[len(runs) // 2]
            waits = "after fsync" if durable else "when queued"
            cells = [durability, waits, str(count), f"{rate:,.0f}"]
            cells += [f"{p50:,.0f} µs", f"{p99:,.0f} µs"]
            print("| " + " | ".join(cells) + " |", flush=True)
        sample = directory / "0" / "batch-queued.jsonl"
        began = time.perf_counter()
        count = verify([sample]).count
        rate = count / (time.perf_counter() - began)
        print(f"\nagora log verify: {rate:,.0f} records/s ({count} records, one file)")


if __name__ == "__main__":
    asyncio.run(main())
