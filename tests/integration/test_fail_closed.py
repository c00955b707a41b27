"""The gateway fails closed: with no verified policy or no answer from OPA, nothing is forwarded."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from gateway.policy.opa import opa_config
from tests.integration.conftest import DemoModel, RunningGateway, StartGateway
from tests.support import Process, Signer, free_port, wait_for_http

CHAT = {"model": "demo-small", "messages": [{"role": "user", "content": "Hello"}]}


class ExternalOpa:
    """An OPA server run the way the Kubernetes sidecar runs, pulling bundles from the gateway."""

    def __init__(self, binary: str, workdir: Path, bundle_port: int):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = workdir / "opa.yaml"
        config.write_text(yaml.safe_dump(opa_config(f"http://127.0.0.1:{bundle_port}")))
        self._args = [
            binary, "run", "--server", "--addr", f"127.0.0.1:{self.port}",
            "--config-file", str(config), "--skip-version-check", "--shutdown-grace-period", "1",
        ]  # fmt: skip
        self._workdir = workdir
        self.process: Process | None = None

    def start(self) -> None:
        self.process = Process(self._args, self._workdir / "opa.log")
        wait_for_http(f"{self.url}/health")

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


@pytest.fixture
def external_opa(opa_binary: str, tmp_path: Path) -> Iterator[tuple[ExternalOpa, int]]:
    bundle_port = free_port()
    opa = ExternalOpa(opa_binary, tmp_path, bundle_port)
    opa.start()
    yield opa, bundle_port
    opa.stop()


def with_sidecar(
    start_gateway: StartGateway, external_opa: tuple[ExternalOpa, int], timeout_ms: int
) -> tuple[ExternalOpa, RunningGateway]:
    """A gateway using the external OPA (``policy.opa: external``), as in Kubernetes."""
    opa, bundle_port = external_opa
    gateway = start_gateway(
        bundle_service={"listen": {"host": "127.0.0.1", "port": bundle_port}},
        policy={
            "bundle": "policies",
            "opa": "external",
            "opa_url": opa.url,
            "version": 1,
            "timeout_ms": timeout_ms,
        },
    )
    return opa, gateway


def test_opa_stopped_mid_run_fails_closed_and_forwards_nothing(
    start_gateway: StartGateway, external_opa: tuple[ExternalOpa, int], demo_model: DemoModel
) -> None:
    opa, gateway = with_sidecar(start_gateway, external_opa, timeout_ms=1000)
    with gateway.client() as client:
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
        opa.stop()
        forwarded_before = demo_model.stats()["requests"]
        refused = client.post("/v1/chat/completions", json=CHAT)
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "policy_unavailable"
        assert refused.headers["x-agora-decision-id"]
        assert demo_model.stats()["requests"] == forwarded_before
        assert client.get("/readyz").status_code == 503
        opa.start()  # OPA comes back, pulls the verified bundle again, and service resumes
        wait_for_http(f"{gateway.url}/readyz", timeout_s=20)
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 200


def test_opa_too_slow_fails_closed_at_its_timeout(
    start_gateway: StartGateway, external_opa: tuple[ExternalOpa, int], demo_model: DemoModel
) -> None:
    opa, gateway = with_sidecar(start_gateway, external_opa, timeout_ms=200)
    assert opa.process is not None
    pid = opa.process.popen.pid
    with gateway.client() as client:
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
        os.kill(pid, signal.SIGSTOP)  # OPA accepts connections but never answers
        try:
            forwarded_before = demo_model.stats()["requests"]
            started = time.monotonic()
            refused = client.post("/v1/chat/completions", json=CHAT)
            elapsed = time.monotonic() - started
        finally:
            os.kill(pid, signal.SIGCONT)
        assert refused.status_code == 503
        assert 0.2 <= elapsed < 1.5
        assert demo_model.stats()["requests"] == forwarded_before
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 200


def test_bundle_that_differs_from_the_pin_is_never_activated(
    start_gateway: StartGateway, demo_model: DemoModel
) -> None:
    gateway = start_gateway(
        wait_ready=False,
        policy={"bundle": "policies", "pinned_digest": "sha256:" + "0" * 64, "version": 1},
    )
    with gateway.client() as client:
        ready = client.get("/readyz")
        forwarded_before = demo_model.stats()["requests"]
        refused = client.post("/v1/chat/completions", json=CHAT)
    assert ready.status_code == 503
    assert ready.json() == {"ready": False, "reason": "no verified policy version is active"}
    assert "no verified policy version is active" in gateway.ready()["reasons"]
    assert refused.status_code == 503
    assert refused.headers["x-agora-policy-version"] == "none"
    assert demo_model.stats()["requests"] == forwarded_before
    assert "digest" in gateway.process.output()


def test_managed_opa_is_restarted_after_a_crash(start_gateway: StartGateway) -> None:
    gateway = start_gateway()
    with gateway.client() as client:
        opa_detail = gateway.ready()["components"]["opa"]["detail"]
        pid = int(opa_detail.split()[1])
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.3)
        wait_for_http(f"{gateway.url}/readyz", timeout_s=20)
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
        assert gateway.ready()["components"]["opa"]["detail"] != opa_detail


def test_required_auth_refuses_anonymous_callers(
    start_gateway: StartGateway, signer: Signer
) -> None:
    gateway = start_gateway(
        env={"AGORA__AUTH__REQUIRED": "true"},
    )
    with gateway.client() as client:
        anonymous = client.post("/v1/chat/completions", json=CHAT)
    with gateway.client(signer.token()) as client:
        member = client.post("/v1/chat/completions", json=CHAT)
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["message"] == "missing bearer token"
    assert member.status_code == 200
