"""The anchoring worker: publishes the decision log's latest checkpoint on chain, as it grows.

Every ``interval_s`` (``transparency.anchor_every_s``) it takes the latest
signed checkpoint of the log, ``(origin, tree size, root hash)``, from the
callable it was given, and anchors it in the ``LogAnchor`` contract if the
log grew since the last anchor of that origin. It also compares the log with
what is anchored: a latest checkpoint smaller than the last anchor (the log
was cut, or restored from an old copy) or with a different root at the same
size (rewritten) puts the worker in ``error`` with the reason.

The sending key comes from an environment variable (default
``AGORA_ANCHOR_PRIVATE_KEY``, a hex private key), never from the
configuration file; the account needs the contract's ``ANCHORER_ROLE`` and
gas. A chain that is down or refuses a transaction leaves the worker in
``warn`` and is tried again at the next interval; it never makes the gateway
unready (anchoring publishes evidence about the log, the log does not depend
on it).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping

from eth_account import Account
from eth_account.signers.local import LocalAccount

from gateway.chain.anchors import Anchor, AnchorClient
from gateway.chain.rpc import connect
from gateway.exceptions import ChainError, ConfigError
from gateway.lifecycle import State, Status, cancel_task

logger = logging.getLogger(__name__)

ANCHOR_KEY_ENV = "AGORA_ANCHOR_PRIVATE_KEY"
"""Where the anchoring worker finds its sending key (hex), unless told another variable."""

LatestCheckpoint = Callable[[], tuple[str, int, bytes] | None]
"""The log's latest signed checkpoint as ``(origin, tree size, root hash)``; None before one."""


def sending_account(
    env_name: str = ANCHOR_KEY_ENV, environ: Mapping[str, str] | None = None
) -> LocalAccount:
    """The anchoring account from the hex private key in ``env_name``; ConfigError naming it."""
    key = (os.environ if environ is None else environ).get(env_name, "").strip()
    if not key:
        raise ConfigError(f"environment variable {env_name} is unset or empty: it must hold the "
                          "hex private key that anchors checkpoints")  # fmt: skip
    try:
        account: LocalAccount = Account.from_key(key)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{env_name} is not a valid private key") from exc
    return account


def anchor_client(
    rpc_url: str, contract: str, account: LocalAccount, *, chain_id: int | None = None
) -> AnchorClient:
    """A client of the ``LogAnchor`` at ``contract`` that sends from ``account``; checked.

    The sending code (``gateway.gov``) loads only here: a gateway that does not
    anchor never loads it.
    """
    from gateway.gov.transactions import Sender

    w3 = connect(rpc_url, expected_chain_id=chain_id)
    client = AnchorClient(w3, contract, Sender(w3, account))
    client.check()
    return client


def anchoring_worker(
    latest: LatestCheckpoint,
    *,
    rpc_url: str,
    contract: str,
    interval_s: float,
    key_env: str = ANCHOR_KEY_ENV,
    chain_id: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> AnchorWorker:
    """The worker as the gateway runs it: the key read now (ConfigError if it is missing),
    the node connected to when the worker first needs it (and again after a failure)."""
    account = sending_account(key_env, environ)
    return AnchorWorker(
        lambda: anchor_client(rpc_url, contract, account, chain_id=chain_id), latest, interval_s
    )


class AnchorWorker(Status):
    """Anchors the log's latest checkpoint every ``interval_s`` when the log grew."""

    name = "log_anchor"
    gates_readiness = False

    def __init__(
        self, client: Callable[[], AnchorClient], latest: LatestCheckpoint, interval_s: float
    ) -> None:
        """``client`` makes the contract's client (connecting; it runs in a worker thread, and
        again after a failure); ``latest`` gives the checkpoint to anchor."""
        self._make_client = client
        self._client: AnchorClient | None = None
        self._latest = latest
        self._interval_s = interval_s
        self._anchored: Anchor | None = None
        self._task: asyncio.Task[None] | None = None
        self.anchors_sent = 0
        self.failures = 0

    @property
    def anchored(self) -> Anchor | None:
        """The last anchor of the log's origin, as last read or written."""
        return self._anchored

    async def start(self) -> None:
        if self._task is not None:
            raise ChainError("the anchoring worker can be started only once")
        self._task = asyncio.create_task(self._run(), name="log-anchor")

    async def stop(self) -> None:
        await cancel_task(self._task)
        self._state, self._detail = State.STOPPED, "stopped"

    async def _run(self) -> None:
        try:
            while True:
                await self.tick()
                await asyncio.sleep(self._interval_s)
        except Exception as exc:
            self._state, self._detail = State.ERROR, f"stopped: {type(exc).__name__}: {exc}"
            logger.exception("the anchoring worker stopped")

    async def tick(self) -> None:
        """One round: compare the latest checkpoint with the chain, and anchor it if it grew."""
        head = self._latest()
        if head is None:
            self._state, self._detail = State.OK, "no signed checkpoint yet"
            return
        origin, size, root = head
        try:
            await asyncio.to_thread(self._anchor_if_grown, origin, size, bytes(root))
        except ChainError as exc:
            self.failures += 1
            self._client = None  # connect again next time
            self._state, self._detail = State.WARN, f"{exc}; trying again in {self._interval_s:g} s"
            logger.warning("anchoring the decision log's checkpoint failed: %s", exc)

    def _anchor_if_grown(self, origin: str, size: int, root: bytes) -> None:
        if self._client is None:
            self._client = self._make_client()
        anchored = self._anchored
        if anchored is None or anchored.origin != origin:
            anchored = self._anchored = self._client.latest(origin)
        if anchored is not None and size <= anchored.size:
            self._compare(anchored, size, root)
            return
        self._anchored = self._client.anchor(origin, size, root)
        self.anchors_sent += 1
        self._state = State.OK
        self._detail = f"anchored {origin} at size {size} in block {self._anchored.block_number}"
        logger.info("decision log checkpoint anchored: %s", self._detail)

    def _compare(self, anchored: Anchor, size: int, root: bytes) -> None:
        """The latest checkpoint is not larger than the anchor: it must be the anchor itself."""
        if size < anchored.size:
            self._state, self._detail = (
                State.ERROR,
                (
                    f"the log's latest checkpoint has size {size}, but size {anchored.size} was "
                    f"anchored in block {anchored.block_number}: the log was cut or restored from "
                    "an older copy"
                ),
            )
        elif root != anchored.root:
            self._state, self._detail = (
                State.ERROR,
                (
                    f"the log's checkpoint at size {size} has root {root.hex()}, but "
                    f"{anchored.root.hex()} was anchored in block {anchored.block_number}: "
                    "the log was rewritten"
                ),
            )
        else:
            self._state = State.OK
            self._detail = (
                f"{anchored.origin} anchored at size {size} (block {anchored.block_number})"
            )
            return
        logger.error("decision log anchor check failed: %s", self._detail)
