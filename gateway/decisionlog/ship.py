"""Shipping the decision log to an HTTP receiver, as OPA uploads its decision logs.

The sink is a worker that follows the log files (gateway/decisionlog/tail.py),
never the request path: a decision is on its way to the local file before the
sink sees it, and a slow or failing receiver can neither block a request nor
cost a record. Records go out in ``seq`` order as OPA decision-log events
(gateway/decisionlog/events.py), in batches: one POST of a gzip'd JSON array
(``Content-Encoding: gzip``), at most ``batch_records`` events and
``batch_bytes`` of JSON each. A batch that fails (no answer, an answer other
than 2xx) is sent again, whole, after a back-off that doubles up to
``backoff_max_s``; nothing after it goes out before it (a 413 halves the batch).

Delivery is at least once. The sink's position (``seq`` and ``hash`` of the
last record the receiver acknowledged) is kept in a small state file, written
atomically after each acknowledged batch; a restarted sink resumes after it,
from the files. A crash between the receiver's answer and that write sends the
batch again: receivers deduplicate by ``labels.id`` and ``seq`` (or ``hash``).
Before shipping on from its position, the sink checks that the files still
hold the same chain there, so that a replaced or cut log is never shipped as
if it continued the old one.

A failing receiver leaves the sink in ``warn`` (``error`` when the files no
longer continue the chain) and never makes the gateway unready: the local log
is the record of what was decided, and shipping catches up when the receiver
is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from gateway import __version__
from gateway.config import LogShip
from gateway.decisionlog.events import event_json
from gateway.decisionlog.files import fsync_dir
from gateway.decisionlog.tail import ChainTail, Entry, TailError
from gateway.exceptions import ConfigError, DecisionLogError
from gateway.lifecycle import State

logger = logging.getLogger(__name__)

FIRST_BACKOFF_S = 0.5


@dataclass(frozen=True, slots=True)
class Position:
    """The last record the receiver acknowledged."""

    seq: int
    hash: str


@dataclass(frozen=True, slots=True)
class _Batch:
    count: int
    last: Position
    body: bytes
    """The gzip'd JSON array."""
    size: int
    """Bytes of JSON before compression."""


class ShipFailed(DecisionLogError):
    """The receiver did not acknowledge a batch (no answer, or not 2xx)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def state_path(config: LogShip, log_path: Path) -> Path:
    """Where the sink keeps its position: as configured, else beside the log."""
    return config.state_path or log_path.with_name(log_path.name + ".ship-state.json")


def read_position(path: Path) -> Position | None:
    """The position kept in the state file; None when there is none (ship from the start)."""
    try:
        raw = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise DecisionLogError(f"cannot read the shipping state {path}: {exc}") from exc
    seq = raw.get("seq") if isinstance(raw, dict) else None
    digest = raw.get("hash") if isinstance(raw, dict) else None
    if not isinstance(seq, int) or seq < 1 or not isinstance(digest, str):
        raise DecisionLogError(f"{path}: not a shipping state (seq and hash expected)")
    return Position(seq, digest)


def write_position(path: Path, position: Position) -> None:
    """Replace the state file atomically (write aside, fsync, rename, fsync the directory)."""
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as file:
        file.write(json.dumps({"seq": position.seq, "hash": position.hash}).encode() + b"\n")
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    fsync_dir(path.parent)


def header_values(config: LogShip, environ: Mapping[str, str]) -> dict[str, str]:
    """The configured request headers, read from the environment; ConfigError naming the key."""
    headers = {}
    for header, name in config.headers_env.items():
        value = environ.get(name, "")
        if not value:
            raise ConfigError(
                f"decision_log.ship.headers_env.{header}: environment variable {name} "
                "is unset or empty"
            )
        headers[header] = value
    return headers


class LogShipper:
    """The worker that sends the decision log to ``decision_log.ship.url``."""

    name = "decision_log_ship"
    gates_readiness = False
    """A receiver that is down delays shipping; it never stops the gateway from serving."""

    def __init__(
        self,
        config: LogShip,
        log_path: Path,
        *,
        decision_path: str,
        head: Callable[[], int],
        checkpoint: Callable[[], str | None] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        """``head``: the log's length (the writer's ``count``), for the lag.

        ``checkpoint``: the latest signed checkpoint of the log, if it has one,
        added to each event. Raise ConfigError when a header's variable is unset.
        """
        self._config = config
        self._log_path = log_path
        self._state_path = state_path(config, log_path)
        self._decision_path = decision_path
        self._head = head
        self._checkpoint = checkpoint
        self._headers = {
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
            "User-Agent": f"agora-gateway/{__version__}",
            **header_values(config, os.environ if environ is None else environ),
        }
        self._labels = {"id": socket.gethostname(), "app": "agora", "version": __version__}
        self._labels.update(config.labels)
        self._tail: ChainTail | None = None
        self._pending: deque[Entry] = deque()
        self._limit = config.batch_records
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._state = State.NOT_READY
        self._error = ""
        self._failing_since: float | None = None
        self.position: Position | None = None
        self._keeping: asyncio.Future[None] | None = None
        self.shipped_records = 0
        self.shipped_batches = 0
        self.failures = 0
        self.last_success: float | None = None
        """Unix time of the last acknowledged batch."""

    @property
    def state(self) -> State:
        return self._state

    @property
    def shipped_seq(self) -> int:
        """``seq`` of the last record the receiver acknowledged (0: none)."""
        return 0 if self.position is None else self.position.seq

    @property
    def lag(self) -> int:
        """Records in the log that the receiver has not acknowledged yet."""
        seen = self._tail.last_seen if self._tail is not None else 0
        return max(0, max(self._head(), seen) - self.shipped_seq)

    @property
    def detail(self) -> str:
        where = f"shipped up to seq {self.shipped_seq}, {self.lag} behind"
        if self._state is State.ERROR:
            return f"{self._error}; shipping stopped ({where})"
        if self._failing_since is not None:
            since = time.monotonic() - self._failing_since
            return f"failing for {since:.0f} s: {self._error}; {where}"
        return where

    async def start(self) -> None:
        """Read the position (the state file) and start following the log; raise if unreadable."""
        if self._task is not None:
            raise DecisionLogError("a decision log sink can be started only once")
        self.position = await asyncio.to_thread(read_position, self._state_path)
        if self.position is None:
            self._tail = ChainTail(self._log_path, 1, None, trust_first=True)
        else:
            self._tail = ChainTail(self._log_path, self.position.seq + 1, self.position.hash)
        timeout = aiohttp.ClientTimeout(total=self._config.timeout_s)
        self._session = aiohttp.ClientSession(timeout=timeout, auto_decompress=False)
        self._task = asyncio.create_task(self._run(), name="decision-log-ship")
        self._state = State.OK

    async def stop(self) -> None:
        """Send what the log holds, then stop; the position is kept for the next start.

        Sending stops at the first failed attempt, and after ``timeout_s`` at most,
        so that a shutdown is not held up by a backlog: the rest goes after a restart.
        """
        self._stopping.set()
        try:
            if self._task is not None:
                async with asyncio.timeout(self._config.timeout_s):
                    await self._task
        except TimeoutError:
            logger.warning(
                "decision log shipping stopped at seq %d with %d records not shipped yet: "
                "they are shipped after the next start", self.shipped_seq, self.lag,
            )  # fmt: skip
        finally:
            if self._keeping is not None:
                with contextlib.suppress(OSError):
                    await self._keeping
            if self._session is not None:
                await self._session.close()
            if self._tail is not None:
                self._tail.close()
            self._state = State.STOPPED

    async def _run(self) -> None:
        try:
            await self._ship()
        except TailError as exc:
            self._state, self._error = State.ERROR, str(exc)
            logger.error("decision log shipping stopped: %s", exc)
        except Exception as exc:
            self._state, self._error = State.ERROR, f"{type(exc).__name__}: {exc}"
            logger.exception("decision log shipping stopped")

    async def _ship(self) -> None:
        """Send batches in order until told to stop; each until the receiver acknowledges it."""
        first_backoff = min(FIRST_BACKOFF_S, self._config.backoff_max_s)
        backoff = first_backoff
        batch: _Batch | None = None
        while True:
            if batch is None:
                checkpoint = self._checkpoint() if self._checkpoint is not None else None
                try:
                    batch = await asyncio.to_thread(self._next_batch, checkpoint)
                except OSError as exc:
                    self._failed(f"cannot read the log: {exc}")
                if batch is None:
                    if self._stopping.is_set():
                        return
                    await self._pause(self._config.interval_s)
                    continue
            try:
                await self._send(batch)
                # A position that cannot be kept sends the batch again: at least once.
                # Shielded, so that a stop's deadline never leaves the state file ahead
                # of ``position``: ``stop`` waits for the write it started.
                self._keeping = asyncio.ensure_future(self._keep(batch))
                await asyncio.shield(self._keeping)
            except (ShipFailed, OSError) as exc:
                self._failed(
                    str(exc) if isinstance(exc, ShipFailed) else f"cannot keep the position: {exc}"
                )
                if self._stopping.is_set():
                    return
                if isinstance(exc, ShipFailed) and exc.status == 413 and batch.count > 1:
                    self._limit = max(1, batch.count // 2)
                    logger.warning("receiver refused %d events as too large: sending %d per batch",
                                   batch.count, self._limit)  # fmt: skip
                    batch = None
                    continue
                await self._pause(backoff)
                backoff = min(backoff * 2, self._config.backoff_max_s)
                continue
            batch, backoff = None, first_backoff

    async def _keep(self, batch: _Batch) -> None:
        """Write the acknowledged batch's position to the state file, then count it."""
        await asyncio.to_thread(write_position, self._state_path, batch.last)
        self._acknowledged(batch)

    async def _pause(self, seconds: float) -> None:
        """Wait, or less when the sink is told to stop (it then sends what is left)."""
        try:
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
        except TimeoutError:
            pass

    def _next_batch(self, checkpoint: str | None) -> _Batch | None:
        """The next batch from the records not acknowledged yet (runs in a worker thread)."""
        assert self._tail is not None
        if len(self._pending) < self._limit:
            self._pending.extend(self._tail.read(self._limit - len(self._pending)))
        if not self._pending:
            return None
        parts: list[bytes] = []
        size = 1
        for record, line in list(self._pending)[: self._limit]:
            part = event_json(
                record, line, path=self._decision_path, labels=self._labels, checkpoint=checkpoint
            )
            if parts and size + len(part) + 1 > self._config.batch_bytes:
                break
            parts.append(part)
            size += len(part) + 1
        last = self._pending[len(parts) - 1].record
        body = b"[" + b",".join(parts) + b"]"
        return _Batch(
            len(parts),
            Position(last["seq"], last["hash"]),
            gzip.compress(body, compresslevel=6),
            size,
        )

    async def _send(self, batch: _Batch) -> None:
        assert self._session is not None
        url = str(self._config.url)
        try:
            async with self._session.post(url, data=batch.body, headers=self._headers) as response:
                answer = await response.read()
                if not 200 <= response.status < 300:
                    text = answer[:200].decode("utf-8", "replace")
                    raise ShipFailed(f"HTTP {response.status}: {text}", response.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ShipFailed(f"{type(exc).__name__}: {exc}" if str(exc) else repr(exc)) from exc

    def _failed(self, error: str) -> None:
        self.failures += 1
        self._error = error
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            logger.warning("decision log shipping failing: %s; retrying", error)
        self._state = State.WARN

    def _acknowledged(self, batch: _Batch) -> None:
        for _ in range(batch.count):
            self._pending.popleft()
        self.position = batch.last
        self.shipped_records += batch.count
        self.shipped_batches += 1
        self.last_success = time.time()
        if self._failing_since is not None:
            logger.info(
                "decision log receiver back after %.0f s", time.monotonic() - self._failing_since
            )
            self._failing_since = None
        self._state = State.OK
