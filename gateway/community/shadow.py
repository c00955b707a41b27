"""Open proposals judged beside the version in force, on sampled live traffic: never enforced.

The request path hands each decided request to :meth:`ShadowEvaluator.offer`,
which only samples it and puts it on a bounded queue (never waits, never
raises, drops when full); a background task asks each proposal's bundle what
it would have decided and counts where it differs from what the version in
force decided. The bundles are served by OPA processes of their own, one per
digest (:class:`ShadowPool`), started with the bundle as a local directory:
never the enforcing OPA, never the bundle service, so a shadow bundle cannot
reach an answer the gateway gives. Only bundles whose digest was checked
against a proposal on chain (or the version in force) are loaded, and only
once they compile without the built-ins that reach the network or the
environment (gateway.community.sandbox).

The same pool answers the page's "what would the policy say" form.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from gateway.community.sandbox import check_untrusted_bundle
from gateway.config import Shadow
from gateway.decisionlog.figures import NO_GROUP
from gateway.decisionlog.record import group_of
from gateway.exceptions import AgoraError
from gateway.lifecycle import cancel_task
from gateway.policy.opa import bare_environment, end_process, find_opa
from gateway.ports import free_port
from gateway.redaction import redact_input

logger = logging.getLogger("agora.shadow")

MAX_QUEUED_BYTES = 32 * 2**20
"""Request bodies held by the shadow's queue at most: samples beyond it are dropped."""
RETRY_S = 60.0
"""A bundle whose OPA did not start (invalid Rego, say) is not started again for this long:
each sampled request would otherwise spawn a process."""


@dataclass(frozen=True)
class Verdict:
    """What one bundle decided: ``allow`` and its reasons; ``error`` when it could not say."""

    allow: bool
    reasons: tuple[str, ...] = ()
    error: str | None = None


class ShadowOpa:
    """``opa run --server`` on loopback with one bundle, read from a private directory."""

    def __init__(self, binary: str, files: Mapping[str, bytes], decision_path: str):
        self._binary = find_opa(binary)
        self._files = files
        self._path = "/v1/data/" + decision_path.strip("/")
        self.port = free_port()
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self._process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, session: aiohttp.ClientSession, timeout_s: float = 30) -> None:
        """Write the bundle out, start OPA on it, and wait until it answers."""
        self._workdir = tempfile.TemporaryDirectory(prefix="agora-shadow-")
        root = Path(self._workdir.name) / "bundle"
        await asyncio.to_thread(_write_files, root, self._files)
        try:
            await check_untrusted_bundle(self._binary, root, Path(self._workdir.name))
        except BaseException:
            await self.stop()
            raise
        log = Path(self._workdir.name) / "opa.log"
        output = await asyncio.to_thread(log.open, "wb")
        try:
            self._process = await asyncio.create_subprocess_exec(
                self._binary, "run", "--server", "--addr", f"127.0.0.1:{self.port}",
                "--bundle", str(root), "--log-level", "error", "--skip-version-check",
                stdin=asyncio.subprocess.DEVNULL, stdout=output, stderr=output,
                env=bare_environment(),
            )  # fmt: skip
        finally:
            output.close()  # the child keeps its own copy
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.returncode is not None:
                break
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(f"{self.url}/health?bundles=true") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)
        said = await asyncio.to_thread(_tail, log)
        await self.stop()
        raise RuntimeError(f"the shadow OPA did not start: {said or 'no answer'}")

    async def decide(
        self, session: aiohttp.ClientSession, document: Mapping[str, Any], timeout_s: float
    ) -> Verdict:
        try:
            async with session.post(
                f"{self.url}{self._path}",
                json={"input": document},
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as response:
                if response.status != 200:
                    return Verdict(False, error=f"OPA answered HTTP {response.status}")
                answer = await response.json()
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            return Verdict(False, error=f"OPA did not answer: {exc or type(exc).__name__}")
        return to_verdict(answer.get("result") if isinstance(answer, dict) else None)

    async def stop(self) -> None:
        process, self._process = self._process, None
        await end_process(process)
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None


def _write_files(root: Path, files: Mapping[str, bytes]) -> None:
    for path, content in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)


def _tail(log: Path, limit: int = 300) -> str:
    """The end of what OPA said (a compile error names the file and line)."""
    try:
        text = log.read_text(errors="replace").strip()
    except OSError:
        return ""
    return text[-limit:]


def to_verdict(result: Any) -> Verdict:
    """A decision document as the gateway reads it (engine.py): a bad shape is a deny."""
    if not isinstance(result, dict) or not isinstance(result.get("allow"), bool):
        return Verdict(False, ("the policy decision is malformed (no boolean 'allow')",))
    raw = result.get("reasons") or []
    reasons = tuple(str(r) for r in raw) if isinstance(raw, list) else (str(raw),)
    if not result["allow"] and not reasons:
        reasons = ("denied by policy",)
    return Verdict(result["allow"], reasons)


class ShadowPool:
    """One shadow OPA per bundle digest, at most ``max_bundles``, started when first needed."""

    def __init__(self, binary: str, decision_path: str, max_bundles: int, timeout_ms: int):
        self._binary = binary
        self._decision_path = decision_path
        self._max = max_bundles
        self._timeout_s = timeout_ms / 1000
        self._running: dict[str, ShadowOpa] = {}
        self._starting: dict[str, asyncio.Task[ShadowOpa]] = {}
        self._failed: dict[str, tuple[float, str]] = {}
        """Bundles whose OPA did not start, and why: not tried again for ``RETRY_S``."""
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()

    async def stop(self) -> None:
        for task in self._starting.values():
            task.cancel()
        for opa in list(self._running.values()):
            await opa.stop()
        self._running.clear()
        if self._session is not None:
            await self._session.close()

    @property
    def digests(self) -> frozenset[str]:
        return frozenset(self._running)

    async def decide(
        self, digest: str, files: Mapping[str, bytes], document: Mapping[str, Any]
    ) -> Verdict:
        """What the bundle ``digest`` (whose ``files`` were verified) decides on ``document``."""
        assert self._session is not None, "the pool is not started"
        try:
            opa = await self._opa(digest, files)
        except (RuntimeError, OSError, AgoraError) as exc:  # AgoraError: no opa binary
            return Verdict(False, error=str(exc))
        return await opa.decide(self._session, document, self._timeout_s)

    async def keep_only(self, digests: frozenset[str]) -> None:
        """Stop the shadow OPAs of bundles no longer wanted (a closed proposal's)."""
        for digest in [d for d in self._running if d not in digests]:
            await self._running.pop(digest).stop()

    async def _opa(self, digest: str, files: Mapping[str, bytes]) -> ShadowOpa:
        running = self._running.get(digest)
        if running is not None:
            return running
        failed = self._failed.get(digest)
        if failed is not None and time.monotonic() - failed[0] < RETRY_S:
            raise RuntimeError(failed[1])
        task = self._starting.get(digest)
        if task is None:
            if len(self._running) + len(self._starting) >= self._max:
                raise RuntimeError(
                    f"{self._max} bundles are judged in shadow already "
                    "(community.shadow.max_bundles)"
                )
            task = asyncio.create_task(self._start_one(digest, files))
            self._starting[digest] = task
        return await asyncio.shield(task)

    async def _start_one(self, digest: str, files: Mapping[str, bytes]) -> ShadowOpa:
        assert self._session is not None
        opa = ShadowOpa(self._binary, files, self._decision_path)
        try:
            await opa.start(self._session)
        except (RuntimeError, OSError) as exc:
            self._failed[digest] = (time.monotonic(), str(exc))
            raise
        finally:
            self._starting.pop(digest, None)
        self._failed.pop(digest, None)
        self._running[digest] = opa
        return opa


@dataclass
class GroupImpact:
    compared: int = 0
    would_deny: int = 0
    would_allow: int = 0


@dataclass
class Impact:
    """How one proposal would have decided the sampled requests differently since it was seen."""

    proposal_id: str
    digest: str
    since: float = field(default_factory=time.time)
    compared: int = 0
    would_deny: int = 0
    """Allowed by the version in force, denied by the proposal."""
    would_allow: int = 0
    """Denied by the version in force, allowed by the proposal."""
    errors: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    by_group: dict[str, GroupImpact] = field(default_factory=dict)
    examples: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=5))

    def count(
        self, in_force: Verdict, proposed: Verdict, group: str, example: Callable[[], Any]
    ) -> None:
        if proposed.error is not None:
            self.errors += 1
            return
        self.compared += 1
        entry = self.by_group.setdefault(group, GroupImpact())
        entry.compared += 1
        if in_force.allow == proposed.allow:
            return
        if in_force.allow:
            self.would_deny += 1
            entry.would_deny += 1
            self.by_reason.update(f"would deny: {r}" for r in proposed.reasons)
        else:
            self.would_allow += 1
            entry.would_allow += 1
            self.by_reason.update(f"would no longer deny: {r}" for r in in_force.reasons)
        if self.examples.maxlen:
            self.examples.append(
                {
                    "in_force": {"allow": in_force.allow, "reasons": list(in_force.reasons)},
                    "proposal": {"allow": proposed.allow, "reasons": list(proposed.reasons)},
                    "input": example(),
                }
            )

    def as_json(self) -> dict[str, Any]:
        return {
            "proposal_id": self.proposal_id,
            "digest": self.digest,
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.since)),
            "compared": self.compared,
            "would_deny": self.would_deny,
            "would_allow": self.would_allow,
            "differently": self.would_deny + self.would_allow,
            "errors": self.errors,
            "by_reason": [
                {"reason": r, "count": n}
                for r, n in sorted(self.by_reason.items(), key=lambda i: (-i[1], i[0]))
            ],
            "by_group": {
                g: {
                    "compared": e.compared,
                    "would_deny": e.would_deny,
                    "would_allow": e.would_allow,
                }
                for g, e in sorted(self.by_group.items())
            },
            "examples": list(self.examples),
        }


@dataclass(frozen=True)
class Target:
    """A proposal judged in shadow: its id, and its bundle's verified files."""

    proposal_id: str
    digest: str
    files: Mapping[str, bytes]


@dataclass(frozen=True)
class _Sample:
    document: Mapping[str, Any]
    verdict: Verdict
    size: int


class ShadowEvaluator:
    """Samples decided requests and judges them by each open proposal's bundle, off the hot path.

    ``targets`` is set by the community worker from the proposals on chain; a
    proposal's counts start when it is first judged and are kept while it stays
    a target.
    """

    def __init__(
        self,
        config: Shadow,
        pool: ShadowPool,
        group_claim: str | None,
        rng: Callable[[], float] = random.random,
    ):
        self._config = config
        self._pool = pool
        self._group_claim = group_claim
        self._rng = rng
        self._queue: asyncio.Queue[_Sample] = asyncio.Queue(config.queue_size)
        self._targets: dict[str, Target] = {}
        self.impacts: dict[str, Impact] = {}
        self.sampled = 0
        self.dropped = 0
        self._queued_bytes = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="shadow")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_task(task)

    def set_targets(self, targets: list[Target]) -> None:
        """The proposals to judge from now on; the counts of those no longer listed are dropped."""
        self._targets = {t.proposal_id: t for t in targets}
        self.impacts = {
            pid: impact
            for pid, impact in self.impacts.items()
            if pid in self._targets and impact.digest == self._targets[pid].digest
        }
        for target in targets:
            if target.proposal_id not in self.impacts:
                impact = Impact(target.proposal_id, target.digest)
                impact.examples = deque(maxlen=self._config.examples)
                self.impacts[target.proposal_id] = impact

    def offer(
        self, document: Mapping[str, Any], allow: bool, reasons: list[str], size: int = 0
    ) -> bool:
        """Sample one decided request for shadow judging; never blocks, never raises.

        ``size`` is the request body's, in bytes: the queue holds at most
        ``MAX_QUEUED_BYTES`` of bodies besides its ``queue_size``, so that large
        requests cannot pile up in memory. True when it was queued. The caller
        must not change ``document`` afterwards.
        """
        if not self._targets or self._task is None or self._rng() >= self._config.sample_rate:
            return False
        self.sampled += 1
        if self._queued_bytes + size > MAX_QUEUED_BYTES:
            self.dropped += 1
            return False
        try:
            self._queue.put_nowait(_Sample(document, Verdict(allow, tuple(reasons)), size))
        except asyncio.QueueFull:
            self.dropped += 1
            return False
        self._queued_bytes += size
        return True

    async def drain(self) -> None:
        """Wait until every queued sample is judged (for tests and shutdown)."""
        await self._queue.join()

    async def _run(self) -> None:
        while True:
            sample = await self._queue.get()
            try:
                await self._judge(sample)
            except Exception:  # a shadow fault must never stop the loop
                logger.exception("shadow judging failed")
            finally:
                self._queued_bytes -= sample.size
                self._queue.task_done()

    async def _judge(self, sample: _Sample) -> None:
        caller = sample.document.get("caller") or {}
        claims = caller.get("claims") if isinstance(caller, dict) else None
        group = group_of(claims if isinstance(claims, dict) else {}, self._group_claim)
        for target in list(self._targets.values()):
            proposed = await self._pool.decide(target.digest, target.files, sample.document)
            impact = self.impacts.get(target.proposal_id)
            if impact is not None:
                impact.count(
                    sample.verdict, proposed, group or NO_GROUP,
                    lambda: redact_input(sample.document, self._group_claim),
                )  # fmt: skip

    def as_json(self) -> dict[str, Any]:
        return {
            "sample_rate": self._config.sample_rate,
            "sampled": self.sampled,
            "dropped": self.dropped,
            "proposals": [impact.as_json() for impact in self.impacts.values()],
        }
