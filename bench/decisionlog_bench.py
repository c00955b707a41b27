"""Decision log cost on the request path: the admit call per durability mode, and large inputs.

    .venv/bin/python bench/decisionlog_bench.py [--records N] [--repeat R] [--dir DIR]

1. ``DecisionRecorder.admit`` (the allow decision's record, queued before a
   request is forwarded) at 1 and 32 concurrent submitters, per durability mode:
   admits per second, p50 and p99 of the call, and records per fsync (the
   group-commit size). With ``record`` the call returns once its record is
   fsynced; with ``batch`` and ``interval`` (default ``interval_ms``, 1000),
   once it is queued. Each row is the median run (by admits/s) of ``--repeat``
   runs: shared machines are noisy.
2. The same call for a request of about 1 MB of floats: how long the call
   takes, and the longest stall of the event loop meanwhile (a 1 ms ticker).
3. ``verify`` over one of the files.
4. The writer's own throughput in ``batch`` mode (records built, queued,
   chained, written and fsynced), with the Merkle tree alone and with signed
   checkpoints every 1,000 records (``transparency``), and the cost of
   rebuilding the tree when a writer starts.

Prints markdown; a measurement, never a pass/fail test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import statistics
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.auth import Caller
from gateway.config import DecisionLog, Transparency
from gateway.decisionlog import DecisionEntry, DecisionLogWriter, input_sha256, verify
from gateway.decisionlog.recorder import DecisionRecorder, Outcome
from gateway.metrics import GatewayMetrics
from gateway.pinning.store import PolicyVersion
from gateway.policy.engine import Decision
from gateway.policy.input import RequestFacts
from gateway.transparency.note import Signer

KEY_ENV = "BENCH_CALLER_KEY"
LOG_KEY_ENV = "BENCH_LOG_KEY"
VERSION = PolicyVersion(version=7, digest="sha256:" + "ab" * 32, source="bench", archive=b"")


def request(i: int, body: dict[str, Any] | None = None) -> Outcome:
    """An allowed chat completion as the request path has it when it calls ``admit``."""
    body = body or {
        "model": "gpt-4o-mini",
        "temperature": 0.7,
        "max_tokens": 256,
        "messages": [{"role": "user", "content": "Summarise this text. " * 8}],
    }
    facts = RequestFacts(
        api="chat.completions", model="gpt-4o-mini", stream=False, body=body, method="POST",
        path="/v1/chat/completions", query={}, headers={"user-agent": "bench/1.0"},
        upstream="openai",
    )  # fmt: skip
    return Outcome(
        decision_id=f"bench-{i:08d}",
        facts=facts,
        caller=Caller(authenticated=True, sub=f"user-{i % 100}", claims={"groups": ["staff"]}),
        started_ns=time.perf_counter_ns(),
        auth_ns=35_000,
        policy_ns=410_000,
        decision=Decision(allow=True, reasons=[], version=VERSION),
        input_document={
            "request": {"body": body, "headers": facts.headers},
            "caller": {"sub": f"user-{i % 100}", "groups": ["staff"]},
        },
    )


async def started(path: Path, durability: str) -> DecisionRecorder:
    config = DecisionLog(
        path=path,
        durability=durability,  # type: ignore[arg-type]
        caller_hash_key_env=KEY_ENV,
    )
    recorder = DecisionRecorder(config, GatewayMetrics())
    await recorder.start()
    return recorder


async def admits(
    path: Path, durability: str, count: int, concurrency: int
) -> tuple[float, float, float, float]:
    """Admits per second, p50 and p99 of the call in microseconds, and records per fsync."""
    recorder = await started(path, durability)
    outcomes = [request(i) for i in range(count)]
    latencies: list[int] = []

    async def submitter(start: int) -> None:
        for i in range(start, count, concurrency):
            began = time.perf_counter_ns()
            await recorder.admit(outcomes[i])
            latencies.append(time.perf_counter_ns() - began)
            await asyncio.sleep(0)  # a request does other work before its next decision

    began = time.perf_counter()
    await asyncio.gather(*(submitter(s) for s in range(concurrency)))
    elapsed = time.perf_counter() - began
    await recorder.stop()
    result = verify([path])
    if not result.ok or result.count != count:
        raise SystemExit(f"{path}: log does not verify ({result})")
    cuts = statistics.quantiles(latencies, n=100)
    per_sync = count / max(1, recorder.writer.syncs)
    return count / elapsed, cuts[49] / 1000, cuts[98] / 1000, per_sync


def float_body(size: int, seed: int = 1) -> dict[str, Any]:
    """About ``size`` bytes of JSON: a list of floats of mixed magnitude, as embeddings have."""
    rng = random.Random(seed)
    values = [rng.gauss(0, 1) * 10 ** rng.randint(-6, 2) for _ in range(size // 22)]
    return {"model": "gpt-4o-mini", "input": values}


async def large_input(path: Path) -> tuple[float, float]:
    """The admit call for a ~1 MB float body: its duration and the longest loop stall, in ms."""
    recorder = await started(path, "batch")
    outcome = request(0, float_body(1_000_000))
    stalls: list[float] = []
    running = True

    async def ticker() -> None:
        while running:
            began = time.perf_counter()
            await asyncio.sleep(0.001)
            stalls.append(time.perf_counter() - began - 0.001)

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0.02)
    began = time.perf_counter()
    await recorder.admit(outcome)
    took = time.perf_counter() - began
    running = False
    await tick
    await recorder.stop()
    return took * 1000, max(stalls) * 1000


def entry(i: int, digest: str) -> DecisionEntry:
    """A denied chat completion: one record, as the request path hands it to the writer."""
    return DecisionEntry(
        decision_id=f"bench-{i:08d}", time=datetime.now(UTC), policy_version=7,
        policy_digest=VERSION.digest, caller_sub=f"user-{i % 100}", api="chat.completions",
        model="gpt-4o-mini", upstream="openai", allow=False, reasons=["model not allowed"],
        status=403, latency_us={"auth": 35, "policy": 410, "upstream": 0, "total": 520},
        input_sha256=digest,
    )  # fmt: skip


async def writer_throughput(path: Path, count: int, signed: bool) -> tuple[float, float, float]:
    """Records per second through the writer (submit to fsync, batch mode), records per second
    of this process's CPU time (what a machine with a core free for it would see: the work is
    serialized by the interpreter lock), and the seconds a restarted writer takes to rebuild
    the tree from the files."""
    config = DecisionLog(
        path=path, durability="batch", queue_size=count, caller_hash_key_env=KEY_ENV
    )
    transparency = Transparency(key_env=LOG_KEY_ENV if signed else None)
    digest = input_sha256({"n": 1})
    entries = [entry(i, digest) for i in range(count)]
    writer = DecisionLogWriter(config, transparency=transparency)
    await writer.start()
    began, cpu = time.perf_counter(), time.process_time()
    for i, each in enumerate(entries):
        await writer.submit(each)
        if i % 64 == 0:
            await asyncio.sleep(0)  # let the writer take batches as a live gateway would
    await writer.stop()
    rate = count / (time.perf_counter() - began)
    cpu_rate = count / (time.process_time() - cpu)
    if signed and (
        writer.transparency.latest is None or writer.transparency.latest.checkpoint.size != count
    ):
        raise SystemExit("no checkpoint over the whole log")
    restarted = DecisionLogWriter(config, transparency=transparency)
    began = time.perf_counter()
    await restarted.start()
    rebuild = time.perf_counter() - began
    await restarted.stop()
    return rate, cpu_rate, rebuild


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
    parser.add_argument("--records", type=int, default=2_000, help="admits per row")
    parser.add_argument("--repeat", type=int, default=3, help="runs per row; the median is shown")
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: temp)")
    parser.add_argument(
        "--writer-records", type=int, default=50_000, help="records per writer throughput run"
    )
    parser.add_argument(
        "--only-writer", action="store_true", help="measure the writer's throughput alone (4.)"
    )
    args = parser.parse_args()
    os.environ.setdefault(KEY_ENV, "bench-key-" + "0" * 22)
    os.environ.setdefault(LOG_KEY_ENV, Signer.generate("bench.agora/log").encode())
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        directory = Path(tmp)
        print(f"Machine: {machine(directory)}.\n")
        print("| writer, batch mode | records/s | records per CPU-second | tree rebuilt at start |")
        print("|---|---:|---:|---:|")
        for label, signed in (("tree, no key", False), ("tree + checkpoints/1000", True)):
            runs = []
            for attempt in range(args.repeat):
                path = directory / f"writer-{signed}-{attempt}.jsonl"
                runs.append(await writer_throughput(path, args.writer_records, signed))
            rate, cpu_rate, rebuild = sorted(runs)[len(runs) // 2]
            cells = [label, f"{rate:,.0f}", f"{cpu_rate:,.0f}"]
            cells.append(f"{rebuild:.2f} s for {args.writer_records:,}")
            print("| " + " | ".join(cells) + " |")
        if args.only_writer:
            return
        print()
        print("| durability | admit returns | submitters | admits/s | p50 | p99 | records/fsync |")
        print("|---|---|---:|---:|---:|---:|---:|")
        for durability in ("record", "batch", "interval"):
            for concurrency in (1, 32):
                runs = []
                for attempt in range(args.repeat):
                    path = directory / f"{durability}-{concurrency}-{attempt}.jsonl"
                    runs.append(await admits(path, durability, args.records, concurrency))
                rate, p50, p99, per_sync = sorted(runs)[len(runs) // 2]
                returns = "after fsync" if durability == "record" else "when queued"
                cells = [durability, returns, str(concurrency), f"{rate:,.0f}"]
                cells += [f"{p50:,.0f} µs", f"{p99:,.0f} µs", f"{per_sync:,.1f}"]
                print("| " + " | ".join(cells) + " |", flush=True)
        took, stall = await large_input(directory / "large.jsonl")
        print(f"\nadmit of a ~1 MB float body: {took:,.1f} ms; longest loop stall {stall:,.1f} ms")
        sample = directory / "batch-32-0.jsonl"
        began = time.perf_counter()
        count = verify([sample]).count
        rate = count / (time.perf_counter() - began)
        print(f"agora log verify: {rate:,.0f} records/s ({count} records, one file)")


if __name__ == "__main__":
    asyncio.run(main())
