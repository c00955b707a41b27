"""Faults injected into a running gateway's surroundings, each with a start and a clear.

Every injector acts from outside the gateway, as the fault would in production:

- ``Signals``: a signal to a process (the managed OPA: SIGKILL, or SIGSTOP then SIGCONT);
- ``FaultProxy``: a TCP proxy between the gateway and a server (the model
  upstream, a chain node) that passes bytes, refuses connections, resets a
  response midway, hangs, or delays;
- ``DiskFull``: the decision log on a small tmpfs that a filler file fills up;
- ``WriteErrors``: the log file's writes and fsyncs failing with EROFS, as on a
  filesystem remounted read-only, injected into the gateway's system calls by
  ``strace`` (a filesystem with a file open for writing cannot be remounted read-only);
- ``SlowLoris``: connections that send their headers a byte at a time, and never finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import signal
import socket
import struct
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


class Fault(Protocol):
    """A fault: ``start`` puts it in place, ``clear`` takes it away."""

    async def start(self) -> None: ...

    async def clear(self) -> None: ...


# --- processes -------------------------------------------------------------------------------


@dataclass
class Signals:
    """``start_signal`` to the process ``pid()`` names; then ``clear_signal``, if any."""

    pid: Callable[[], int]
    start_signal: signal.Signals
    clear_signal: signal.Signals | None = None
    _target: int | None = None

    async def start(self) -> None:
        self._target = self.pid()
        os.kill(self._target, self.start_signal)

    async def clear(self) -> None:
        if self.clear_signal is not None and self._target is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._target, self.clear_signal)


def children_named(pid: int, name: str) -> list[int]:
    """The direct children of ``pid`` whose executable is ``name``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            exe = os.path.basename(os.readlink(entry / "exe"))
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == pid and exe == name:
            found.append(int(entry.name))
    return found


def rss_bytes(pid: int) -> int:
    """Resident memory of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"no VmRSS for pid {pid}")


# --- the network -----------------------------------------------------------------------------

PASS, REFUSE, RESET, HANG, DELAY, OTHER = "pass", "refuse", "reset", "hang", "delay", "other"


@dataclass
class FaultProxy:
    """A loopback TCP proxy to ``target_port`` whose behaviour ``mode`` switches at any time.

    - ``pass``: bytes flow both ways;
    - ``refuse``: the listener is closed (connections are refused) and open connections reset;
    - ``reset``: a response is let through up to a few bytes of its body, then both sides reset;
    - ``hang``: requests are swallowed and nothing is answered;
    - ``delay``: each chunk of a response waits ``delay_s``;
    - ``other``: new connections go to ``other_port`` instead (another server answers).
    """

    target_port: int
    delay_s: float = 0.0
    other_port: int = 0
    mode: str = PASS
    port: int = 0
    _server: asyncio.Server | None = None
    _connections: set[asyncio.StreamWriter] = field(default_factory=set)
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def open(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening and reset every open connection."""
        await self._stop_listening()
        for writer in list(self._connections):
            _reset(writer)
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)

    async def set(self, mode: str) -> None:
        """Switch to ``mode``; ``refuse`` also resets the open connections, ``pass`` re-opens."""
        switching = OTHER in (mode, self.mode) and mode != self.mode
        self.mode = mode
        if mode == REFUSE:
            await self.close()
        elif switching:
            for writer in list(self._connections):
                _reset(writer)
        elif self._server is None:
            await self.open()

    def fault(self, mode: str) -> Fault:
        """This proxy in ``mode`` as a fault that clears back to ``pass``."""
        return _ProxyFault(self, mode)

    async def _stop_listening(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self.mode == REFUSE:
            _reset(client_w)
            return
        try:
            port = self.other_port if self.mode == OTHER else self.target_port
            upstream_r, upstream_w = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            _reset(client_w)
            return
        self._connections |= {client_w, upstream_w}
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        try:
            await asyncio.gather(
                self._pipe(client_r, upstream_w, client_w, requests=True),
                self._pipe(upstream_r, client_w, upstream_w, requests=False),
            )
        finally:
            self._handlers.discard(handler)
            self._connections -= {client_w, upstream_w}
            for writer in (client_w, upstream_w):
                writer.close()

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        other: asyncio.StreamWriter,
        *,
        requests: bool,
    ) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                if requests and self.mode == HANG:
                    continue  # swallowed: the upstream never sees it, nobody answers
                if not requests and self.mode == RESET:
                    writer.write(data[: _body_start(data) + 16])
                    await writer.drain()
                    _reset(writer)
                    _reset(other)
                    return
                if not requests and self.mode == DELAY:
                    await asyncio.sleep(self.delay_s)
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(OSError):
            if writer.can_write_eof():
                writer.write_eof()


def _body_start(data: bytes) -> int:
    end = data.find(b"\r\n\r\n")
    return len(data) // 2 if end < 0 else end + 4


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0), not an orderly FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@dataclass
class _ProxyFault:
    proxy: FaultProxy
    mode: str

    async def start(self) -> None:
        await self.proxy.set(self.mode)

    async def clear(self) -> None:
        await self.proxy.set(PASS)


# --- the disk --------------------------------------------------------------------------------


class MountImpossible(Exception):
    """This machine cannot mount a tmpfs (not root, or no CAP_SYS_ADMIN)."""


@dataclass
class Tmpfs:
    """A small tmpfs mounted at ``path`` for the test's lifetime."""

    path: Path
    size: str = "8m"

    def mount(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.size},mode=0700", "tmpfs", str(self.path)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise MountImpossible(done.stderr.strip() or f"mount exited {done.returncode}")

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], capture_output=True, check=False)


@dataclass
class DiskFull:
    """Fill the filesystem of ``directory`` with a file; remove it to clear."""

    directory: Path

    async def start(self) -> None:
        await asyncio.to_thread(self._fill)

    def _fill(self) -> None:
        with (self.directory / "filler").open("wb", buffering=0) as filler:
            for size in (65536, 512, 1):  # until ENOSPC, down to the last byte
                with contextlib.suppress(OSError):
                    while True:
                        filler.write(b"\0" * size)

    async def clear(self) -> None:
        (self.directory / "filler").unlink(missing_ok=True)


@dataclass
class WriteErrors:
    """Writes and fsyncs of ``path`` by process ``pid()`` fail with ``errno`` (strace injection).

    Only system calls on that file are touched (``strace -P``); the rest of the
    process runs on, slowed by the tracing. Clearing detaches strace.
    """

    pid: Callable[[], int]
    path: Path
    errno: str = "EROFS"
    _strace: asyncio.subprocess.Process | None = None

    @staticmethod
    def available() -> str | None:
        """None if strace can trace processes here; else why not."""
        if not shutil.which("strace"):
            return "strace is not installed"
        probe = subprocess.run(
            ["strace", "-qq", "-o", "/dev/null", "true"],
            capture_output=True,
            text=True,
            check=False,
        )
        return (
            None if probe.returncode == 0 else f"strace cannot trace here: {probe.stderr.strip()}"
        )

    async def start(self) -> None:
        calls = "write,pwrite64,writev,fsync,fdatasync"
        self._strace = await asyncio.create_subprocess_exec(
            "strace", "-qq", "-f", "-p", str(self.pid()), "-P", str(self.path),
            "-e", f"trace={calls}", "-e", f"inject={calls}:error={self.errno}",
            "-o", "/dev/null",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        await asyncio.sleep(0.5)  # attached to every thread
        if self._strace.returncode is not None:
            raise RuntimeError(f"strace failed: {await self._strace.stderr.read()!r}")  # type: ignore[union-attr]

    async def clear(self) -> None:
        if self._strace is not None and self._strace.returncode is None:
            self._strace.send_signal(signal.SIGINT)  # detaches cleanly
            await self._strace.wait()


# --- clients ---------------------------------------------------------------------------------


@dataclass
class SlowLoris:
    """``count`` connections to ``port`` that send a header byte every ``interval_s``, forever."""

    port: int
    count: int = 200
    interval_s: float = 0.5
    opened: int = 0
    cut: int = 0
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._loris()) for _ in range(self.count)]
        await asyncio.sleep(0)

    async def clear(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _loris(self) -> None:
        """One attacker's connection, opened again each time the gateway cuts it."""
        while True:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(self.interval_s)
                continue
            self.opened += 1
            try:
                await self._trickle(reader, writer)
            except OSError:
                pass
            finally:
                writer.close()
            self.cut += 1

    async def _trickle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Header bytes one by one until the gateway closes the connection."""
        request = b"POST /v1/chat/completions HTTP/1.1\r\nHost: agora\r\nX-Padding: "
        for n in itertools.count():
            writer.write(request[n : n + 1] or b"a")
            await writer.drain()
            with contextlib.suppress(TimeoutError):
                if await asyncio.wait_for(reader.read(1024), self.interval_s) == b"":
                    return


async def during(fault: Fault, seconds: float, tick: Callable[[], Awaitable[None]]) -> None:
    """Hold ``fault`` for ``seconds``, calling ``tick`` about every 0.25 s meanwhile."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    await fault.start()
    try:
        while loop.time() < end:
            await tick()
            await asyncio.sleep(min(0.25, max(0.0, end - loop.time())))
    finally:
        await fault.clear()
