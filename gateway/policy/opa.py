"""OPA as the gateway runs it: its bundle configuration, and a supervised local process.

Whether OPA is managed (a child process on loopback) or external (the Kubernetes
sidecar), it is configured the same way: its bundle plugin downloads the active
verified bundle from the gateway's bundle service (a loopback-only listener),
so that each new version is activated by OPA in one transaction. ``agora
opa-config`` prints that configuration for a sidecar. OPA's own decision logs
stay off: the gateway keeps the decision log, with what OPA cannot know (the
caller, the upstream's status, latencies).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from gateway.exceptions import ConfigError
from gateway.lifecycle import State, Status, cancel_task
from gateway.pinning.service import BUNDLE_RESOURCE
from gateway.ports import free_port

logger = logging.getLogger("agora.opa")

BUNDLE_NAME = "agora"
LONG_POLL_S = 10
_RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0)
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}


def opa_config(bundle_service_url: str) -> dict[str, Any]:
    """OPA configuration that pulls the active verified bundle from the gateway's bundle service.

    No ``decision_logs`` section: its mere presence turns OPA's decision-log
    plugin on, which would upload to the only service configured, the gateway.
    """
    return {
        "services": {"agora": {"url": bundle_service_url.rstrip("/")}},
        "bundles": {
            BUNDLE_NAME: {
                "service": "agora",
                "resource": BUNDLE_RESOURCE,
                "persist": False,
                "polling": {
                    "min_delay_seconds": 1,
                    "max_delay_seconds": 2,
                    "long_polling_timeout_seconds": LONG_POLL_S,
                },
            }
        },
    }


def find_opa(binary: str) -> str:
    """The OPA executable: a path, or a name on PATH (the setup script installs it)."""
    found = shutil.which(binary) or shutil.which(str(Path.home() / ".cache/agora/bin" / binary))
    if found is None:
        raise ConfigError(
            f"policy.opa_binary: {binary!r} not found on PATH; run scripts/install-tools.sh opa"
        )
    return found


GO_RUNTIME_KNOBS = ("GOGC", "GOMEMLIMIT", "GOMAXPROCS")
"""Go runtime settings an operator may give the decision OPA through the gateway's environment."""
DECISION_OPA_GOGC = "400"
"""Go's collector for the decision OPA, unless the environment says otherwise: at Go's
default (100) it costs about a quarter of OPA's CPU per decision; at 400 the heap
settles some 30 MiB higher (bench/README.md, "Where the milliseconds go")."""


def bare_environment() -> dict[str, str]:
    """The environment of an OPA process the gateway starts: a PATH, nothing of the
    gateway's own (its secrets live there, and Rego's ``opa.runtime()`` reads it)."""
    return {"PATH": os.environ.get("PATH", os.defpath)}


def decision_environment() -> dict[str, str]:
    """The environment of the OPA that answers every request: the bare one, plus Go's
    collector tuned for throughput (``GOGC``), and any of ``GO_RUNTIME_KNOBS`` the
    gateway's own environment sets (these name no secret)."""
    env = bare_environment()
    env["GOGC"] = DECISION_OPA_GOGC
    env.update({knob: os.environ[knob] for knob in GO_RUNTIME_KNOBS if knob in os.environ})
    return env


class ManagedOpa(Status):
    """A local ``opa run --server`` on loopback, restarted with backoff if it dies."""

    name = "opa"
    gates_readiness = True  # no OPA, no decisions

    def __init__(self, binary: str, bundle_service_url: str, port: int | None = None):
        self._binary = find_opa(binary)
        self._bundle_service_url = bundle_service_url
        self.port = port or free_port()
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._relay: asyncio.Task[None] | None = None
        self.restarts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    async def start(self) -> None:
        self._workdir = tempfile.TemporaryDirectory(prefix="agora-opa-")
        config_file = Path(self._workdir.name) / "opa.yaml"
        config_file.write_text(yaml.safe_dump(opa_config(self._bundle_service_url)))
        self._supervisor = asyncio.create_task(self._supervise(config_file), name="managed-opa")

    async def stop(self) -> None:
        supervisor, self._supervisor = self._supervisor, None
        await cancel_task(supervisor)
        await self._terminate()
        self._state = State.STOPPED
        self._detail = "stopped"
        if self._workdir is not None:
            self._workdir.cleanup()

    async def wait_healthy(self, timeout_s: float) -> bool:
        """Wait until OPA answers ``/health``; False at the timeout."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as session:
            while asyncio.get_running_loop().time() < deadline:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(f"{self.url}/health") as response:
                        if response.status == 200:
                            return True
                await asyncio.sleep(0.05)
        return False

    async def _supervise(self, config_file: Path) -> None:
        failures = 0
        while True:
            await self._spawn(config_file)
            if await self.wait_healthy(timeout_s=30):
                self._state, self._detail = State.OK, f"pid {self.pid} on {self.url}"
                failures = 0
            assert self._process is not None
            code = await self._process.wait()
            self._state = State.ERROR
            self._detail = f"opa exited with code {code}; restarting"
            logger.warning("managed OPA exited with code %s; restarting", code)
            delay = _RESTART_BACKOFF_S[min(failures, len(_RESTART_BACKOFF_S) - 1)]
            failures += 1
            self.restarts += 1
            await asyncio.sleep(delay)

    async def _spawn(self, config_file: Path) -> None:
        self._process = await asyncio.create_subprocess_exec(
            self._binary,
            "run",
            "--server",
            "--addr",
            f"127.0.0.1:{self.port}",
            "--config-file",
            str(config_file),
            "--log-level",
            "error",
            "--skip-version-check",
            "--shutdown-grace-period",
            "1",
            env=decision_environment(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        self._state, self._detail = State.NOT_READY, f"starting pid {self._process.pid}"
        assert self._process.stdout is not None
        self._relay = asyncio.create_task(_relay_output(self._process.stdout), name="opa-output")

    async def _terminate(self) -> None:
        if self._relay is not None:
            self._relay.cancel()
        process, self._process = self._process, None
        await end_process(process)


async def end_process(process: asyncio.subprocess.Process | None) -> None:
    """Stop an OPA process the gateway started: SIGTERM, then SIGKILL after 5 s."""
    if process is None or process.returncode is not None:
        return
    process.terminate()
    try:
        await asyncio.wait_for(process.wait(), timeout=5)
    except TimeoutError:
        process.kill()
        await process.wait()


async def _relay_output(stream: asyncio.StreamReader) -> None:
    """OPA's log lines (JSON) into the gateway's log, so that nothing OPA says is lost."""
    async for raw in stream:
        line = raw.decode(errors="replace").strip()
        if not line:
            continue
        try:
            entry = json.loads(line)
            level, message = str(entry.get("level", "info")), str(entry.get("msg", line))
        except ValueError:
            level, message = "info", line
        logger.log(_LEVELS.get(level, logging.INFO), "opa: %s", message)
