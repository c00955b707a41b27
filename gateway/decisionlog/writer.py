"""The decision log writer: a bounded queue, and one task that appends records in order.

Requests hand their records to :meth:`DecisionLogWriter.submit`, which checks
them and queues them; the writer task takes everything queued as one batch,
chains it (``seq``, ``prev``, ``hash``), writes it in a worker thread (the
event loop never waits on the disk) and fsyncs it once: a group commit. A
submitter that asked for durability is released by the fsync of its batch, so
many concurrent requests share one fsync. Durability (``decision_log.durability``)
decides when the writer fsyncs:

- ``record`` and ``batch``: after every batch (with ``record``, the gateway
  also waits for that fsync before acting on a decision);
- ``interval``: at most every ``interval_ms``.

No record is dropped: a full queue makes ``submit`` wait or fail the request, by
``on_full``; a failed write or fsync is counted and retried until the disk takes it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, cast

from gateway.config import DecisionLog, Transparency
from gateway.decisionlog.errors import (
    DecisionLogError,
    DecisionLogFull,
    DecisionLogUnavailable,
    UnrecordableDecision,
)
from gateway.decisionlog.files import fsync_dir, lock_exclusively, rotated_name
from gateway.decisionlog.jcs import costly_to_encode
from gateway.decisionlog.record import (
    DecisionEntry,
    caller_key,
    format_time,
    prepare_record,
    seal_canonical,
)
from gateway.decisionlog.recovery import recover
from gateway.lifecycle import State

if TYPE_CHECKING:
    from gateway.transparency.log import TransparencyLog

logger = logging.getLogger(__name__)

_MAX_BACKOFF_S = 5.0


@dataclass(slots=True)
class _Item:
    fields: dict[str, object]
    canonical: bytes
    """The canonical JSON of ``fields``, chained without encoding them again."""
    done: asyncio.Future[None] | None


@dataclass(slots=True)
class _Line:
    data: bytes
    done: asyncio.Future[None] | None


class _FirstRecord(NamedTuple):
    time: str
    seq: int
    rotate_at: str | None
    """The record time from which the file is due for rotation by age (same text format)."""


class DecisionLogWriter:
    """Appends decisions to the hash-chained log, off the request path.

    One writer per log path: a lock file (``<path>.lock``) keeps a second process
    from interleaving another chain into the same file.
    """

    def __init__(
        self,
        config: DecisionLog,
        *,
        environ: Mapping[str, str] | None = None,
        transparency: Transparency | None = None,
    ) -> None:
        """Read the caller-hash and log keys; raise ConfigError if one is missing or unusable."""
        self._config = config
        self._path: Path = config.path
        environ = os.environ if environ is None else environ
        self._caller_key = caller_key(config, environ)
        # Imported here: the transparency package builds on this one's files and errors.
        from gateway.transparency.log import TransparencyLog

        self._tlog = TransparencyLog(transparency or Transparency(), config.path, environ)
        self._queue: asyncio.Queue[_Item | None] = asyncio.Queue(config.queue_size)
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._blocked = 0
        self._state = State.NOT_READY
        self._write_errors = 0
        self._syncs = 0
        self._last_error = ""
        self._count = 0
        self._head: str | None = None
        self._batch: deque[_Item] = deque()
        # The chain and file state below is used by one thread at a time.
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._next_seq = 1
        self._prev: str | None = None
        self._file_first: _FirstRecord | None = None
        self._file_bytes = 0  # records assigned to the current file, written or not
        self._synced_size = 0
        self._unsynced: list[_Line] = []
        self._written = 0  # how many of _unsynced are in the file
        self._durable: list[asyncio.Future[None]] = []
        self._last_sync = 0.0
        self._broken = False

    @property
    def state(self) -> State:
        """``error`` while a write is failing and being retried."""
        return self._state

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    @property
    def count(self) -> int:
        """Length of the chain in the files: ``seq`` of the last record written."""
        return self._count

    @property
    def head_hash(self) -> str | None:
        """``hash`` of the last record written; None for an empty log."""
        return self._head

    @property
    def transparency(self) -> TransparencyLog:
        """The Merkle tree over the records and the checkpoints signed over it."""
        return self._tlog

    @property
    def write_errors(self) -> int:
        """Failed write or fsync attempts since start (each was retried)."""
        return self._write_errors

    @property
    def syncs(self) -> int:
        """Successful fsyncs of the log file since start: records per fsync is the group size."""
        return self._syncs

    @property
    def detail(self) -> str:
        """One line for operators (readiness endpoints): why the state is what it is."""
        if self._state is State.ERROR:
            return f"{self._last_error}; retrying ({self._write_errors} errors so far)"
        return f"{self._count} records, queue {self.queue_depth}/{self._queue.maxsize}"

    async def start(self) -> None:
        """Recover the head of the chain (setting aside a torn last record) and start writing."""
        if self._task is not None or self._closing:
            raise DecisionLogError("a decision log writer can be started only once")
        try:
            await asyncio.to_thread(self._open)
        except OSError as exc:
            self._state, self._last_error = State.ERROR, f"cannot open {self._path}: {exc}"
            raise DecisionLogError(f"cannot open decision log {self._path}: {exc}") from exc
        except DecisionLogError as exc:
            self._state, self._last_error = State.ERROR, str(exc)
            raise
        self._task = asyncio.create_task(self._run(), name="decision-log-writer")
        self._state = State.OK

    async def submit(self, decision: DecisionEntry, *, durable: bool = False) -> None:
        """Queue a record; with ``durable``, return once it is fsynced.

        Raise DecisionLogFull (queue full, ``on_full: fail_closed``),
        DecisionLogUnavailable (writer not running), or UnrecordableDecision (a
        decision that cannot be recorded): in every case the request must fail
        closed. A large stored body is checked in a worker thread, off the loop.
        """
        if self._task is None or self._closing:
            raise DecisionLogUnavailable("the decision log writer is not running")
        include_body = self._config.include_body and decision.event == "decision"
        try:
            if include_body and costly_to_encode(decision.body):
                fields, canonical = await asyncio.to_thread(
                    prepare_record, decision, caller_key=self._caller_key, include_body=True
                )
            else:
                fields, canonical = prepare_record(
                    decision, caller_key=self._caller_key, include_body=include_body
                )
        except (ValueError, TypeError) as exc:
            raise UnrecordableDecision(f"the decision cannot be recorded: {exc}") from exc
        if self._closing:  # stopped while the record was being built
            raise DecisionLogUnavailable("the decision log writer is not running")
        done = asyncio.get_running_loop().create_future() if durable else None
        item = _Item(fields, canonical, done)
        if not self._blocked and not self._queue.full():
            self._queue.put_nowait(item)
        elif self._config.on_full == "fail_closed":
            raise DecisionLogFull(f"decision log queue is full ({self._queue.maxsize} records)")
        else:
            # Behind requests already waiting, in arrival order. Shielded: a decision
            # that was made is logged even if its request is cancelled meanwhile.
            self._blocked += 1
            await asyncio.shield(self._put_blocked(item))
        if done is not None:
            await done

    async def stop(self) -> None:
        """Write and fsync every queued record, then close: a clean shutdown loses nothing.

        Cancelling ``stop`` (a shutdown deadline) cancels the writer; the records
        not yet on disk are then reported in an error log entry.
        """
        self._closing = True
        if self._task is None:
            self._state = State.STOPPED
            return
        if not self._queue.full():
            self._queue.put_nowait(None)  # wakes the writer if it waits for records
        try:
            await self._task
        finally:
            self._state = State.STOPPED

    async def _put_blocked(self, item: _Item) -> None:
        try:
            await self._queue.put(item)
        finally:
            self._blocked -= 1

    async def _run(self) -> None:
        try:
            while not (self._closing and self._queue.empty() and not self._blocked):
                await self._next_batch()
                await self._flush_until_ok(force_sync=False)
            await self._flush_until_ok(force_sync=True)
            await asyncio.to_thread(self._close)
        except asyncio.CancelledError:
            self._abandon()
            raise

    async def _next_batch(self) -> None:
        """Wait for records (no longer than until an interval fsync is due) and take all queued."""
        try:
            async with asyncio.timeout(self._sync_delay()):
                item = await self._queue.get()
        except TimeoutError:
            return
        while True:
            if item is not None:
                self._batch.append(item)
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                return

    def _sync_delay(self) -> float | None:
        """How long the writer may wait for records: until an fsync or a checkpoint is due."""
        delays = [self._tlog.checkpoint_delay(self._next_seq - 1)]
        if self._config.durability == "interval" and self._unsynced:
            delays.append(self._last_sync + self._config.interval_ms / 1000 - time.monotonic())
        due = [delay for delay in delays if delay is not None]
        return max(0.0, min(due)) if due else None

    async def _flush_until_ok(self, *, force_sync: bool) -> None:
        backoff = 0.05
        while True:
            try:
                durable = await asyncio.to_thread(self._flush, force_sync)
            except Exception as exc:
                self._broken = True
                self._write_errors += 1
                self._state, self._last_error = State.ERROR, f"write to {self._path} failed: {exc}"
                logger.error(
                    "decision log %s: write failed (%s); %d records wait, retrying in %.2fs",
                    self._path, exc, len(self._batch) + len(self._unsynced), backoff,
                )  # fmt: skip
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)
                continue
            self._state = State.OK
            for done in durable:
                if not done.done():
                    done.set_result(None)
            return

    def _abandon(self) -> None:
        # list() copies in one step, even if a worker thread is still in _flush.
        waiting = [item.done for item in list(self._batch)]
        waiting += [line.done for line in list(self._unsynced)]
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not None:
                waiting.append(item.done)
        logger.error(
            "decision log %s: writer cancelled with %d records not known to be on disk",
            self._path, len(waiting),
        )  # fmt: skip
        for done in waiting:
            if done is not None and not done.done():
                done.set_exception(DecisionLogError("the decision log writer was cancelled"))

    # The methods below run in a worker thread, one call at a time.

    def _open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = lock_exclusively(self._path)
        try:
            head = recover(self._path)
            self._tlog.open(head.next_seq - 1)
            self._open_current()
        except BaseException:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise
        self._next_seq, self._prev = head.next_seq, head.prev
        self._count, self._head = head.next_seq - 1, head.prev
        self._file_bytes = self._synced_size = head.size
        if head.file_first is not None:
            self._file_first = self._first_record(*head.file_first)
        self._last_sync = time.monotonic()

    def _flush(self, force_sync: bool) -> list[asyncio.Future[None]]:
        """Chain, write and (per durability) fsync the batch; return the futures now durable.

        When it raises, the caller calls it again later: the records chained so
        far wait in ``_unsynced`` and are written again, whole, after the file is
        cut back to its last fsynced size; the rest of the batch is still queued.
        """
        if self._broken:
            self._repair()
        durability = self._config.durability
        lines: list[bytes] = []
        ids: list[str] = []
        try:  # the tree takes every record chained, even if a rotation fails midway
            while self._batch:
                item = self._batch[0]
                fields = item.fields
                record_time = cast(str, fields["time"])
                if self._rotation_due(record_time):
                    self._rotate()
                digest, line = seal_canonical(item.canonical, self._next_seq, self._prev)
                if self._file_first is None:
                    self._file_first = self._first_record(record_time, self._next_seq)
                lines.append(line)
                ids.append(cast(str, fields["decision_id"]))
                self._unsynced.append(_Line(line, self._batch.popleft().done))
                self._file_bytes += len(line)
                self._next_seq += 1
                self._prev = digest
        finally:
            self._tlog.add(lines, ids)
        self._write()
        interval_due = time.monotonic() - self._last_sync >= self._config.interval_ms / 1000
        checkpoint_due = self._tlog.checkpoint_due(self._next_seq - 1)
        if force_sync or durability != "interval" or interval_due or checkpoint_due:
            self._sync()
        if checkpoint_due or force_sync:  # a checkpoint covers only records on disk
            self._tlog.checkpoint(self._next_seq - 1)
        durable, self._durable = self._durable, []
        return durable

    def _write(self) -> None:
        pending = self._unsynced[self._written :]
        if not pending:
            return
        assert self._fd is not None
        data = memoryview(b"".join(line.data for line in pending))
        while data:
            data = data[os.write(self._fd, data) :]
        self._written = len(self._unsynced)
        self._count, self._head = self._next_seq - 1, self._prev

    def _sync(self) -> None:
        if not self._unsynced:
            return
        self._write()
        assert self._fd is not None
        os.fsync(self._fd)
        self._syncs += 1
        self._synced_size = self._file_bytes
        self._durable.extend(line.done for line in self._unsynced if line.done is not None)
        self._unsynced.clear()
        self._written = 0
        self._last_sync = time.monotonic()

    def _repair(self) -> None:
        """Cut the file back to its last fsynced size, so that records are rewritten whole."""
        if self._fd is None:
            self._open_current()
        assert self._fd is not None
        os.ftruncate(self._fd, self._synced_size)
        self._written = 0
        self._broken = False

    def _rotation_due(self, record_time: str) -> bool:
        first = self._file_first
        if first is None:
            return False
        if self._config.rotate_bytes and self._file_bytes >= self._config.rotate_bytes:
            return True
        return first.rotate_at is not None and record_time >= first.rotate_at

    def _rotate(self) -> None:
        """Make the current file durable, rename it aside, and go on in a new one."""
        assert self._file_first is not None and self._fd is not None
        self._sync()
        target = rotated_name(self._path, self._file_first.time, self._file_first.seq)
        if target.exists():
            raise DecisionLogError(f"cannot rotate {self._path}: {target} exists")
        os.close(self._fd)
        self._fd = None
        os.rename(self._path, target)
        self._file_first = None
        self._file_bytes = self._synced_size = 0
        fsync_dir(self._path.parent)
        self._open_current()
        logger.info("decision log rotated: %s", target.name)

    def _open_current(self) -> None:
        created = not self._path.exists()
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        self._fd = os.open(self._path, flags, 0o600)
        if created:
            fsync_dir(self._path.parent)

    def _first_record(self, record_time: str, seq: int) -> _FirstRecord:
        rotate_at = None
        if self._config.rotate_s:
            start = datetime.fromisoformat(record_time)
            rotate_at = format_time(start + timedelta(seconds=self._config.rotate_s))
        return _FirstRecord(record_time, seq, rotate_at)

    def _close(self) -> None:
        for fd in (self._fd, self._lock_fd):
            if fd is not None:
                os.close(fd)
        self._fd = self._lock_fd = None
