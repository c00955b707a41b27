"""Agora beside a bare proxy, LiteLLM's proxy and Portkey's gateway, in one run.

    .venv/bin/python bench/side_by_side.py [--rounds 3] [--duration S] [--warmup S]
        [--targets direct,bare,agora,litellm,portkey] [--loader auto|hey|own]
        [--litellm PATH] [--portkey PATH] [--node PATH] [--hey PATH]
        [--results DIR] [--readme FILE | --no-readme] [--smoke]

Every target runs for the whole run, one worker each, in front of the same
stand-in model (``python -m gateway demo-model``), and gets the same OpenAI
chat body:

- ``direct``: the model itself;
- ``bare``: bench/bare_proxy.py (Starlette + aiohttp, nothing else);
- ``agora``: ``python -m gateway serve`` with a managed OPA, the default policy
  bundle, the decision log with ``durability: batch``, and an RS256 bearer
  token on every request;
- ``litellm``: ``litellm --config ... --num_workers 1`` (``litellm[proxy]``,
  from ``--litellm``, default ~/.cache/agora/bench-venv/bin/litellm), with a
  master key, no database, local cost map, ``LITELLM_LOG=ERROR``;
- ``portkey``: ``@portkey-ai/gateway`` under node (``--portkey``, default its
  build/start-server.js in ~/.cache/agora/bench-node), routed with
  ``x-portkey-provider: openai`` and ``x-portkey-custom-host``.

A target whose program is missing is skipped with a message; so is a mode
(non-streaming or streaming) whose first request a target does not answer
with 200 and the model's reply (the report says what it answered instead).

Each cell is measured ``--rounds`` times, the rounds interleaved (round 1 of
every target, then round 2, ...), and each figure is the median over rounds:
at ``--rate`` requests/s over 4 connections for latency (p50, p99, time to the
first response byte), and closed-loop over 32 connections for saturation
(req/s, non-2xx answers). The load comes from ``hey`` (its per-request CSV,
the warm-up dropped by offset) or, if hey is absent or ``--loader own``, from
bench/proxy_overhead.py's asyncio + httptools client. Streaming requests ask
the model for 1 ms between tokens (``X-Demo-Delay-Ms``, which LiteLLM and
Portkey are told to forward).

Writes the raw rounds (JSON) and the report (markdown) to ``--results``, and
the report into ``--readme`` between the ``side-by-side`` markers (appended
if the markers are absent). ``--smoke`` is the few-second pass CI runs:
direct, bare and agora only, one short round. Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import proxy_overhead as po

CACHE = Path(os.environ.get("AGORA_CACHE", Path.home() / ".cache/agora"))
DEFAULT_LITELLM = CACHE / "bench-venv" / "bin" / "litellm"
DEFAULT_PORTKEY = (
    CACHE / "bench-node" / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
)
TARGETS = ("direct", "bare", "agora", "litellm", "portkey")
SMOKE_TARGETS = ("direct", "bare", "agora")
LITELLM_KEY = "sk-bench-master-key"
DELAY_HEADER = ("X-Demo-Delay-Ms", "1")
BEGIN = "<!-- side-by-side:begin (written by bench/side_by_side.py) -->"
END = "<!-- side-by-side:end -->"
MODES = ("plain", "stream")
LOADS = ("latency", "saturation")


@dataclass
class Endpoint:
    """Where one target answers and what each request to it carries."""

    name: str
    port: int
    headers: list[tuple[str, str]]
    version: str
    skipped: dict[str, str] = field(default_factory=dict)
    """Mode -> why it is not measured."""
    decision_log: Path | None = None
    """Agora's decision log, read for its own timings of each request (``latency_us``)."""


@dataclass
class Sample:
    """One round of one cell."""

    rps: float
    p50_ms: float
    p99_ms: float
    ttfb_p50_ms: float
    ttfb_p99_ms: float
    answers: int
    non_2xx: dict[str, int]
    phases_ms: dict[str, float] = field(default_factory=dict)
    """Agora only: medians of its own timings in this round (see :func:`phase_medians`)."""


# --- load ---------------------------------------------------------------------------------


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def run_hey(
    hey: str, ep: Endpoint, body: bytes, conns: int, rate: float, warmup: float, duration: float
) -> Sample:
    """hey with per-request CSV; answers before ``warmup`` seconds are dropped."""
    with tempfile.NamedTemporaryFile(suffix=".json") as body_file:
        body_file.write(body)
        body_file.flush()
        args = [hey, "-z", f"{warmup + duration}s", "-c", str(conns), "-m", "POST"]
        args += ["-T", "application/json", "-D", body_file.name, "-o", "csv", "-t", "30"]
        if rate > 0:
            args += ["-q", f"{rate / conns:g}"]
        for name, value in ep.headers:
            args += ["-H", f"{name}: {value}"]
        out = subprocess.run(
            [*args, f"http://127.0.0.1:{ep.port}{po.CHAT_PATH}"],
            capture_output=True,
            text=True,
            timeout=warmup + duration + 60,
        )
    if out.returncode != 0:
        raise SystemExit(f"hey failed against {ep.name}: {out.stderr[-2000:]}")
    latency: list[float] = []
    first_byte: list[float] = []
    non_2xx: dict[str, int] = {}
    for row in csv.DictReader(io.StringIO(out.stdout)):
        if float(row["offset"]) < warmup:
            continue
        total = float(row["response-time"]) * 1000
        latency.append(total)
        first_byte.append(total - float(row["Response-read"]) * 1000)
        if not row["status-code"].startswith("2"):
            non_2xx[row["status-code"]] = non_2xx.get(row["status-code"], 0) + 1
    return Sample(
        len(latency) / duration,
        _pct(latency, 0.5),
        _pct(latency, 0.99),
        _pct(first_byte, 0.5),
        _pct(first_byte, 0.99),
        len(latency),
        non_2xx,
    )


def run_own(
    ep: Endpoint, body: bytes, conns: int, rate: float, warmup: float, duration: float
) -> Sample:
    """bench/proxy_overhead.py's client in its own process (first byte = first body byte)."""
    spec = po.ClientSpec(
        "127.0.0.1", ep.port, po.CHAT_PATH, ep.headers, body.decode(), conns, warmup, duration, rate
    )
    out = subprocess.run(
        [sys.executable, po.__file__, "client", json.dumps(asdict(spec))],
        capture_output=True,
        text=True,
        env=po.child_env(),
        timeout=warmup + duration + po.DRAIN_S + 60,
    )
    lines = out.stdout.split()
    if out.returncode != 0 or lines[:2] != ["START", "END"]:
        raise SystemExit(f"load client failed against {ep.name}: {out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.split("END", 1)[1])
    non_2xx = {s: n for s, n in result["statuses"].items() if not s.startswith("2")}
    for error, n in result["errors"].items():
        non_2xx[f"error: {error}"] = n
    return Sample(
        result["rps"],
        result["latency_ms"]["p50"],
        result["latency_ms"]["p99"],
        result["first_byte_ms"]["p50"],
        result["first_byte_ms"]["p99"],
        result["answers"],
        non_2xx,
    )


# --- targets ------------------------------------------------------------------------------


def _version(args: Sequence[str]) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(list(args), capture_output=True, text=True, timeout=30)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip().splitlines()[-1]
    return "unknown"


def start_litellm(litellm: Path, model: po.Server, workdir: Path) -> tuple[po.Server, Endpoint]:
    port = po.free_port()
    config = {
        "model_list": [
            {
                "model_name": po.MODEL,
                "litellm_params": {
                    "model": f"openai/{po.MODEL}",
                    "api_base": f"{model.url}/v1",
                    "api_key": "x",
                },
            }
        ],
        # So that X-Demo-Delay-Ms reaches the model, as it does through the other proxies.
        "general_settings": {"forward_client_headers_to_llm_api": True},
        "litellm_settings": {"telemetry": False},
    }
    config_file = workdir / "litellm.yaml"
    config_file.write_text(json.dumps(config, indent=2))
    os.environ.update(
        LITELLM_MASTER_KEY=LITELLM_KEY,
        LITELLM_LOG="ERROR",
        LITELLM_TELEMETRY="False",
        LITELLM_LOCAL_MODEL_COST_MAP="True",
    )
    os.environ.pop("DATABASE_URL", None)
    args = [str(litellm), "--config", str(config_file), "--port", str(port), "--num_workers", "1"]
    server = po.start_server("litellm", args, port, workdir)
    po.wait_ready(server, "/health/liveliness", timeout_s=120)
    python = litellm.parent / "python"
    version = _version([str(python), "-c", "from importlib import metadata as m; "
                        "print('litellm', m.version('litellm'))"])  # fmt: skip
    return server, Endpoint("litellm", port, [("Authorization", f"Bearer {LITELLM_KEY}")], version)


def start_portkey(
    node: str, portkey: Path, model: po.Server, workdir: Path
) -> tuple[po.Server, Endpoint]:
    port = po.free_port()
    args = [node, str(portkey), f"--port={port}", "--headless"]
    server = po.start_server("portkey", args, port, workdir)
    po.wait_ready(server, "/", timeout_s=60)
    package = json.loads((portkey.parent.parent / "package.json").read_text())
    version = f"@portkey-ai/gateway {package['version']} on node {_version([node, '--version'])}"
    headers = [
        ("Authorization", "Bearer x"),
        ("x-portkey-provider", "openai"),
        ("x-portkey-custom-host", f"{model.url}/v1"),
        ("x-portkey-forward-headers", DELAY_HEADER[0].lower()),
    ]
    return server, Endpoint("portkey", port, headers, version)


def check_modes(ep: Endpoint) -> None:
    """One request per mode; a mode that does not answer 200 with the model's reply is skipped."""
    for mode in MODES:
        body = po.chat_body(mode == "stream")
        status, answer = po.post(
            f"http://127.0.0.1:{ep.port}{po.CHAT_PATH}", body, dict([*ep.headers, DELAY_HEADER])
        )
        expected = b"data: [DONE]" if mode == "stream" else b"stand-in model"
        if status != 200 or expected not in answer:
            text = answer[:200].decode(errors="replace").strip()
            ep.skipped[mode] = f"its first request answered {status}: `{text}`"


# --- the run ------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per cell")
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per cell")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per cell")
    parser.add_argument("--rate", type=float, default=100.0, help="req/s of the latency load")
    parser.add_argument("--latency-connections", type=int, default=4)
    parser.add_argument("--saturation-connections", type=int, default=32)
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--loader", choices=("auto", "hey", "own"), default="auto")
    parser.add_argument("--hey", default=os.environ.get("AGORA_BENCH_HEY", "hey"))
    parser.add_argument(
        "--litellm", type=Path, default=Path(os.environ.get("AGORA_BENCH_LITELLM", DEFAULT_LITELLM))
    )
    parser.add_argument(
        "--portkey", type=Path, default=Path(os.environ.get("AGORA_BENCH_PORTKEY", DEFAULT_PORTKEY))
    )
    parser.add_argument("--node", default=os.environ.get("AGORA_BENCH_NODE", "node"))
    parser.add_argument("--results", type=Path, default=po.RESULTS)
    parser.add_argument("--readme", type=Path, default=po.ROOT / "bench" / "README.md")
    parser.add_argument("--no-readme", action="store_true")
    parser.add_argument(
        "--smoke", action="store_true", help="direct, bare and agora; one round of about 1 s"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.rounds, args.duration, args.warmup = 1, 1.0, 0.3
        args.targets = ",".join(SMOKE_TARGETS)
    args.targets = [t.strip() for t in str(args.targets).split(",") if t.strip()]
    if unknown := set(args.targets) - set(TARGETS):
        parser.error(f"--targets: unknown {sorted(unknown)}; choose from {list(TARGETS)}")
    if args.rounds < 1 or args.duration <= 0:
        parser.error("--rounds and --duration must be positive")
    return args


def start_targets(
    args: argparse.Namespace, model: po.Server, workdir: Path, servers: list[po.Server]
) -> tuple[list[Endpoint], list[str]]:
    """Start every wanted target that is installed; returns them and what was skipped."""
    endpoints: list[Endpoint] = []
    skipped: list[str] = []
    for name in args.targets:
        if name == "direct":
            endpoints.append(Endpoint("direct", model.port, [], "gateway demo-model"))
        elif name == "bare":
            group = po.start_bare(workdir, model)
            servers += group.servers
            endpoints.append(Endpoint("bare", group.targets[0].port, [], "bench/bare_proxy.py"))
        elif name == "agora":
            group = po.start_gateway(workdir, model, "gateway", ["gateway-jwt"])
            servers += group.servers
            target = group.targets[0]
            endpoints.append(
                Endpoint(
                    "agora", target.port, list(target.headers), agora_version(),
                    decision_log=group.decision_log,
                )
            )  # fmt: skip
        elif name == "litellm":
            if not args.litellm.is_file():
                skipped.append(f"litellm: {args.litellm} not found (--litellm)")
                continue
            server, ep = start_litellm(args.litellm, model, workdir)
            servers.append(server)
            endpoints.append(ep)
        elif name == "portkey":
            if not args.portkey.is_file() or shutil.which(args.node) is None:
                skipped.append(f"portkey: {args.portkey} or {args.node} not found (--portkey)")
                continue
            server, ep = start_portkey(args.node, args.portkey, model, workdir)
            servers.append(server)
            endpoints.append(ep)
    for ep in endpoints:
        check_modes(ep)
    return endpoints, skipped


def agora_version() -> str:
    commit = _version(["git", "-C", str(po.ROOT), "rev-parse", "--short", "HEAD"])
    return f"agora {metadata.version('agora-gateway')} ({commit})"


Cells = dict[tuple[str, str, str], list[Sample]]
"""(target, mode, load) -> one sample per round."""


def measure_all(args: argparse.Namespace, endpoints: list[Endpoint], hey: str | None) -> Cells:
    cells: Cells = {}
    for round_ in range(1, args.rounds + 1):
        for mode in MODES:
            body = json.dumps(po.chat_body(mode == "stream")).encode()
            for load in LOADS:
                conns = (
                    args.latency_connections if load == "latency" else args.saturation_connections
                )
                rate = args.rate if load == "latency" else 0.0
                for ep in endpoints:
                    if mode in ep.skipped:
                        continue
                    sent = Endpoint(ep.name, ep.port, [*ep.headers, DELAY_HEADER], ep.version)
                    log_offset = log_size(ep.decision_log)
                    if hey is not None:
                        sample = run_hey(hey, sent, body, conns, rate, args.warmup, args.duration)
                    else:
                        sample = run_own(sent, body, conns, rate, args.warmup, args.duration)
                    if ep.decision_log is not None:
                        sample.phases_ms = phase_medians(ep.decision_log, log_offset)
                    cells.setdefault((ep.name, mode, load), []).append(sample)
                    po.note(
                        f"[round {round_}/{args.rounds} {mode:>6} {load:>10} {ep.name:>8}] "
                        f"{sample.rps:7.0f} req/s  p50 {sample.p50_ms:7.2f} ms  "
                        f"p99 {sample.p99_ms:8.2f} ms  ttfb p50 {sample.ttfb_p50_ms:6.2f} ms  "
                        f"non-2xx {sample.non_2xx or 0}"
                    )
    return cells


def log_size(path: Path | None) -> int:
    return path.stat().st_size if path is not None and path.exists() else 0


PHASES = (
    ("auth", "decision", "auth", "reading, parsing and authenticating the request"),
    ("request policy", "decision", "policy", "the request's decision (OPA and the gateway's "
     "side of it)"),
    ("upstream", "outcome", "upstream", "from forwarding to the answer's end, response policy "
     "included"),
    ("response policy", "response", "policy", "the answer's decision"),
    ("total", "outcome", "total", "the whole request, as the gateway saw it"),
)  # fmt: skip
"""(name, record event, ``latency_us`` member, what it covers)."""


def phase_medians(path: Path, offset: int) -> dict[str, float]:
    """Medians (ms) of the gateway's own timings of the requests logged after ``offset``.

    Each allowed request writes a ``decision``, a ``response`` (when response
    policy judged its answer) and an ``outcome`` record, each with ``latency_us``
    (docs/decision-log.md); the warm-up's requests are among them.
    """
    values: dict[str, list[int]] = {name: [] for name, *_ in PHASES}
    with path.open("rb") as log:
        log.seek(offset)
        for line in log:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut at the end of the read
            latency = record.get("latency_us") or {}
            for name, event, member, _ in PHASES:
                if record.get("event") == event and isinstance(latency.get(member), int):
                    values[name].append(latency[member])
    return {name: statistics.median(v) / 1000 for name, v in values.items() if v}


# --- the report ---------------------------------------------------------------------------


def med(samples: list[Sample], attr: str) -> float:
    return float(statistics.median(getattr(s, attr) for s in samples))


def non_2xx(samples: list[Sample]) -> dict[str, int]:
    total: dict[str, int] = {}
    for sample in samples:
        for status, n in sample.non_2xx.items():
            total[status] = total.get(status, 0) + n
    return total


def _fmt_non_2xx(counts: dict[str, int]) -> str:
    return ", ".join(f"{n}x {s}" for s, n in sorted(counts.items())) or "0"


def table(cells: Cells, endpoints: list[Endpoint], mode: str) -> list[str]:
    lines = [
        "| target | p50 ms | p99 ms | first byte p50 ms | p99 ms | req/s at saturation "
        "| non-2xx (all rounds, both loads) |",
        "|---|--:|--:|--:|--:|--:|---|",
    ]
    for ep in endpoints:
        if mode in ep.skipped:
            lines.append(f"| {ep.name} | skipped: {ep.skipped[mode]} ||||||")
            continue
        lat, sat = cells[(ep.name, mode, "latency")], cells[(ep.name, mode, "saturation")]
        lines.append(
            f"| {ep.name} | {med(lat, 'p50_ms'):.2f} | {med(lat, 'p99_ms'):.2f} "
            f"| {med(lat, 'ttfb_p50_ms'):.2f} | {med(lat, 'ttfb_p99_ms'):.2f} "
            f"| {med(sat, 'rps'):,.0f} | {_fmt_non_2xx(non_2xx(lat + sat))} |"
        )
    return lines


def verdicts(cells: Cells) -> list[str]:
    """Agora against each target the performance issue sets, where both sides were measured."""

    def get(target: str, mode: str, load: str, attr: str) -> float | None:
        samples = cells.get((target, mode, load))
        return med(samples, attr) if samples else None

    lines = ["| target | measured | met |", "|---|---|:-:|"]

    def add(goal: str, measured: str, ok: bool) -> None:
        lines.append(f"| {goal} | {measured} | {'yes' if ok else '**no**'} |")

    agora_rps = get("agora", "plain", "saturation", "rps")
    for other, floor in (("bare", 0.5), ("portkey", 2.0), ("litellm", 20.0)):
        theirs = get(other, "plain", "saturation", "rps")
        if agora_rps is not None and theirs:
            ratio = agora_rps / theirs
            add(f"saturation ≥ {floor:g}x {other}", f"{ratio:.2f}x", ratio >= floor)
    agora_p50, bare_p50 = (
        get("agora", "plain", "latency", "p50_ms"),
        get("bare", "plain", "latency", "p50_ms"),
    )
    direct_p50 = get("direct", "plain", "latency", "p50_ms")
    if agora_p50 is not None and bare_p50 is not None and direct_p50 is not None:
        extra = (agora_p50 - direct_p50) - (bare_p50 - direct_p50)
        add(
            "p50 added ≤ bare proxy's added + 1.0 ms",
            f"+{agora_p50 - direct_p50:.2f} ms vs +{bare_p50 - direct_p50:.2f} ms "
            f"({extra:+.2f} ms)",
            extra <= 1.0,
        )
    agora_p99, bare_p99 = (
        get("agora", "plain", "latency", "p99_ms"),
        get("bare", "plain", "latency", "p99_ms"),
    )
    if agora_p99 is not None and bare_p99:
        add("p99 < 2x bare proxy's", f"{agora_p99 / bare_p99:.2f}x", agora_p99 < 2 * bare_p99)
    agora_cells = [s for (t, _, _), ss in cells.items() if t == "agora" for s in ss]
    if agora_cells:
        n503 = sum(s.non_2xx.get("503", 0) for s in agora_cells)
        add("zero 503s from overload", f"{n503}", n503 == 0)
    agora_fb, bare_fb = (
        get("agora", "stream", "latency", "ttfb_p50_ms"),
        get("bare", "stream", "latency", "ttfb_p50_ms"),
    )
    if agora_fb is not None and bare_fb is not None:
        add(
            "streaming first byte within 1 ms of bare proxy",
            f"{agora_fb - bare_fb:+.2f} ms",
            agora_fb - bare_fb <= 1.0,
        )
    return lines


def report(
    args: argparse.Namespace,
    started: datetime,
    machine: str,
    loader: str,
    endpoints: list[Endpoint],
    skipped: list[str],
    cells: Cells,
) -> str:
    command = "bench/side_by_side.py " + ("--smoke" if args.smoke else f"--rounds {args.rounds}")
    lines = [
        f"Run {started:%Y-%m-%d %H:%M} UTC (`{command}`). Machine: {machine}; "
        f"load average at the end {' '.join(Path('/proc/loadavg').read_text().split()[:3])}.",
        "",
        "Versions: " + "; ".join(f"{ep.name}: {ep.version}" for ep in endpoints) + f"; {loader}.",
        "",
        f"Latency: {args.rate:g} req/s over {args.latency_connections} connections; saturation: "
        f"closed loop over {args.saturation_connections} connections; {args.warmup:g} s warm-up "
        f"+ {args.duration:g} s per cell, median of {args.rounds} interleaved round(s). "
        "First byte: the first response byte (hey: total minus the body read; own client: "
        "first body byte).",
    ]
    if skipped:
        lines += ["", "Not measured: " + "; ".join(skipped) + "."]
    for mode, title in (("plain", "Non-streaming"), ("stream", "Streaming (1 ms per token)")):
        lines += ["", f"{title}:", "", *table(cells, endpoints, mode)]
    lines += ["", "Agora against the targets:", "", *verdicts(cells)]
    lines += phases_table(cells, args)
    return "\n".join(lines) + "\n"


def phases_table(cells: Cells, args: argparse.Namespace) -> list[str]:
    """Where Agora's time goes at the latency load, by its own decision log."""
    samples = cells.get(("agora", "plain", "latency"), [])
    rounds = [s.phases_ms for s in samples if s.phases_ms]
    if not rounds:
        return []
    lines = [
        "",
        f"Agora's own timings at {args.rate:g} req/s, non-streaming (its decision log's "
        "`latency_us`, median of each round's medians; the client saw p50 "
        f"{med(samples, 'p50_ms'):.2f} ms):",
        "",
        "| phase | p50 ms | what it covers |",
        "|---|--:|---|",
    ]
    for name, _, _, covers in PHASES:
        got = [r[name] for r in rounds if name in r]
        if got:
            lines.append(f"| {name} | {statistics.median(got):.2f} | {covers} |")
    return lines


def write_readme(readme: Path, text: str) -> None:
    """Replace the text between the markers, or append a marked block."""
    block = f"{BEGIN}\n{text}{END}"
    current = readme.read_text() if readme.exists() else ""
    if BEGIN in current and END in current:
        head, rest = current.split(BEGIN, 1)
        current = head + block + rest.split(END, 1)[1]
    else:
        current = current + ("\n" if current else "") + block + "\n"
    readme.write_text(current)


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    hey = shutil.which(args.hey) if args.loader != "own" else None
    if args.loader == "hey" and hey is None:
        raise SystemExit(f"--loader hey: {args.hey} not found")
    hey_version = _version(["dpkg-query", "-W", "-f", "${Version}\n", "hey"])
    loader = f"load from hey {hey_version}" if hey else "load from proxy_overhead.py's client"
    started = datetime.now(UTC)
    machine = po.machine_line()
    workdir = Path(tempfile.mkdtemp(prefix="agora-side-by-side-"))
    model = po.start_model(workdir)
    servers: list[po.Server] = []
    try:
        endpoints, skipped = start_targets(args, model, workdir, servers)
        for message in skipped:
            po.note(f"skipped {message}")
        cells = measure_all(args, endpoints, hey)
    finally:
        for server in reversed(servers):
            server.stop()
        model.stop()
    text = report(args, started, machine, loader, endpoints, skipped, cells)
    print(text)
    stem = f"side-by-side-{'smoke-' if args.smoke else ''}{started:%Y-%m-%d-%H%M}"
    args.results.mkdir(parents=True, exist_ok=True)
    raw = {
        "started": started.isoformat(),
        "machine": machine,
        "loader": loader,
        "args": {k: str(v) for k, v in vars(args).items()},
        "targets": [
            {k: v for k, v in asdict(ep).items() if k != "decision_log"} for ep in endpoints
        ],
        "skipped": skipped,
        "cells": [
            {"target": t, "mode": m, "load": load, "rounds": [asdict(s) for s in samples]}
            for (t, m, load), samples in cells.items()
        ],
    }
    (args.results / f"{stem}.json").write_text(json.dumps(raw, indent=1) + "\n")
    (args.results / f"{stem}.md").write_text(text)
    if not args.no_readme:
        write_readme(args.readme, text)
    po.note(f"written to {args.results}/{stem}.md and .json")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
