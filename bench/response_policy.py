"""What response policy costs a streamed answer: time to first token and throughput, per mode.

    .venv/bin/python bench/response_policy.py [--requests 30] [--duration 6]
        [--concurrency 16] [--chunks 125] [--chunk-chars 8] [--delay-ms 1]
        [--checkpoint-chars 200] [--output FILE | --no-write]

One run, side by side, against the integration tests' stand-in model
(``python -m tests.stand_in_model``, which streams exactly the answer asked
for: ``--chunks`` pieces of ``--chunk-chars`` characters, ``--delay-ms``
apart):

- ``direct``: the model itself;
- ``no-rules``: the gateway with ``policy.response_path`` at a path the
  default bundle does not define (no response judging: the relay as before);
- ``holdback``: the default bundle's response rule, ``response.holdback: true``;
- ``no-holdback``: the same with ``response.holdback: false``.

Each gateway: managed OPA, the default bundle, decision log ``durability:
batch``, anonymous callers. Latency: ``--requests`` streams one after another,
median and p90 of the time to the first byte of answer text (not the role
chunk) and of the whole stream. Throughput: ``--concurrency`` streams at once
for ``--duration`` seconds, completed streams per second, and the streams that
failed, by reason (an HTTP status, or the type of the error event that ended
the stream). Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import proxy_overhead as po

MODES = ("direct", "no-rules", "holdback", "no-holdback")
FIRST_TEXT = re.compile(rb'"content": "[^"]')
ERROR_TYPE = re.compile(rb'"error": ?\{.*?"type": ?"([a-z_]+)"')
BODY = {
    "model": "demo-small",
    "messages": [{"role": "user", "content": "Tell me a long story."}],
    "stream": True,
}


@dataclass
class Result:
    mode: str
    ttft_ms: list[float]
    total_ms: list[float]
    streams_per_s: float
    failures: Counter[str]


def start_model(workdir: Path) -> po.Server:
    port = po.free_port()
    args = [sys.executable, "-m", "tests.stand_in_model", "--port", str(port)]
    model = po.start_server("model", args, port, workdir)
    po.wait_ready(model, "/v1/models")
    return model


def start_gateway(workdir: Path, model: po.Server, mode: str, checkpoint: int) -> po.Server:
    gwdir = workdir / mode
    gwdir.mkdir()
    port = po.free_port()
    policy: dict[str, Any] = {"bundle": str(po.ROOT / "policies"), "opa": "managed", "version": 1}
    if mode == "no-rules":
        policy["response_path"] = "agora/no_response_rules"
    config = {
        "listen": {"host": "127.0.0.1", "port": port},
        "admin": {"listen": {"host": "127.0.0.1", "port": po.free_port()}},
        "bundle_service": {"listen": {"host": "127.0.0.1", "port": po.free_port()}},
        "upstreams": [{"name": "demo", "url": model.url, "models": ["demo-*"]}],
        "policy": policy,
        "auth": {"required": False},
        "decision_log": {"path": str(gwdir / "decisions.jsonl"), "durability": "batch"},
        "response": {"checkpoint_chars": checkpoint, "holdback": mode != "no-holdback"},
    }
    config_file = gwdir / "agora.yaml"
    config_file.write_text(json.dumps(config, indent=2))  # JSON is YAML
    args = [sys.executable, "-m", "gateway", "serve", "--config", str(config_file)]
    gateway = po.start_server(mode, args, port, gwdir)
    po.wait_ready(gateway, "/readyz")
    return gateway


async def one_stream(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str]
) -> tuple[float, float]:
    """Time to the first answer text and to the end of the stream, in ms; raises on failure."""
    started = time.perf_counter()
    first = None
    tail = b""
    async with session.post(url, json=BODY, headers=headers) as response:
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}")
        async for chunk in response.content.iter_any():
            if first is None and FIRST_TEXT.search(tail + chunk):
                first = time.perf_counter()
            tail = (tail + chunk)[-1024:]
    if first is None or not tail.endswith(b"data: [DONE]\n\n"):
        error = ERROR_TYPE.search(tail)
        raise RuntimeError(error.group(1).decode() if error else "no [DONE]")
    return (first - started) * 1000, (time.perf_counter() - started) * 1000


async def measure(mode: str, url: str, args: argparse.Namespace) -> Result:
    answer = {"text": "x" * (args.chunks * args.chunk_chars), "chunk_chars": args.chunk_chars}
    headers = {"X-Demo-Answer": json.dumps(answer), "X-Demo-Delay-Ms": str(args.delay_ms)}
    url += "/v1/chat/completions"
    ttft: list[float] = []
    total: list[float] = []
    failures: Counter[str] = Counter()
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(3):  # warm-up
            await one_stream(session, url, headers)
        for _ in range(args.requests):
            first, whole = await one_stream(session, url, headers)
            ttft.append(first)
            total.append(whole)
        done = 0
        deadline = time.perf_counter() + args.duration

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                try:
                    await one_stream(session, url, headers)
                    done += 1
                except (RuntimeError, aiohttp.ClientError) as exc:
                    failures[str(exc) or type(exc).__name__] += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        elapsed = time.perf_counter() - started
    return Result(mode, ttft, total, done / elapsed, failures)


def _p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


def _failures(failures: Counter[str]) -> str:
    if not failures:
        return "0"
    shown = ", ".join(f"{reason} {n}" for reason, n in failures.most_common())
    return f"{sum(failures.values())} ({shown})"


def report(results: list[Result], args: argparse.Namespace) -> str:
    chars = args.chunks * args.chunk_chars
    lines = [
        f"Answer: {chars} characters in {args.chunks} chunks of {args.chunk_chars}, "
        f"{args.delay_ms} ms apart; `response.checkpoint_chars: {args.checkpoint_chars}`; "
        f"{args.requests} sequential streams, then {args.concurrency} at once for "
        f"{args.duration:g} s. {po.machine_line()}",
        "",
        "| mode | first text p50 | p90 | whole stream p50 | p90 | streams/s at "
        f"{args.concurrency} | failures |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.mode} | {statistics.median(r.ttft_ms):.1f} ms | {_p(r.ttft_ms, 90):.1f} ms "
            f"| {statistics.median(r.total_ms):.1f} ms | {_p(r.total_ms, 90):.1f} ms "
            f"| {r.streams_per_s:.1f} | {_failures(r.failures)} |"
        )
    return "\n".join(lines) + "\n"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--chunks", type=int, default=125)
    parser.add_argument("--chunk-chars", type=int, default=8)
    parser.add_argument("--delay-ms", type=int, default=1)
    parser.add_argument("--checkpoint-chars", type=int, default=200)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--no-write", action="store_true")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    servers: list[po.Server] = []
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="agora-bench-") as tmp:
        workdir = Path(tmp)
        try:
            model = start_model(workdir)
            servers.append(model)
            for mode in MODES:
                if mode == "direct":
                    url = model.url
                else:
                    gateway = start_gateway(workdir, model, mode, args.checkpoint_chars)
                    servers.append(gateway)
                    url = gateway.url
                results.append(asyncio.run(measure(mode, url, args)))
                if mode != "direct":
                    servers.pop().stop()  # one gateway at a time: they share two cores
        finally:
            for server in servers:
                server.stop()
    text = report(results, args)
    print(text)
    if not args.no_write:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        output = args.output or po.RESULTS / f"response-policy-{stamp}.md"
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
        print(f"written to {output}")


if __name__ == "__main__":
    main()
