"""A stand-in OpenAI upstream that records every request exactly as it arrived.

The security suite asks of every request it sends through the gateway: did the
model server receive anything, and if so, exactly which bytes? This server
answers that from outside the gateway. It is a separate process on loopback
(``python -m tests.security.recording_upstream --port P --record FILE``) that
appends to a JSON-lines file, before it answers:

- ``{"kind": "wire", "conn": c, "data": base64}`` for every chunk of bytes any
  connection delivers, as read from the socket: nothing reaches this server
  without a trace, even bytes its HTTP parser would refuse;
- ``{"kind": "request", "seq": n, "conn": c, "method": ..., "target": ...,
  "headers": [[name, value], ...], "body": base64}`` for every request parsed,
  with the request target and headers as raw as they were on the wire
  (latin-1 text of the bytes, so any byte survives JSON).

It speaks enough of the OpenAI protocol for the gateway and SDK clients: chat
completions (Server-Sent Events when ``"stream": true``), completions,
embeddings, responses, the model list and one model; any other target is a
404. It routes by the end of the path, so an upstream URL with a base path
(``http://host:port/keyed``) works as a second upstream on the same port.
Every answer carries ``X-Recorded-Seq``, the ``seq`` of its request record,
and forged ``X-Agora-*`` headers, which the gateway must not let through.

The reading side (``Recording``, ``RecordingUpstream``) lives here too, so that
the format has one owner.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import json
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from aiohttp import web

from tests.support import ROOT, Process, free_port, python_module, run_agora, wait_for_http

MODELS = ("demo-small", "demo-large", "demo-embed", "keyed-small")
SEQ_HEADER = "X-Recorded-Seq"
CASE_HEADER = "X-Security-Case"
"""Each request of the suite carries a unique value here: the gateway passes it on."""
KEYED_PREFIX = "/keyed"
KEY_ENV = "AGORA_TEST_RECORDER_KEY"
OPERATOR_KEY = "sk-operator-key"
OPERATOR_ORG = "org-operator"
GATEWAY_ENV = {KEY_ENV: OPERATOR_KEY}
# An upstream may say anything: these must never reach a client as the gateway's word.
FORGED_HEADERS = {
    "X-Agora-Decision-Id": "forged-by-upstream",
    "X-Agora-Policy-Version": "999",
    "X-Agora-Policy-Digest": "sha256:" + "0" * 64,
}


# --- the server ------------------------------------------------------------------------------


class _Journal:
    """The record file, written and flushed line by line so a reader never sees half a record."""

    def __init__(self, file: IO[str]):
        self._file = file
        self._seq = itertools.count(1)
        self._conn = itertools.count(1)
        self._connections: dict[int, int] = {}

    def connection_opened(self, protocol: asyncio.Protocol) -> int:
        conn = next(self._conn)
        self._connections[id(protocol)] = conn
        return conn

    def connection_closed(self, protocol: asyncio.Protocol) -> None:
        self._connections.pop(id(protocol), None)

    def connection_of(self, protocol: object) -> int:
        return self._connections.get(id(protocol), 0)

    def wire(self, conn: int, data: bytes) -> None:
        self._write({"kind": "wire", "conn": conn, "data": base64.b64encode(data).decode()})

    def request(self, conn: int, request: web.BaseRequest, body: bytes) -> int:
        seq = next(self._seq)
        self._write(
            {
                "kind": "request",
                "seq": seq,
                "conn": conn,
                "method": request.method,
                "target": _wire_text(request.raw_path),
                "headers": [
                    [n.decode("latin-1"), v.decode("latin-1")] for n, v in request.raw_headers
                ],
                "body": base64.b64encode(body).decode(),
            }
        )
        return seq

    def _write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()


def _wire_text(parsed: str) -> str:
    """The bytes aiohttp decoded (UTF-8 with surrogateescape) as latin-1 text: one char a byte."""
    return parsed.encode("utf-8", "surrogateescape").decode("latin-1")


class _Tap(asyncio.Protocol):
    """Wraps aiohttp's protocol of one connection: journals each chunk, then hands it on."""

    def __init__(self, inner: asyncio.Protocol, journal: _Journal):
        self._inner = inner
        self._journal = journal
        self.conn = journal.connection_opened(inner)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._journal.wire(self.conn, data)
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._inner.connection_lost(exc)
        self._journal.connection_closed(self._inner)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


def _answer_for(method: str, path: str, body: Any) -> web.StreamResponse:
    """An OpenAI-shaped answer chosen by the end of the path (any base path may precede)."""
    model = body.get("model") if isinstance(body, dict) else None
    created = int(time.time())
    if method == "POST" and path.endswith("/v1/chat/completions"):
        if isinstance(body, dict) and body.get("stream") is True:
            return _StreamedChat(str(model))
        return web.json_response(
            {
                "id": "chatcmpl-recorded", "object": "chat.completion", "created": created,
                "model": model,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "recorded"}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        )  # fmt: skip
    if method == "POST" and path.endswith("/v1/completions"):
        return web.json_response(
            {
                "id": "cmpl-recorded", "object": "text_completion", "created": created,
                "model": model,
                "choices": [{"index": 0, "text": "recorded", "logprobs": None,
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        )  # fmt: skip
    if method == "POST" and path.endswith("/v1/embeddings"):
        return web.json_response(
            {
                "object": "list", "model": model,
                "data": [{"object": "embedding", "index": 0, "embedding": [0.0, 1.0]}],
                "usage": {"prompt_tokens": 1, "total_tokens": 1},
            }
        )  # fmt: skip
    if method == "POST" and path.endswith("/v1/responses"):
        return web.json_response(
            {
                "id": "resp_recorded", "object": "response", "created_at": created,
                "status": "completed", "model": model,
                "output": [{"type": "message", "role": "assistant",
                            "content": [{"type": "output_text", "text": "recorded"}]}],
                "usage": {"input_tokens": 1, "output_tokens": 1, "total_tokens": 2},
            }
        )  # fmt: skip
    if method == "GET" and path.endswith("/v1/models"):
        return web.json_response(
            {"object": "list", "data": [_model(name) for name in MODELS]},
        )
    if method == "GET" and "/v1/models/" in path:
        return web.json_response(_model(path.split("/v1/models/", 1)[1]))
    return web.json_response(
        {"error": {"message": f"no route for {method} {path}", "type": "invalid_request_error",
                   "code": "unknown_url", "param": None}},
        status=404,
    )  # fmt: skip


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "recorder"}


class _StreamedChat(web.StreamResponse):
    """A chat completion as Server-Sent Events: two content chunks, a stop chunk, [DONE]."""

    def __init__(self, model: str):
        super().__init__(headers={"Content-Type": "text/event-stream"})
        self._model = model

    def events(self) -> Iterator[bytes]:
        base = {"id": "chatcmpl-recorded", "object": "chat.completion.chunk", "model": self._model}
        deltas = [({"role": "assistant", "content": "rec"}, None), ({"content": "orded"}, None)]
        for delta, finish in [*deltas, ({}, "stop")]:
            chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            yield f"data: {json.dumps(chunk)}\n\n".encode()
        yield b"data: [DONE]\n\n"


def _decode(body: bytes) -> Any:
    """The body as the model server would read it, leniently: this server judges nothing."""
    with contextlib.suppress(ValueError):
        return json.loads(body)
    return None


def make_handler(journal: _Journal) -> Any:
    """The request handler of the low-level aiohttp server (no router: every request lands)."""

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        body = await request.content.read()  # whatever its size: this server refuses nothing
        seq = journal.request(journal.connection_of(request.protocol), request, body)
        path = _wire_text(request.raw_path).split("?", 1)[0]
        response = _answer_for(request.method, path, _decode(body))
        response.headers[SEQ_HEADER] = str(seq)
        response.headers.update(FORGED_HEADERS)
        if isinstance(response, _StreamedChat):
            await response.prepare(request)
            for event in response.events():
                await response.write(event)
            await response.write_eof()
        return response

    return handle


async def serve(host: str, port: int, record: Path) -> None:
    """Serve until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    with record.open("a", encoding="utf-8") as file:
        journal = _Journal(file)
        server = web.Server(make_handler(journal))
        listener = await loop.create_server(lambda: _Tap(server(), journal), host, port)
        try:
            await stop.wait()
        finally:
            listener.close()
            await server.shutdown(1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--record", type=Path, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port, args.record))


# --- the reading side ------------------------------------------------------------------------


@dataclass(frozen=True)
class Recorded:
    """One request as the upstream received it."""

    seq: int
    conn: int
    method: str
    target: bytes
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> list[str]:
        """Every value of a header, in order of arrival (names compared without case)."""
        return [v for n, v in self.headers if n.lower() == name.lower()]

    @property
    def case(self) -> str | None:
        """The suite's tag of the request this was forwarded from; None for the gateway's own."""
        values = self.header(CASE_HEADER)
        return values[0] if len(values) == 1 else None


@dataclass(frozen=True)
class Recording:
    """What the upstream recorded between two reads of its file."""

    requests: list[Recorded]
    wire: dict[int, bytes]
    """Bytes received, joined per connection."""

    @property
    def empty(self) -> bool:
        return not self.requests and not self.wire


class RecordingUpstream:
    """The running recorder, and its record file read as it grows."""

    def __init__(self, url: str, process: Process, record: Path):
        self.url = url
        self.process = process
        self._record = record
        self._offset = 0

    def gateway_sections(self) -> dict[str, Any]:
        """Configuration of a gateway in front of this recorder; run it with GATEWAY_ENV.

        ``demo-*`` is routed here as is; ``keyed-*`` under KEYED_PREFIX with the
        operator's key and organization, as a hosted API would be. The policy is
        the default bundle under managed OPA, pinned to the digest that
        ``agora policy digest policies`` prints.
        """
        digest = run_agora("policy", "digest", "policies")
        if digest.returncode != 0:
            raise AssertionError(f"agora policy digest failed: {digest.stderr}")
        return {
            "upstreams": [
                {"name": "recorder", "url": self.url, "models": ["demo-*"]},
                {
                    "name": "keyed",
                    "url": self.url + KEYED_PREFIX,
                    "models": ["keyed-*"],
                    "api_key_env": KEY_ENV,
                    "organization": OPERATOR_ORG,
                },
            ],
            "policy": {
                "bundle": str(ROOT / "policies"),
                "opa": "managed",
                "version": 1,
                "pinned_digest": digest.stdout.strip(),
            },
        }

    def take(self) -> Recording:
        """Everything recorded since the last ``take``."""
        with self._record.open("rb") as file:
            file.seek(self._offset)
            data = file.read()
        complete = data[: data.rfind(b"\n") + 1]
        self._offset += len(complete)
        requests: list[Recorded] = []
        wire: dict[int, bytes] = {}
        for line in complete.splitlines():
            item = json.loads(line)
            if item["kind"] == "wire":
                wire[item["conn"]] = wire.get(item["conn"], b"") + base64.b64decode(item["data"])
            else:
                requests.append(
                    Recorded(
                        item["seq"], item["conn"], item["method"],
                        item["target"].encode("latin-1"),
                        [(n, v) for n, v in item["headers"]], base64.b64decode(item["body"]),
                    )
                )  # fmt: skip
        return Recording(requests, wire)

    def stop(self) -> None:
        self.process.stop()


def start_recording_upstream(workdir: Path) -> RecordingUpstream:
    """Start the recorder on a free loopback port; wait until it answers."""
    port = free_port()
    record = workdir / "recorded.jsonl"
    record.touch()
    process = Process(
        python_module(
            "tests.security.recording_upstream", "--port", str(port), "--record", str(record)
        ),
        workdir / "recorder.log",
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/v1/models")
    except TimeoutError:
        process.stop()
        raise AssertionError(f"the recording upstream did not start:\n{process.output()}") from None
    upstream = RecordingUpstream(url, process, record)
    upstream.take()  # the readiness probe is not part of any test
    return upstream


if __name__ == "__main__":
    main()
