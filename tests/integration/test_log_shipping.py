"""Shipping the decision log from a running gateway to a receiver that goes away and comes back."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import RunningGateway, StartGateway
from tests.support import TOOL_BIN, free_port


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class Receiver:
    """Collects gzip'd JSON arrays of events on loopback; can be taken down and brought back."""

    def __init__(self) -> None:
        self.port = free_port()
        self.events: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self.up()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/decisions"

    def up(self) -> None:
        self._server = _Server(("127.0.0.1", self.port), self._handler())
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def down(self) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()
        self._server = None

    def seqs(self) -> list[int]:
        with self._lock:
            return [event["seq"] for event in self.events]

    def _handler(self) -> Callable[..., BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                assert self.headers["Content-Encoding"] == "gzip"
                batch = json.loads(gzip.decompress(raw))
                with receiver._lock:
                    receiver.events.extend(batch)
                    receiver.headers.append(dict(self.headers))
                self.send_response(204)
                self.send_header("Content-Length", "0")
                # A new connection per batch, so that taking the server down is an outage.
                self.send_header("Connection", "close")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    if found._server is not None:
        found.down()


def ship_to(receiver: Receiver, log: Path) -> dict[str, Any]:
    return {
        "path": str(log),
        "durability": "batch",
        "ship": {
            "url": receiver.url,
            "batch_records": 16,
            "interval_s": 0.05,
            "backoff_max_s": 0.2,
            "headers_env": {"Authorization": "AGORA_TEST_LOG_TOKEN"},
            "labels": {"cluster": "test"},
        },
    }


def requests(gateway: RunningGateway, count: int) -> list[int]:
    statuses = []
    with gateway.client() as client:
        for i in range(count):
            model = "demo-large" if i % 3 == 0 else "demo-small"  # denied anonymous, allowed
            body = {"model": model, "messages": [{"role": "user", "content": f"hi {i}"}]}
            statuses.append(client.post("/v1/chat/completions", json=body).status_code)
    return statuses


def log_seqs(path: Path) -> list[int]:
    return [json.loads(line)["seq"] for line in path.read_bytes().splitlines()]


def metrics_of(gateway: RunningGateway) -> str:
    with gateway.admin() as admin:
        return admin.get("/metrics").text


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 20
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_the_log_reaches_the_receiver_through_an_outage_and_a_restart(
    start_gateway: StartGateway, receiver: Receiver, tmp_path: Path
) -> None:
    log = tmp_path / "decisions.jsonl"
    env = {"AGORA_TEST_LOG_TOKEN": "Bearer receiver-token"}
    gateway = start_gateway(decision_log=ship_to(receiver, log), env=env)
    assert set(requests(gateway, 9)) == {200, 403}
    wait_for(lambda: len(receiver.seqs()) == len(log_seqs(log)), "the first records")
    assert receiver.headers[0]["Authorization"] == "Bearer receiver-token"

    receiver.down()
    started = time.monotonic()
    assert set(requests(gateway, 30)) == {200, 403}, "requests are served while it is down"
    assert time.monotonic() - started < 15
    wait_for(lambda: gateway.ready()["components"]["decision_log_ship"]["state"] == "warn", "warn")
    ready = gateway.ready()
    assert ready["ready"], "a failing receiver does not make the gateway unready"
    assert "failing for" in ready["components"]["decision_log_ship"]["detail"]
    assert httpx.get(f"{gateway.url}/readyz").status_code == 200
    assert "agora_decision_log_ship_failures_total" in metrics_of(gateway)

    receiver.up()
    wait_for(lambda: receiver.seqs() == log_seqs(log), "the receiver to catch up")
    assert gateway.ready()["components"]["decision_log_ship"]["state"] == "ok"
    exposition = metrics_of(gateway)
    assert "agora_decision_log_ship_lag_records 0.0" in exposition
    assert f"agora_decision_log_shipped_records_total {len(log_seqs(log))}.0" in exposition
    promtool = shutil.which("promtool") or shutil.which(str(TOOL_BIN / "promtool"))
    if promtool is None and os.environ.get("AGORA_SKIP_PROMTOOL") != "1":
        pytest.fail("promtool is not installed: run scripts/install-tools.sh promtool")
    if promtool is not None:
        checked = subprocess.run(
            [promtool, "check", "metrics"],
            input=exposition.encode(),
            capture_output=True,
            check=False,
        )
        assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()

    gateway.process.stop()  # SIGTERM: the sink sends what the writer flushed last
    assert receiver.seqs() == log_seqs(log)
    again = start_gateway(decision_log=ship_to(receiver, log), env=env)
    requests(again, 6)
    wait_for(lambda: receiver.seqs() == log_seqs(log), "the records after the restart")
    again.process.stop()
    assert receiver.seqs() == list(range(1, len(log_seqs(log)) + 1)), "in order, none twice"
    lines = log.read_bytes().splitlines()
    assert [event["record"] for event in receiver.events] == [json.loads(x) for x in lines]
