"""What the gateway costs per request: the same load against the model, a bare proxy and Agora.

    .venv/bin/python bench/proxy_overhead.py [--duration S] [--warmup S] [--concurrency 1,32]
        [--repeat N] [--targets direct,bare,gateway,gateway-jwt,gateway-polling]
        [--stream-duration S] [--idle S] [--settle S] [--output FILE | --no-write]

It starts, on free loopback ports and with one worker each, the stand-in model
(``python -m gateway demo-model``, streaming a word a millisecond), which stays up
for the whole run, and in
turn the processes behind each target, so that only the model and the target
being measured run at any time:

- ``direct``: the model itself;
- ``bare``: bench/bare_proxy.py (Starlette + aiohttp and nothing else: the
  floor any Python proxy on this stack pays);
- ``gateway``: Agora (``python -m gateway serve``) with a managed OPA, the
  default policy bundle and the decision log (durability ``batch``),
  anonymous callers (``auth.required: false``);
- ``gateway-jwt``: the same gateway, an RS256 bearer token on every request;
- ``gateway-polling``, ``gateway-polling-jwt`` (not in the default set): the
  same gateway with ``policy.opa: external`` and an OPA sidecar, started here,
  that polls the bundle every 5 to 10 s instead of long-polling.

The same request, a non-streaming chat completion, goes to every target. The
load comes from a separate process (this file's ``client`` mode): an asyncio +
httptools HTTP/1.1 client on uvloop with a fixed number of keep-alive
connections, each sending its next request as soon as the previous answer is
complete (closed loop). Each cell warms up, then counts the answers completed
during the measured window: req/s and latency percentiles over those, the p50
overhead against ``direct`` at the same concurrency, any non-200 answer or
connection error, and the CPU time each process (client, model, proxy, OPA)
spent in the window divided by the answers, read from /proc, together with how
busy the rest of the machine was. With ``--repeat N`` each cell is measured N
times and the median round by req/s is kept. A short streaming run per target
(``"stream": true``, one connection) measures the
time to the first body byte. For each gateway it also reports the CPU used at
idle, memory and file descriptors before the load and ``--settle`` seconds
after it, the exit on SIGTERM, the decision log (``agora log stats`` verifies
the chain) against the answers the clients received, and the warnings the
gateway logged.

Prints a markdown report and writes it to ``bench/results/proxy-<date>.md``
(unless ``--no-write``). A measurement, never a pass/fail test: nothing here
asserts a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, cast

from gateway.ports import free_port as free_port  # also the other bench scripts' ports

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
TOOL_BIN = Path(os.environ.get("AGORA_CACHE", Path.home() / ".cache/agora")) / "bin"
ISSUER = "https://issuer.bench"
AUDIENCE = "agora"
MODEL = "demo-small"
MODEL_COMMAND = [sys.executable, "-m", "gateway", "demo-model", "--token-delay-ms", "1"]
PROMPT = "Summarise the main trade-offs of running a policy gateway in front of a model API."
TARGETS = ("direct", "bare", "gateway", "gateway-jwt")
CHAT_PATH = "/v1/chat/completions"
BUNDLE_RESOURCE = "/_agora/bundles/active.tar.gz"  # gateway.pinning.store.BUNDLE_RESOURCE
DRAIN_S = 15.0
"""How long the client waits, after the window, for answers still in flight."""


# --- the load generator (runs in its own process) ----------------------------------------


@dataclass(frozen=True)
class ClientSpec:
    """What one client process sends, how hard, and for how long."""

    host: str
    port: int
    path: str
    headers: list[tuple[str, str]]
    body: str
    concurrency: int
    warmup_s: float
    duration_s: float
    rate: float = 0.0
    """Requests per second over all connections, evenly paced; 0 for a closed loop."""

    def request_bytes(self) -> bytes:
        body = self.body.encode()
        lines = [
            f"POST {self.path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            *(f"{name}: {value}" for name, value in self.headers),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; ``send`` returns the status when the answer ends."""

    def __init__(self) -> None:
        import httptools

        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._answer: asyncio.Future[int] | None = None
        self.first_byte_ns = 0
        self.keep_alive = True
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        import httptools

        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"unparsable response: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ConnectionError(f"connection lost: {exc or 'closed by server'}"))

    # httptools callbacks
    def on_body(self, body: bytes) -> None:
        if not self.first_byte_ns:
            self.first_byte_ns = time.perf_counter_ns()

    def on_message_complete(self) -> None:
        self.keep_alive = self._parser.should_keep_alive()
        if self._answer is not None and not self._answer.done():
            self._answer.set_result(self._parser.get_status_code())

    def _fail(self, exc: Exception) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(exc)

    async def send(self, request: bytes) -> int:
        assert self._transport is not None
        self._answer = asyncio.get_running_loop().create_future()
        self.first_byte_ns = 0
        self._transport.write(request)
        return await self._answer

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def _percentiles(values_us: list[int]) -> dict[str, float]:
    if not values_us:
        return {"p50": float("nan"), "p90": float("nan"), "p99": float("nan")}
    ordered = sorted(values_us)

    def rank(q: float) -> float:  # nearest rank
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))] / 1000

    return {"p50": rank(0.50), "p90": rank(0.90), "p99": rank(0.99), "max": ordered[-1] / 1000}


async def run_client(spec: ClientSpec) -> dict[str, Any]:
    """Closed-loop load; prints START and END around the measured window, returns the tally."""
    loop = asyncio.get_running_loop()
    request = spec.request_bytes()
    window = {"start": 0, "end": 0}
    stopping = False
    latencies: list[int] = []
    first_bytes: list[int] = []
    statuses: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    totals = {"answers": 0, "errors": 0}

    def in_window(t_ns: int) -> bool:
        return window["start"] != 0 and window["end"] == 0 and t_ns >= window["start"]

    async def worker(index: int) -> None:
        conn: _Connection | None = None
        interval = spec.concurrency / spec.rate if spec.rate > 0 else 0.0
        due = loop.time() + interval * index / spec.concurrency
        while not stopping:
            if interval:
                await asyncio.sleep(max(0.0, due - loop.time()))
                due += interval
            if conn is None or conn.closed:
                try:
                    _, conn = await loop.create_connection(_Connection, spec.host, spec.port)
                except OSError as exc:
                    totals["errors"] += 1
                    if in_window(time.perf_counter_ns()):
                        errors[f"connect: {exc.strerror or exc}"] += 1
                    conn = None
                    await asyncio.sleep(0.05)
                    continue
            sent = time.perf_counter_ns()
            try:
                status = await conn.send(request)
            except ConnectionError as exc:
                totals["errors"] += 1
                if in_window(time.perf_counter_ns()):
                    errors[str(exc)] += 1
                conn.close()
                conn = None
                continue
            done = time.perf_counter_ns()
            totals["answers"] += 1
            if in_window(done):
                latencies.append((done - sent) // 1000)
                statuses[status] += 1
                if conn.first_byte_ns:
                    first_bytes.append((conn.first_byte_ns - sent) // 1000)
            if not conn.keep_alive:
                conn.close()
                conn = None
        if conn is not None:
            conn.close()

    tasks = [asyncio.create_task(worker(i)) for i in range(spec.concurrency)]
    await asyncio.sleep(spec.warmup_s)
    window["start"] = time.perf_counter_ns()
    print("START", flush=True)
    await asyncio.sleep(spec.duration_s)
    window["end"] = time.perf_counter_ns()
    print("END", flush=True)
    stopping = True
    _, pending = await asyncio.wait(tasks, timeout=DRAIN_S)
    for task in pending:
        task.cancel()
    window_s = (window["end"] - window["start"]) / 1e9
    return {
        "window_s": window_s,
        "answers": len(latencies),
        "rps": len(latencies) / window_s,
        "latency_ms": _percentiles(latencies),
        "first_byte_ms": _percentiles(first_bytes),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "errors": dict(errors),
        "total_answers": totals["answers"],
        "total_errors": totals["errors"],
        "stuck": len(pending),
    }


def client_main(spec_json: str) -> None:
    spec = ClientSpec(**json.loads(spec_json))
    try:
        import uvloop

        result = uvloop.run(run_client(spec))
    except ImportError:
        result = asyncio.run(run_client(spec))
    print(json.dumps(result), flush=True)


# --- processes and /proc readings --------------------------------------------------------


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{TOOL_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}".rstrip(os.pathsep)
    # The gateway's caller-hash key, under the default decision_log.caller_hash_key_env.
    env.setdefault("AGORA_CALLER_KEY", "bench-caller-hash-key-" + "0" * 10)
    return env


def opa_binary() -> str:
    found = shutil.which("opa", path=child_env()["PATH"])
    if found is None:
        raise SystemExit("opa is not installed: run scripts/install-tools.sh opa (make tools)")
    return found


@dataclass
class Server:
    name: str
    port: int
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, timeout_s: float = 30.0) -> tuple[int, float]:
        """SIGTERM, then wait; returns the exit code and how long shutdown took."""
        started = time.monotonic()
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode, time.monotonic() - started


def wait_ready(server: Server, path: str, timeout_s: float = 60.0) -> None:
    """Poll ``path`` until it answers 200; stop the server and exit if it never does."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline and server.popen.poll() is None:
        try:
            with urllib.request.urlopen(server.url + path, timeout=2) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}: {exc.read()[:300]!r}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.1)
    server.stop()
    raise SystemExit(
        f"{server.name} did not become ready at {path} ({last}); its output:\n"
        + server.log.read_text(errors="replace")[-4000:]
    )


def start_server(name: str, args: Sequence[str], port: int, workdir: Path) -> Server:
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(
            list(args), stdout=out, stderr=subprocess.STDOUT, env=child_env(), cwd=ROOT
        )
    return Server(name, port, popen, log)


def post(url: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, bytes]:
    data = json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json", **headers}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (0.0 once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def machine_busy_s() -> float:
    """CPU seconds the whole machine spent busy since boot (all CPUs)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    idle_and_iowait = fields[3] + fields[4]
    return (sum(fields) - idle_and_iowait) / _CLK_TCK


def rss_mib(pid: int) -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def child_pid(parent: int, comm: str, timeout_s: float = 10.0) -> int | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError, ValueError):
                stat = (entry / "stat").read_text()
                name = stat[stat.index("(") + 1 : stat.rindex(")")]
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                if ppid == parent and name == comm:
                    return int(entry.name)
        time.sleep(0.1)
    return None


def idle_cpu(pids: dict[str, int], seconds: float) -> dict[str, float]:
    """Share of one core each process uses with no load on it, and all other processes."""
    before = {role: cpu_s(pid) for role, pid in pids.items()}
    busy = machine_busy_s()
    time.sleep(seconds)
    used = {role: (cpu_s(pid) - before[role]) / seconds for role, pid in pids.items()}
    used["everything else"] = max(0.0, (machine_busy_s() - busy) / seconds - sum(used.values()))
    return used


# --- the targets and one measured cell ---------------------------------------------------


@dataclass(frozen=True)
class Target:
    name: str
    port: int
    headers: tuple[tuple[str, str], ...] = ()
    proxy_pid: int | None = None
    opa_pid: int | None = None


@dataclass
class Cell:
    target: str
    concurrency: int
    result: dict[str, Any]
    cpu_us: dict[str, float] = field(default_factory=dict)
    other_cores: float = 0.0

    @property
    def rps(self) -> float:
        return float(self.result["rps"])

    def p(self, name: str, key: str = "latency_ms") -> float:
        return float(self.result[key][name])

    @property
    def non_200(self) -> int:
        failed = sum(int(n) for s, n in self.result["statuses"].items() if s != "200")
        errors = sum(int(n) for n in self.result["errors"].values())
        return failed + errors + int(self.result["stuck"])


def chat_body(stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": PROMPT},
        ],
        "max_tokens": 128,
        "temperature": 0.2,
    }
    if stream:
        body["stream"] = True
    return body


def measure(
    target: Target,
    concurrency: int,
    warmup_s: float,
    duration_s: float,
    model_pid: int,
    stream: bool = False,
) -> Cell:
    headers = list(target.headers)
    spec = ClientSpec(
        host="127.0.0.1",
        port=target.port,
        path=CHAT_PATH,
        headers=headers,
        body=json.dumps(chat_body(stream)),
        concurrency=concurrency,
        warmup_s=warmup_s,
        duration_s=duration_s,
    )
    client = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "client", json.dumps(spec.__dict__)],
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(),
        cwd=ROOT,
    )
    assert client.stdout is not None
    pids = {"client": client.pid, "model": model_pid}
    if target.proxy_pid is not None:
        pids["proxy"] = target.proxy_pid
    if target.opa_pid is not None:
        pids["opa"] = target.opa_pid
    marks: list[dict[str, float]] = []
    for expected in ("START", "END"):
        line = client.stdout.readline().strip()
        if line != expected:
            client.kill()
            raise SystemExit(f"load client for {target.name}: expected {expected}, got {line!r}")
        marks.append({role: cpu_s(pid) for role, pid in pids.items()})
        marks[-1]["machine"] = machine_busy_s()
    output = client.stdout.read()
    if client.wait(DRAIN_S + 30) != 0:
        raise SystemExit(f"load client for {target.name} failed")
    result = json.loads(output)
    answers = max(1, int(result["answers"]))
    used = {role: marks[1][role] - marks[0][role] for role in pids}
    other = marks[1]["machine"] - marks[0]["machine"] - sum(used.values())
    return Cell(
        target.name,
        concurrency,
        result,
        {role: seconds / answers * 1e6 for role, seconds in used.items()},
        max(0.0, other / float(result["window_s"])),
    )


def median_cell(cells: list[Cell]) -> Cell:
    ordered = sorted(cells, key=lambda c: c.rps)
    return ordered[(len(ordered) - 1) // 2]


# --- the servers under test --------------------------------------------------------------


@dataclass
class Group:
    """The processes behind one or more targets, started together and stopped together."""

    name: str
    servers: list[Server]
    targets: list[Target]
    decision_log: Path | None = None
    proxy_pid: int | None = None
    opa_pid: int | None = None


def make_token(workdir: Path) -> tuple[Path, str]:
    """An RSA key pair: the public key for the gateway, a member token for the client."""
    import jwt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = workdir / "issuer.pem"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    now = int(time.time())
    claims = {
        "sub": "bench-user",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 24 * 3600,
        "groups": ["members"],
    }
    return public, jwt.encode(claims, key, algorithm="RS256")


def start_model(workdir: Path) -> Server:
    port = free_port()
    model = start_server(
        "model",
        [*MODEL_COMMAND, "--port", str(port)],
        port,
        workdir,
    )
    wait_ready(model, "/v1/models")
    return model


def start_bare(workdir: Path, model: Server) -> Group:
    port = free_port()
    bare = start_server(
        "bare",
        [
            sys.executable,
            str(ROOT / "bench" / "bare_proxy.py"),
            *("--port", str(port)),
            *("--upstream", model.url),
        ],
        port,
        workdir,
    )
    wait_ready(bare, "/v1/models")
    return Group("bare", [bare], [Target("bare", port, proxy_pid=bare.pid)], proxy_pid=bare.pid)


def start_gateway(
    workdir: Path,
    model: Server,
    name: str,
    targets: Sequence[str],
    usage: dict[str, Any] | None = None,
) -> Group:
    """The gateway; ``gateway-polling`` runs its OPA as a sidecar with periodic bundle polls.

    ``usage``: the gateway's ``usage`` section (bench/usage_bench.py); default: its defaults.
    """
    opa = opa_binary()
    gwdir = workdir / name
    gwdir.mkdir()
    public_key, token = make_token(gwdir)
    port = free_port()
    decision_log = gwdir / "decisions.jsonl"
    policy: dict[str, Any] = {"bundle": str(ROOT / "policies"), "opa": "managed", "version": 1}
    sidecar_port, bundle_port = free_port(), free_port()
    if name == "gateway-polling":
        policy.update(opa="external", opa_url=f"http://127.0.0.1:{sidecar_port}")
    config = {
        "listen": {"host": "127.0.0.1", "port": port},
        "admin": {"listen": {"host": "127.0.0.1", "port": free_port()}},
        "bundle_service": {"listen": {"host": "127.0.0.1", "port": bundle_port}},
        "upstreams": [{"name": "demo", "url": model.url, "models": ["demo-*"]}],
        "policy": policy,
        "auth": {
            "required": False,
            "issuer": ISSUER,
            "audience": AUDIENCE,
            "algorithms": ["RS256"],
            "public_key_file": str(public_key),
        },
        "decision_log": {"path": str(decision_log), "durability": "batch"},
    }
    if usage is not None:
        config["usage"] = usage
    config_file = gwdir / "agora.yaml"
    config_file.write_text(json.dumps(config, indent=2))  # JSON is YAML
    gateway = start_server(
        name,
        [sys.executable, "-m", "gateway", "serve", "--config", str(config_file)],
        port,
        gwdir,
    )
    servers = [gateway]
    if name == "gateway-polling":
        wait_ready(gateway, "/healthz")
        opa_config = {
            "services": {"agora": {"url": f"http://127.0.0.1:{bundle_port}"}},
            "bundles": {
                "agora": {
                    "service": "agora",
                    "resource": BUNDLE_RESOURCE,
                    "persist": False,
                    "polling": {"min_delay_seconds": 5, "max_delay_seconds": 10},
                }
            },
        }
        opa_file = gwdir / "opa.yaml"
        opa_file.write_text(json.dumps(opa_config, indent=2))
        sidecar = start_server(
            f"{name}-opa",
            [
                opa,
                "run",
                "--server",
                "--addr",
                f"127.0.0.1:{sidecar_port}",
                "--config-file",
                str(opa_file),
                "--log-level",
                "error",
                "--skip-version-check",
                "--shutdown-grace-period",
                "1",
            ],
            sidecar_port,
            gwdir,
        )
        servers.append(sidecar)
        opa_pid: int | None = sidecar.pid
    wait_ready(gateway, "/readyz")
    if name == "gateway":
        opa_pid = child_pid(gateway.pid, "opa")
    auth = (("Authorization", f"Bearer {token}"),)
    return Group(
        name,
        servers,
        [
            Target(t, port, auth if t.endswith("-jwt") else (), gateway.pid, opa_pid)
            for t in targets
        ],
        decision_log,
        gateway.pid,
        opa_pid,
    )


def sanity_check(targets: Sequence[Target]) -> int:
    """One request per target must answer 200 with the model's reply; returns how many."""
    for target in targets:
        status, body = post(
            f"http://127.0.0.1:{target.port}{CHAT_PATH}", chat_body(False), dict(target.headers)
        )
        if status != 200 or b"stand-in model" not in body:
            raise SystemExit(f"{target.name} answered {status}: {body[:500]!r}")
    return len(targets)


# --- the report --------------------------------------------------------------------------


def _ms(value: float) -> str:
    return "n/a" if value != value else f"{value:.2f}"


def _cpu(cell: Cell, role: str) -> str:
    return f"{cell.cpu_us[role]:.0f}" if role in cell.cpu_us else "-"


def _failures(cell: Cell) -> str:
    if not cell.non_200:
        return "0"
    parts = [f"{n}x {s}" for s, n in cell.result["statuses"].items() if s != "200"]
    parts += [f"{n}x {e}" for e, n in cell.result["errors"].items()]
    if cell.result["stuck"]:
        parts.append(f"{cell.result['stuck']} still in flight after {DRAIN_S:g} s")
    return f"**{cell.non_200}** ({', '.join(parts)})"


def throughput_table(cells: dict[tuple[str, int], Cell], targets: Sequence[str]) -> list[str]:
    lines = [
        "| target | conc | req/s | p50 ms | p90 ms | p99 ms | p50 overhead vs direct "
        "| non-200 / errors |",
        "|---|--:|--:|--:|--:|--:|--:|---|",
    ]
    for conc in sorted({c for _, c in cells}):
        direct = cells.get(("direct", conc))
        for name in targets:
            cell = cells.get((name, conc))
            if cell is None:
                continue
            overhead = "-"
            if direct is not None and name != "direct":
                overhead = f"+{cell.p('p50') - direct.p('p50'):.2f} ms"
            lines.append(
                f"| {name} | {conc} | {cell.rps:,.0f} | {_ms(cell.p('p50'))} "
                f"| {_ms(cell.p('p90'))} | {_ms(cell.p('p99'))} | {overhead} "
                f"| {_failures(cell)} |"
            )
    return lines


def cpu_table(cells: dict[tuple[str, int], Cell], targets: Sequence[str]) -> list[str]:
    lines = [
        "| target | conc | client | model | proxy | OPA | all four "
        "| other processes on the machine (cores) |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for conc in sorted({c for _, c in cells}):
        for name in targets:
            cell = cells.get((name, conc))
            if cell is None:
                continue
            total = sum(cell.cpu_us.values())
            lines.append(
                f"| {name} | {conc} | {_cpu(cell, 'client')} | {_cpu(cell, 'model')} "
                f"| {_cpu(cell, 'proxy')} | {_cpu(cell, 'opa')} | {total:.0f} "
                f"| {cell.other_cores:.2f} |"
            )
    return lines


def stream_table(cells: dict[str, Cell]) -> list[str]:
    lines = [
        "| target | streams/s | first byte p50 ms | p90 ms | p99 ms | whole stream p50 ms "
        "| first byte overhead vs direct | non-200 / errors |",
        "|---|--:|--:|--:|--:|--:|--:|---|",
    ]
    direct = cells.get("direct")
    for name, cell in cells.items():
        overhead = "-"
        if direct is not None and name != "direct":
            first = cell.p("p50", "first_byte_ms") - direct.p("p50", "first_byte_ms")
            overhead = f"+{first:.2f} ms"
        lines.append(
            f"| {name} | {cell.rps:,.1f} | {_ms(cell.p('p50', 'first_byte_ms'))} "
            f"| {_ms(cell.p('p90', 'first_byte_ms'))} | {_ms(cell.p('p99', 'first_byte_ms'))} "
            f"| {_ms(cell.p('p50'))} | {overhead} | {_failures(cell)} |"
        )
    return lines


def machine_line() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = ", ".join(
        f"{pkg} {metadata.version(pkg)}"
        for pkg in ("uvicorn", "starlette", "aiohttp", "uvloop", "httptools", "PyJWT")
    )
    opa = "opa not found"
    opa_path = shutil.which("opa", path=child_env()["PATH"])
    if opa_path:
        with contextlib.suppress(OSError, subprocess.SubprocessError, IndexError):
            out = subprocess.run([opa_path, "version"], capture_output=True, text=True, timeout=10)
            opa = "OPA " + out.stdout.splitlines()[0].split(":", 1)[1].strip()
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return (
        f"{os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}, "
        f"Python {platform.python_version()}; {versions}; {opa}; load average at start {load}"
    )


def log_findings(log: Path, limit: int = 8) -> list[str]:
    lines = log.read_text(errors="replace").splitlines()
    found = [line for line in lines if "WARNING" in line or "ERROR" in line or "Traceback" in line]
    summary = Counter(line.split(" ", 3)[-1][:160] for line in found)
    return [f"{n}x `{text}`" for text, n in summary.most_common(limit)]


def decision_log_stats(path: Path) -> dict[str, Any] | str:
    if not path.exists():
        return "no decision log was written"
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "log", "stats", "--json", str(path)],
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=ROOT,
    )
    if out.returncode != 0:
        return f"`agora log stats` failed ({out.returncode}): {out.stdout} {out.stderr}".strip()
    stats: dict[str, Any] = json.loads(out.stdout)
    reasons: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    with path.open() as records:
        for line in records:
            record = json.loads(line)
            statuses[record.get("status")] += 1
            reasons.update(r for r in record.get("reasons", []) if not record.get("allow") or r)
    stats["statuses"] = dict(statuses)
    stats["reasons"] = dict(reasons.most_common(5))
    return stats


@dataclass
class GroupHealth:
    group: str
    idle: dict[str, float]
    rss_before: dict[str, float]
    rss_after: dict[str, float]
    fds_before: int
    fds_after: int
    settle_s: float
    answers: int
    exit_code: int
    shutdown_s: float
    log_stats: dict[str, Any] | str
    log_findings: list[str]


def health_lines(health: GroupHealth) -> list[str]:
    idle = ", ".join(f"{role} {share * 100:.0f}%" for role, share in health.idle.items())
    rss = ", ".join(
        f"{role} {health.rss_before[role]:.1f} → {health.rss_after[role]:.1f} MiB"
        for role in health.rss_before
    )
    lines = [
        f"### {health.group}",
        "",
        f"- CPU at idle, before any load (share of one core): {idle}",
        f"- before the load → {health.settle_s:g} s after it: resident memory {rss}; "
        f"gateway file descriptors {health.fds_before} → {health.fds_after}",
        f"- SIGTERM: exit code {health.exit_code} after {health.shutdown_s:.1f} s",
    ]
    stats = health.log_stats
    if isinstance(stats, str):
        lines.append(f"- decision log: {stats}")
    else:
        totals = ", ".join(f"{k} {v}" for k, v in stats["totals"].items())
        lines.append(
            f"- decision log: {stats['count']} records, chain verified (`agora log stats`), "
            f"for {health.answers} answers received through the gateway (the clients' tally, "
            f"counting warm-ups); outcomes: {totals}; statuses: {stats['statuses']}"
        )
        if stats["reasons"]:
            reasons = ", ".join(f"{n}x `{r}`" for r, n in stats["reasons"].items())
            lines.append(f"- most frequent reasons in the log: {reasons}")
    lines.append(
        "- gateway log warnings/errors: "
        + ("; ".join(health.log_findings) if health.log_findings else "none")
    )
    return lines


# --- main --------------------------------------------------------------------------------

GROUP_OF = {
    "direct": "direct",
    "bare": "bare",
    "gateway": "gateway",
    "gateway-jwt": "gateway",
    "gateway-polling": "gateway-polling",
    "gateway-polling-jwt": "gateway-polling",
}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Proxy overhead: direct vs bare proxy vs Agora gateway, side by side."
    )
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per cell")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds per cell")
    parser.add_argument(
        "--concurrency", default="1,32", help="comma-separated connection counts (default 1,32)"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds per cell; the median round is reported"
    )
    parser.add_argument(
        "--targets",
        default=",".join(TARGETS),
        help=f"comma-separated, from {', '.join(GROUP_OF)} (default {','.join(TARGETS)})",
    )
    parser.add_argument(
        "--stream-duration",
        type=float,
        default=5.0,
        help="seconds of streaming first-byte measurement per target (0: skip)",
    )
    parser.add_argument(
        "--idle", type=float, default=3.0, help="seconds of CPU sampling at idle per group"
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=32.0,
        help="seconds to wait after the load before reading the gateway's memory and file "
        "descriptors (aiohttp closes idle pooled connections 15 to 30 s after their last use)",
    )
    parser.add_argument("--output", type=Path, help="report file (default bench/results/...)")
    parser.add_argument("--no-write", action="store_true", help="print the report only")
    parser.add_argument(
        "--keep-workdir", action="store_true", help="keep configs, logs and decision logs"
    )
    args = parser.parse_args(argv)
    args.concurrency = [int(c) for c in str(args.concurrency).split(",") if c.strip()]
    args.targets = [t.strip() for t in str(args.targets).split(",") if t.strip()]
    unknown = set(args.targets) - set(GROUP_OF)
    if unknown or not args.targets:
        parser.error(f"--targets: unknown {sorted(unknown)}; choose from {list(GROUP_OF)}")
    if any(c < 1 for c in args.concurrency) or not args.concurrency or args.repeat < 1:
        parser.error("--concurrency and --repeat must be positive")
    return args


def note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_group(
    group: Group, model: Server, args: argparse.Namespace
) -> tuple[dict[tuple[str, int], Cell], dict[str, Cell], GroupHealth | None]:
    """Measure every target of a started group, then stop it and check its health."""
    tracked = {"model": model.pid}
    if group.proxy_pid is not None:
        tracked["proxy"] = group.proxy_pid
    if group.opa_pid is not None:
        tracked["opa"] = group.opa_pid
    cells: dict[tuple[str, int], Cell] = {}
    streams: dict[str, Cell] = {}
    answers = 0
    try:
        answers += sanity_check(group.targets)
        idle = idle_cpu(tracked, args.idle) if args.idle > 0 else {}
        rss_before = {r: rss_mib(p) for r, p in tracked.items() if r != "model"}
        fds_before = fd_count(group.proxy_pid) if group.proxy_pid else -1
        for conc in args.concurrency:
            for target in group.targets:
                rounds = []
                for round_ in range(args.repeat):
                    cell = measure(target, conc, args.warmup, args.duration, model.pid)
                    rounds.append(cell)
                    answers += int(cell.result["total_answers"])
                    note(
                        f"[{target.name:>15} c={conc:<3} round {round_ + 1}/{args.repeat}] "
                        f"{cell.rps:7.0f} req/s  p50 {cell.p('p50'):7.2f} ms  "
                        f"p99 {cell.p('p99'):8.2f} ms  non-200/errors {cell.non_200}"
                    )
                cells[(target.name, conc)] = median_cell(rounds)
        if args.stream_duration > 0:
            for target in group.targets:
                cell = measure(target, 1, 1.0, args.stream_duration, model.pid, stream=True)
                streams[target.name] = cell
                answers += int(cell.result["total_answers"])
                note(
                    f"[{target.name:>15} stream] first byte p50 "
                    f"{cell.p('p50', 'first_byte_ms'):6.2f} ms  non-200/errors {cell.non_200}"
                )
        if group.decision_log is not None and args.settle > 0:
            time.sleep(args.settle)
        rss_after = {r: rss_mib(p) for r, p in tracked.items() if r != "model"}
        fds_after = fd_count(group.proxy_pid) if group.proxy_pid else -1
    finally:
        stops = [server.stop() for server in group.servers]
    if group.decision_log is None:
        return cells, streams, None
    exit_code, shutdown_s = stops[0]
    health = GroupHealth(
        group.name,
        idle,
        rss_before,
        rss_after,
        fds_before,
        fds_after,
        args.settle,
        answers,
        exit_code,
        shutdown_s,
        decision_log_stats(group.decision_log),
        log_findings(group.servers[0].log),
    )
    return cells, streams, health


def main(argv: Sequence[str]) -> int:
    if argv[:1] == ["client"]:
        client_main(argv[1])
        return 0
    args = parse_args(argv)
    started = datetime.now(UTC)
    machine = machine_line()
    workdir = Path(tempfile.mkdtemp(prefix="agora-bench-"))
    cells: dict[tuple[str, int], Cell] = {}
    streams: dict[str, Cell] = {}
    healths: list[GroupHealth] = []
    model = start_model(workdir)
    try:
        for group_name in dict.fromkeys(GROUP_OF[t] for t in args.targets):
            members = [t for t in args.targets if GROUP_OF[t] == group_name]
            if group_name == "direct":
                group = Group("direct", [], [Target("direct", model.port)])
            elif group_name == "bare":
                group = start_bare(workdir, model)
            else:
                group = start_gateway(workdir, model, group_name, members)
            note(f"measuring {', '.join(members)}")
            group_cells, group_streams, health = run_group(group, model, args)
            cells.update(group_cells)
            streams.update(group_streams)
            if health is not None:
                healths.append(health)
    finally:
        model.stop()

    body_bytes = len(json.dumps(chat_body(False)))
    report = [
        f"# Proxy overhead, {started:%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {machine}.",
        "",
        f"Load: `POST {CHAT_PATH}`, non-streaming, model `{MODEL}`, {body_bytes}-byte body; "
        "closed loop over keep-alive connections from a separate client process; "
        f"{args.warmup:g} s warm-up then {args.duration:g} s measured per cell"
        + (f", median of {args.repeat} rounds by req/s" if args.repeat > 1 else "")
        + ". One worker per server process; only the model and the target's own processes "
        "run while a target is measured. Gateway: managed OPA, default policy bundle, decision "
        "log `durability: batch`; `-jwt` adds an RS256 bearer token (PEM public key file) to "
        "every request"
        + (
            "; `gateway-polling` runs OPA as a sidecar polling the bundle every 5 to 10 s "
            "(`policy.opa: external`, no long polling)."
            if any(t.startswith("gateway-polling") for t in args.targets)
            else "."
        ),
        "",
        "## Throughput and latency",
        "",
        *throughput_table(cells, args.targets),
        "",
        "## CPU time per request (µs, per process, during the measured window)",
        "",
        *cpu_table(cells, args.targets),
    ]
    if streams:
        report += [
            "",
            f"## Streaming: time to first body byte (1 connection, {args.stream_duration:g} s, "
            "a word a millisecond)",
            "",
            *stream_table(streams),
        ]
    if healths:
        report += ["", "## Gateway health over the run"]
        for health in healths:
            report += ["", *health_lines(health)]
    text = "\n".join(report) + "\n"
    print(text)
    if not args.no_write:
        output = args.output or RESULTS / f"proxy-{started:%Y-%m-%d}.md"
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
        note(f"written to {output}")
    if args.keep_workdir:
        note(f"work directory kept: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
