"""The embedded chain over HTTP JSON-RPC, with a block every second, like ``geth --dev``.

``agora quickstart`` runs the chain in the gateway process (eth-tester, see
:mod:`gateway.chain.embedded`). This bridge lets the real ``agora gov``
commands reach it from another terminal, so that a community member can
ratify a second policy version and watch the gateway switch:

- :func:`create_rpc_app` is a Starlette app answering JSON-RPC 2.0 requests
  (one object or a batch) on ``POST /``. Each call runs
  ``EthereumTesterProvider.make_request`` in the chain's single-thread executor
  (eth-tester is not thread-safe), wrapped in web3's own eth-tester formatting
  middleware (hex quantities and camelCase keys in, eth-tester's Python values
  out), and the result is encoded as a node would encode it (quantities as
  ``0x`` hex, bytes as ``0x`` data). A revert is reported like geth reports
  it, ``{"code": 3, "message": "execution reverted", "data": "0x<revert data>"}``,
  so that clients decode custom errors exactly as against a real node.
- :class:`RpcBridge` serves that app with uvicorn on loopback and mines a block
  every ``period_s`` whose timestamp follows the wall clock (eth-tester alone
  mines only on transactions and adds one second per block), so that voting
  delays and periods (blocks) and the timelock delay (seconds) pass on their own.

Only the ``web3_``, ``net_`` and ``eth_`` namespaces are served: eth-tester's
``evm_*`` and ``testing_*`` methods (snapshots, reverts, time travel) would
let anyone on the machine rewrite the chain's history or clock.
The chain's accounts are eth-tester's well-known test keys: this is a demo
chain, never a place for anything of value.
"""

from __future__ import annotations

import ast
import asyncio
import bisect
import contextlib
import json
import logging
import socket
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, cast

import uvicorn
from eth_abi.abi import encode
from eth_tester.exceptions import TransactionFailed
from eth_tester.exceptions import ValidationError as EthTesterValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from web3 import Web3
from web3.exceptions import ContractLogicError, OffchainLookup
from web3.middleware import combine_middleware
from web3.providers.eth_tester.middleware import (
    default_transaction_fields_middleware,
    ethereum_tester_middleware,
    log_result_remapper,
)
from web3.types import RPCEndpoint, RPCResponse

from gateway.chain.embedded import EmbeddedChain
from gateway.exceptions import ChainError
from gateway.lifecycle import State

if TYPE_CHECKING:
    from gateway.gov.deploy import Deployment
    from gateway.governance import EmbeddedGovernance

logger = logging.getLogger("agora.rpc_bridge")

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8545  # geth's
DEFAULT_PERIOD_S: Final = 1.0  # geth --dev --dev.period 1
MAX_BODY_BYTES: Final = 8 * 1024 * 1024  # contract deployments are tens of KB
SERVED_NAMESPACES: Final = ("web3_", "net_", "eth_")

# JSON-RPC 2.0 error codes, and the ones Ethereum nodes add.
PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
INTERNAL_ERROR: Final = -32603
SERVER_ERROR: Final = -32000  # geth: "nonce too low", "insufficient funds"...
EXECUTION_REVERTED: Final = 3  # geth: a revert, with the revert data in "data"

_ERROR_STRING_SELECTOR: Final = bytes.fromhex("08c379a0")  # Error(string)
_LOGS_BLOOM_BYTES: Final = 256

RequestFn = Callable[[RPCEndpoint, Any], RPCResponse]


# -- encoding values as a JSON-RPC node does ---------------------------------------------


def to_json_rpc(value: Any, key: str | None = None) -> Any:
    """A value from eth-tester (ints, bytes, HexBytes, nested dicts) as a node writes it in JSON.

    Integers become hex quantities (``"0x1a"``), bytes become ``0x`` data; booleans,
    strings, floats (``gasUsedRatio``) and ``None`` stay as they are. eth-tester
    gives a block's ``logsBloom`` as an integer, which is 256 bytes of data on the wire.
    """
    if value is None or isinstance(value, bool | str | float):
        return value
    if isinstance(value, int):
        if key in ("logsBloom", "logs_bloom"):
            return "0x" + value.to_bytes(_LOGS_BLOOM_BYTES, "big").hex()
        return hex(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return "0x" + bytes(value).hex()
    if isinstance(value, Mapping):
        return {str(k): to_json_rpc(v, str(k)) for k, v in value.items()}
    if isinstance(value, Sequence):
        return [to_json_rpc(v) for v in value]
    raise TypeError(f"cannot encode a {type(value).__name__} as JSON-RPC")


# -- errors -------------------------------------------------------------------------------


def _error(code: int, message: str, data: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return error


def _reply(request_id: Any, *, result: Any = None, error: dict[str, Any] | None = None) -> Any:
    if error is not None:
        return {"jsonrpc": "2.0", "id": request_id, "error": error}
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


def revert_error(exc: TransactionFailed) -> dict[str, Any]:
    """A revert as geth reports it: code 3, and the raw revert data for the client to decode.

    web3's eth-tester provider re-raises a revert as ``execution reverted: <reason>``,
    where the reason is the ``Error(string)`` text, or the repr of the raw revert data
    (``b'...'``) for custom errors.
    """
    text = str(exc.args[0] if exc.args else exc)
    reason = text.removeprefix("execution reverted").removeprefix(":").strip()
    if reason in ("", "None", "b''"):
        return _error(EXECUTION_REVERTED, "execution reverted")
    if reason.startswith(("b'", 'b"')):
        with contextlib.suppress(ValueError, SyntaxError):
            raw = ast.literal_eval(reason)
            if isinstance(raw, bytes):
                return _error(EXECUTION_REVERTED, "execution reverted", "0x" + raw.hex())
    data = _ERROR_STRING_SELECTOR + encode(["string"], [reason])
    return _error(EXECUTION_REVERTED, f"execution reverted: {reason}", "0x" + data.hex())


def _exception_error(exc: Exception) -> dict[str, Any]:
    """The JSON-RPC error object for what a call raised in the chain thread."""
    if isinstance(exc, TransactionFailed):
        return revert_error(exc)
    if isinstance(exc, OffchainLookup | ContractLogicError):  # panics, CCIP reads
        data = exc.data if isinstance(exc.data, str) else None
        return _error(EXECUTION_REVERTED, f"execution reverted: {exc.message}", data)
    if isinstance(exc, EthTesterValidationError):
        return _error(SERVER_ERROR, str(exc))
    if isinstance(exc, ValueError | TypeError | KeyError | IndexError):
        return _error(INVALID_PARAMS, f"invalid params: {exc.__class__.__name__}: {exc}")
    return _error(INTERNAL_ERROR, f"{exc.__class__.__name__}: {exc}")


# -- the chain side (runs in the chain's thread) -----------------------------------------


def chain_request_fn(w3: Web3) -> RequestFn:
    """``make_request`` of the embedded chain, with web3's eth-tester formatting around it.

    The middleware turns wire params (hex quantities, camelCase transaction keys)
    into what eth-tester takes, and its snake_case results into JSON-RPC's names.
    Call the returned function only from the chain's thread.
    """
    return cast(
        RequestFn,
        combine_middleware(
            (default_transaction_fields_middleware, ethereum_tester_middleware),
            w3,
            w3.provider.make_request,
        ),
    )


class ChainCalls:
    """What the bridge does to the embedded chain; call it only from the chain's thread.

    ``eth_getLogs`` is answered from an index of the logs of every block, built as
    blocks are mined (each block is read once, while it is recent). eth-tester would
    read every block of the range, and then look each receipt up by scanning back
    from the head: with a block a second, ``agora gov status`` (which scans from
    the deployment's block) would slow down by seconds for every hour the
    quickstart has run, holding the chain's thread (and the gateway's reads) meanwhile.
    """

    def __init__(self, w3: Web3) -> None:
        self.chain = EmbeddedChain(w3)
        self._request = chain_request_fn(w3)
        self._next_unindexed = 0
        # (block number, its logs as eth_getLogs gives them), for blocks with logs, ascending
        self._logs: list[tuple[int, list[dict[str, Any]]]] = []

    def request(self, method: str, params: list[Any]) -> RPCResponse:
        """One JSON-RPC call, answered with eth-tester's values (see :func:`to_json_rpc`)."""
        if (
            method == "eth_getLogs"
            and len(params) == 1
            and isinstance(params[0], dict)
            and "blockHash" not in params[0]
        ):
            return cast(RPCResponse, {"jsonrpc": "2.0", "id": 0, "result": self.logs(params[0])})
        return self._request(RPCEndpoint(method), params)

    def mine_block(self, now: float | None = None) -> int:
        """Mine a block that follows the wall clock (:func:`mine_block_now`); its timestamp."""
        timestamp = mine_block_now(self.chain, now)
        self.index_blocks()
        return timestamp

    def index_blocks(self) -> int:
        """Index the logs of the blocks mined since the last call; the head's number."""
        tester = self.chain.tester
        head = int(tester.get_block_by_number("latest")["number"])
        for number in range(self._next_unindexed, head + 1):
            logs = [
                dict(log_result_remapper(log))
                for tx_hash in tester.get_block_by_number(number)["transactions"]
                for log in tester.get_transaction_receipt(tx_hash)["logs"]
            ]
            if logs:
                self._logs.append((number, logs))
        self._next_unindexed = max(self._next_unindexed, head + 1)
        return head

    def logs(self, log_filter: Mapping[str, Any]) -> list[dict[str, Any]]:
        """``eth_getLogs``: the logs in the filter's block range, of its addresses and topics."""
        head = self.index_blocks()
        first = _filter_block(log_filter.get("fromBlock"), head)
        last = min(_filter_block(log_filter.get("toBlock"), head), head)
        addresses = _filter_addresses(log_filter.get("address"))
        topics = _filter_topics(log_filter.get("topics"))
        numbers = [number for number, _ in self._logs]
        start, stop = bisect.bisect_left(numbers, first), bisect.bisect_right(numbers, last)
        return [
            log
            for _, block_logs in self._logs[start:stop]
            for log in block_logs
            if _log_matches(log, addresses, topics)
        ]


def _filter_block(value: Any, head: int) -> int:
    """A filter's ``fromBlock``/``toBlock``: a quantity, a tag, or absent (the head)."""
    if value is None or value in ("latest", "pending", "safe", "finalized"):
        return head
    if value == "earliest":
        return 0
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.startswith(("0x", "0X")):
        return int(value, 16)
    raise ValueError(f"invalid block {value!r}: use a hex quantity or a block tag")


def _filter_addresses(value: Any) -> frozenset[str] | None:
    """A filter's ``address``: one, a list (any of them), or absent (any address)."""
    if value is None:
        return None
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, str) for v in values):
        raise ValueError(f"invalid address filter {value!r}")
    return frozenset(v.lower() for v in values)


def _filter_topics(value: Any) -> list[frozenset[str] | None]:
    """A filter's ``topics``: per position, a topic, a list (any of them), or null (any)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"invalid topics filter {value!r}")
    positions: list[frozenset[str] | None] = []
    for position in value:
        options = position if isinstance(position, list) else [position]
        if not all(isinstance(o, str) or o is None for o in options):
            raise ValueError(f"invalid topics filter {value!r}")
        wildcard = not options or None in options
        positions.append(None if wildcard else frozenset(str(o).lower() for o in options))
    return positions


def _log_matches(
    log: Mapping[str, Any],
    addresses: frozenset[str] | None,
    topics: Sequence[frozenset[str] | None],
) -> bool:
    if addresses is not None and str(log["address"]).lower() not in addresses:
        return False
    log_topics = [_hex(t) for t in log["topics"]]
    if len(topics) > len(log_topics):
        return False
    return all(
        wanted is None or have in wanted for wanted, have in zip(topics, log_topics, strict=False)
    )


def _hex(value: Any) -> str:
    return "0x" + bytes(value).hex() if isinstance(value, bytes | bytearray) else str(value).lower()


# -- the JSON-RPC endpoint ----------------------------------------------------------------


class JsonRpcEndpoint:
    """Answers JSON-RPC 2.0 requests by running them, one at a time, in the chain's executor."""

    def __init__(self, calls: ChainCalls, executor: Executor) -> None:
        self._calls = calls
        self._executor = executor

    async def endpoint(self, request: Request) -> Response:
        """``POST /``: one request object, or a batch (an array of them)."""
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return self._json(_reply(None, error=_error(INVALID_REQUEST, "request too large")), 413)
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return self._json(_reply(None, error=_error(INVALID_REQUEST, "request too large")), 413)
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            return self._json(_reply(None, error=_error(PARSE_ERROR, f"parse error: {exc}")))
        if isinstance(payload, list):
            if not payload:
                return self._json(_reply(None, error=_error(INVALID_REQUEST, "empty batch")))
            replies = [await self.handle(item) for item in payload]
            answered = [r for r in replies if r is not None]
            return self._json(answered) if answered else Response(status_code=204)
        reply = await self.handle(payload)
        return Response(status_code=204) if reply is None else self._json(reply)

    async def handle(self, call: Any) -> Any:
        """The reply to one request object; ``None`` for a notification (no ``id``)."""
        if not isinstance(call, dict):
            return _reply(None, error=_error(INVALID_REQUEST, "a request must be a JSON object"))
        request_id = call.get("id")
        method, params = call.get("method"), call.get("params", [])
        if call.get("jsonrpc", "2.0") != "2.0" or not isinstance(method, str):
            return _reply(
                request_id,
                error=_error(
                    INVALID_REQUEST, 'invalid request: needs "jsonrpc": "2.0" and a method'
                ),
            )
        if not isinstance(params, list):
            return _reply(
                request_id, error=_error(INVALID_PARAMS, "invalid params: pass them as an array")
            )
        if not method.startswith(SERVED_NAMESPACES):
            reply = _reply(
                request_id,
                error=_error(
                    METHOD_NOT_FOUND, f"the method {method} does not exist/is not available"
                ),
            )
        else:
            reply = await self._call(request_id, method, params)
        return reply if "id" in call else None

    async def _call(self, request_id: Any, method: str, params: list[Any]) -> Any:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            response = await loop.run_in_executor(
                self._executor, self._calls.request, method, params
            )
        except RuntimeError as exc:
            if "shutdown" not in str(exc):
                return _reply(request_id, error=_exception_error(exc))
            return _reply(request_id, error=_error(SERVER_ERROR, "the embedded chain has stopped"))
        except Exception as exc:  # every failure becomes a JSON-RPC error, like a node's
            logger.debug("JSON-RPC %s failed", method, exc_info=True)
            return _reply(request_id, error=_exception_error(exc))
        finally:
            logger.debug("%s took %.1f ms", method, (time.perf_counter() - started) * 1000)
        if "error" in response:
            error = dict(response["error"])
            if error.get("code") == METHOD_NOT_FOUND:
                error["message"] = f"the method {method} does not exist/is not available"
            return _reply(request_id, error=error)
        try:
            return _reply(request_id, result=to_json_rpc(response.get("result")))
        except TypeError as exc:
            return _reply(request_id, error=_error(INTERNAL_ERROR, str(exc)))

    @staticmethod
    def _json(content: Any, status_code: int = 200) -> Response:
        return JSONResponse(content, status_code=status_code)


def create_rpc_app(calls: ChainCalls, executor: Executor) -> Starlette:
    """The JSON-RPC app of the embedded chain; every call runs in ``executor`` (the chain's)."""
    return Starlette(
        routes=[Route("/", JsonRpcEndpoint(calls, executor).endpoint, methods=["POST"])]
    )


# -- blocks that follow the wall clock ----------------------------------------------------


def mine_block_now(chain: EmbeddedChain, now: float | None = None) -> int:
    """Mine one block stamped with the current time (or one second after the latest,
    if the chain is ahead of the clock); its timestamp. Call it in the chain's thread.

    eth-tester alone stamps each new block one second after its parent, whatever the time.
    """
    wall = int(time.time() if now is None else now)
    latest = int(chain.tester.get_block_by_number("latest")["timestamp"])
    if wall > latest:
        chain.advance_time_to(wall)  # mines one block stamped ``wall``
    else:
        chain.mine(1)  # stamped latest + 1
    return int(chain.tester.get_block_by_number("latest")["timestamp"])


# -- the worker ---------------------------------------------------------------------------


class _LoopbackServer(uvicorn.Server):
    """uvicorn without signal handlers: the process's main server owns Ctrl-C."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class RpcBridge:
    """Serves the embedded chain on ``http://host:port`` and mines a block every ``period_s``.

    ``start()`` binds the port (``ChainError`` if it is taken; port 0 picks a free
    one, see :attr:`url`), then serves and mines in background tasks; ``stop()``
    ends both. Everything that touches the chain runs in ``embedded.executor``.
    """

    name = "rpc-bridge"

    def __init__(
        self,
        embedded: EmbeddedGovernance,
        *,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        period_s: float = DEFAULT_PERIOD_S,
        log_level: str = "warning",
    ) -> None:
        if period_s <= 0:
            raise ValueError(f"period_s must be positive, got {period_s}")
        self.embedded = embedded
        self.w3: Web3 = embedded.w3
        self.deployment: Deployment = embedded.deployment
        self.executor: Executor = embedded.executor
        self.host = host
        self.port = port
        self.period_s = period_s
        self._calls = ChainCalls(self.w3)
        self._chain = self._calls.chain
        self._config = uvicorn.Config(
            create_rpc_app(self._calls, self.executor),
            host=host,
            port=port,
            lifespan="off",
            log_level=log_level,
            access_log=False,
            timeout_graceful_shutdown=5,
        )
        self._server: _LoopbackServer | None = None
        self._serving: asyncio.Task[None] | None = None
        self._mining: asyncio.Task[None] | None = None
        self._state = State.NOT_READY
        self._detail = "not started"
        self.blocks_mined = 0

    # -- what the quickstart prints

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def chain_id(self) -> int:
        return self.deployment.chain_id

    @property
    def deployer_key(self) -> str:
        """The deployer's private key (``0x`` hex): it holds every vote of the demo community.

        It is one of eth-tester's well-known test keys, public by design.
        """
        for account in self._chain.accounts:
            if account.address == self.deployment.deployer:
                return "0x" + bytes(account.key).hex()
        raise ChainError("the deployment was not made by an account of the embedded chain")

    def account_keys(self) -> list[tuple[str, str]]:
        """``(address, private key)`` of every funded account (1,000,000 ether each)."""
        return [(a.address, "0x" + bytes(a.key).hex()) for a in self._chain.accounts]

    def write_deployment(self, path: Path) -> Path:
        """Write the deployment JSON that ``agora gov --deployment`` reads; ``path``."""
        path.write_text(self.deployment.to_json(), encoding="utf-8")
        return path

    # -- the worker lifecycle

    @property
    def state(self) -> State:
        return self._state

    @property
    def detail(self) -> str:
        return self._detail

    async def start(self) -> None:
        """Bind the port, then serve and mine in the background; returns once it answers."""
        if self._serving is not None:
            return
        sock = self._bind()
        try:  # read the blocks mined so far while they are few (see ChainCalls)
            await asyncio.get_running_loop().run_in_executor(
                self.executor, self._calls.index_blocks
            )
        except BaseException:
            sock.close()
            raise
        self.port = int(sock.getsockname()[1])
        self._config.port = self.port
        server = _LoopbackServer(self._config)
        self._server = server
        self._serving = asyncio.create_task(server.serve(sockets=[sock]), name="rpc-bridge")
        while not server.started and not self._serving.done():  # noqa: ASYNC110
            await asyncio.sleep(0.01)  # uvicorn offers no event for "started"
        if not server.started:
            serving, self._serving = self._serving, None
            sock.close()
            exc = serving.exception() if not serving.cancelled() else None
            self._state, self._detail = State.ERROR, f"could not serve: {exc!r}"
            raise ChainError(f"the JSON-RPC bridge could not start on {self.url}: {exc!r}")
        self._mining = asyncio.create_task(self._mine_forever(), name="rpc-bridge-blocks")
        self._state = State.OK
        self._detail = f"JSON-RPC on {self.url}, a block every {self.period_s:g} s"
        logger.info("embedded chain served at %s (chain id %s)", self.url, self.chain_id)

    async def stop(self) -> None:
        """Stop mining and serving (in-flight requests get up to 5 s to finish)."""
        mining, self._mining = self._mining, None
        if mining is not None:
            mining.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await mining
        serving, self._serving = self._serving, None
        if serving is not None and self._server is not None:
            self._server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await serving
        self._server = None
        self._state, self._detail = State.STOPPED, "stopped"

    def _bind(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            self._state, self._detail = State.ERROR, f"cannot bind {self.url}: {exc.strerror}"
            raise ChainError(
                f"the JSON-RPC bridge cannot listen on {self.url}: {exc.strerror or exc} "
                "(is another node, or another quickstart, using the port?)"
            ) from exc
        sock.setblocking(False)
        return sock

    async def _mine_forever(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            next_at += self.period_s
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at = max(next_at, loop.time() - self.period_s)  # no burst after a stall
            try:
                await loop.run_in_executor(self.executor, self._calls.mine_block)
            except RuntimeError as exc:
                if "shutdown" in str(exc):  # the gateway stopped the chain's executor
                    self._state, self._detail = State.STOPPED, "the embedded chain has stopped"
                    return
                self._mining_failed(exc)
            except Exception as exc:  # keep producing: one bad block must not stop the chain
                self._mining_failed(exc)
            else:
                self.blocks_mined += 1
                if self._state is State.WARN:
                    self._state = State.OK
                    self._detail = f"JSON-RPC on {self.url}, a block every {self.period_s:g} s"

    def _mining_failed(self, exc: Exception) -> None:
        logger.warning("mining a block on the embedded chain failed: %s", exc, exc_info=True)
        self._state, self._detail = State.WARN, f"mining failed: {exc}"
