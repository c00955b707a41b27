"""The served surface of a real ``agora serve``: three listeners, and bounded resources.

What is internal is reachable only where it belongs (metrics and detailed
readiness on the admin listener, the bundle on the loopback bundle listener);
a slow-loris connection is cut at the header deadline while other requests are
served; beyond ``limits.max_concurrent`` a request is shed at once with 503 and
never reaches the upstream.
"""

from __future__ import annotations

import concurrent.futures
import signal
import socket
import time

import httpx
import pytest

from tests.integration.conftest import DemoModel, RunningGateway, StartGateway

CHAT = {"model": "demo-small", "messages": [{"role": "user", "content": "Hello"}]}
BUNDLE = "/_agora/bundles/active.tar.gz"
HEADER_TIMEOUT_S = 1.0
SLOW = {"X-Demo-Fault": "slow", "X-Demo-Delay-Ms": "3000"}


@pytest.fixture(scope="module")
def bounded(start_gateway: StartGateway) -> RunningGateway:
    return start_gateway(
        limits={
            "max_body_bytes": 65536,
            "max_concurrent": 2,
            "max_queued": 0,
            "header_timeout_s": HEADER_TIMEOUT_S,
        }
    )


def test_internal_endpoints_are_not_on_the_public_listener(bounded: RunningGateway) -> None:
    with bounded.client() as public:
        assert public.get("/metrics").status_code == 404
        assert public.get(BUNDLE).status_code == 404
        ready = public.get("/readyz")
        assert public.get("/healthz").status_code == 200
        assert public.get("/transparency").json()["policy"]["version"] == 1
    assert ready.status_code == 200
    assert ready.json() == {"ready": True}, "no component detail in public"


def test_the_admin_listener_serves_metrics_and_detail_and_never_the_api(
    bounded: RunningGateway,
) -> None:
    with bounded.admin() as admin:
        metrics = admin.get("/metrics")
        ready = admin.get("/readyz")
        assert admin.post("/v1/chat/completions", json=CHAT).status_code == 404
        assert admin.get(BUNDLE).status_code == 404
    assert metrics.status_code == 200 and "agora_requests_shed_total" in metrics.text
    assert ready.json()["ready"] is True and ready.json()["opa_enforces"] == 1
    assert {"decision_log", "opa"} <= set(ready.json()["components"])


def test_the_bundle_is_served_on_the_bundle_listener_only(bounded: RunningGateway) -> None:
    with httpx.Client(base_url=bounded.bundle_url, timeout=10) as bundle:
        archive = bundle.get(BUNDLE)
        assert bundle.get("/metrics").status_code == 404
        assert bundle.post("/v1/chat/completions", json=CHAT).status_code == 404
    assert archive.status_code == 200 and archive.headers["etag"].startswith('"v1+sha256:')


def test_the_managed_opa_pulls_from_the_bundle_listener_and_logs_no_decisions(
    bounded: RunningGateway,
) -> None:
    detail = bounded.ready()["components"]["opa"]["detail"]  # "pid N on http://127.0.0.1:P"
    opa_url = detail.split(" on ")[1]
    config = httpx.get(f"{opa_url}/v1/config", timeout=5).json()["result"]
    assert config["services"]["agora"]["url"] == bounded.bundle_url
    assert "decision_logs" not in config


def test_a_slow_loris_is_cut_at_the_header_deadline_while_requests_are_served(
    bounded: RunningGateway,
) -> None:
    port = int(bounded.url.rsplit(":", 1)[1])
    request = b"GET /healthz HTTP/1.1\r\nHost: agora\r\nUser-Agent: slow\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as loris:
        started = time.monotonic()
        closed_at = None
        with bounded.client() as client:
            for byte in request[:-2]:
                try:
                    loris.sendall(bytes([byte]))
                except OSError:  # reset by the server
                    closed_at = time.monotonic()
                    break
                assert client.get("/healthz").status_code == 200
                assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
                loris.settimeout(0.05)
                try:
                    if loris.recv(1024) == b"":
                        closed_at = time.monotonic()
                        break
                except TimeoutError:
                    pass
    assert closed_at is not None, "the slow connection was never closed"
    assert HEADER_TIMEOUT_S * 0.9 <= closed_at - started < HEADER_TIMEOUT_S + 2.0
    with bounded.admin() as admin:
        exposition = admin.get("/metrics").text
    assert 'agora_connections_timed_out_total{reason="header_timeout"}' in exposition


def test_overload_is_shed_at_once_with_retry_after_and_never_reaches_the_upstream(
    bounded: RunningGateway, demo_model: DemoModel
) -> None:
    before = demo_model.stats()["requests"]
    with (
        concurrent.futures.ThreadPoolExecutor(2) as pool,
        bounded.client() as client,
    ):
        held = [
            pool.submit(client.post, "/v1/chat/completions", json=CHAT, headers=SLOW)
            for _ in range(2)
        ]
        deadline = time.monotonic() + 10
        while demo_model.stats()["requests"] < before + 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert demo_model.stats()["requests"] == before + 2, "both slots are in use"
        started = time.monotonic()
        shed = client.post("/v1/chat/completions", json=CHAT)
        elapsed = time.monotonic() - started
        assert demo_model.stats()["requests"] == before + 2, "the shed request was not forwarded"
        assert client.get("/healthz").status_code == 200, "outside /v1/, nothing is shed"
        assert [f.result().status_code for f in held] == [200, 200]
    assert shed.status_code == 503
    assert elapsed < 0.5
    assert shed.headers["retry-after"] == "1"
    assert shed.json()["error"]["type"] == "overloaded"
    assert shed.json()["error"]["code"] == "overloaded"
    assert shed.headers["x-agora-decision-id"]  # like every answer of the gateway
    assert shed.headers["x-agora-policy-version"] != "none"
    with bounded.admin() as admin:
        exposition = admin.get("/metrics").text
    assert 'agora_requests_shed_total{reason="queue_full"} 1.0' in exposition


def test_sigterm_releases_the_bundle_long_poll_and_drains_promptly(
    start_gateway: StartGateway,
) -> None:
    gateway = start_gateway()
    url = f"{gateway.bundle_url}{BUNDLE}"
    etag = httpx.get(url, timeout=5).headers["etag"]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        poll = pool.submit(
            httpx.get, url, headers={"If-None-Match": etag, "Prefer": "wait=60"}, timeout=70
        )
        time.sleep(0.5)  # the long poll is held
        started = time.monotonic()
        gateway.process.popen.send_signal(signal.SIGTERM)
        code = gateway.process.popen.wait(30)
        elapsed = time.monotonic() - started
        assert poll.result().status_code == 304, "released, not cut"
    assert code in (0, -signal.SIGTERM)
    assert elapsed < 5, "shutdown was held by the long poll"
