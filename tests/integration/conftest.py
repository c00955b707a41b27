"""Real processes on loopback: the stand-in model, OPA and the gateway under uvicorn."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support import (
    AUDIENCE,
    ISSUER,
    ROOT,
    TOOL_BIN,
    Process,
    Signer,
    free_port,
    python_module,
    wait_for_http,
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def opa_binary() -> str:
    found = shutil.which("opa") or shutil.which(str(TOOL_BIN / "opa"))
    if found is None:
        pytest.fail("opa is not installed: run scripts/install-tools.sh opa")
    return found


@pytest.fixture(scope="session")
def signer() -> Signer:
    return Signer()


@dataclass
class DemoModel:
    """The stand-in model with fault injection (tests/stand_in_model.py)."""

    url: str
    process: Process

    def stats(self) -> dict[str, int]:
        data: dict[str, int] = httpx.get(f"{self.url}/_demo/stats").json()
        return data


@pytest.fixture(scope="session")
def demo_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoModel]:
    port = free_port()
    log = tmp_path_factory.mktemp("demo") / "demo.log"
    process = Process(python_module("tests.stand_in_model", "--port", str(port)), log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/v1/models")
        yield DemoModel(url, process)
    finally:
        process.stop()


@dataclass
class RunningGateway:
    """A gateway process and its three listeners: public (``url``), admin, bundle service."""

    url: str
    admin_url: str
    bundle_url: str
    process: Process
    config: dict[str, Any]
    decision_log: Path

    def client(self, token: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10, **kwargs)

    def admin(self) -> httpx.Client:
        """A client of the admin listener: /metrics, and /readyz with every component's detail."""
        return httpx.Client(base_url=self.admin_url, timeout=10)

    def ready(self) -> dict[str, Any]:
        """The detailed readiness document (admin /readyz)."""
        document: dict[str, Any] = httpx.get(f"{self.admin_url}/readyz", timeout=10).json()
        return document


def gateway_config(
    demo_model: DemoModel, public_key_file: Path, log_path: Path, **sections: Any
) -> dict[str, Any]:
    """A gateway configuration for tests; ``sections`` replace top-level keys."""
    config: dict[str, Any] = {
        "listen": {"host": "127.0.0.1", "port": free_port()},
        "admin": {"listen": {"host": "127.0.0.1", "port": free_port()}},
        "bundle_service": {"listen": {"host": "127.0.0.1", "port": free_port()}},
        "upstreams": [
            {
                "name": "impatient",
                "url": demo_model.url,
                "models": ["demo-timeout"],
                "timeout": {"connect": 1.0, "read": 0.5},
            },
            {"name": "dead", "url": f"http://127.0.0.1:{free_port()}", "models": ["dead-*"]},
            {"name": "demo", "url": demo_model.url, "models": ["demo-*"]},
        ],
        # A generous timeout: CI machines are shared; the slow-OPA test sets its own.
        "policy": {
            "bundle": str(ROOT / "policies"),
            "opa": "managed",
            "version": 1,
            "timeout_ms": 1000,
        },
        "auth": {
            "required": False,
            "issuer": ISSUER,
            "audience": AUDIENCE,
            "algorithms": ["RS256"],
            "public_key_file": str(public_key_file),
        },
        "decision_log": {"path": str(log_path), "durability": "batch"},
        "limits": {"max_body_bytes": 65536},
        # Most tests send bursts of anonymous requests, which the default policy's
        # budgets would refuse (20 a minute); tests of budgets set their own usage.
        "usage": {"enabled": False},
    }
    config.update(sections)
    return config


StartGateway = Callable[..., RunningGateway]
CALLER_KEY_ENV = "AGORA_CALLER_KEY"
"""Where the test gateways find their caller-hash key (the default ``caller_hash_key_env``)."""
CALLER_KEY = "test-caller-hash-key-" + "0" * 11


@pytest.fixture(scope="module")
def start_gateway(
    tmp_path_factory: pytest.TempPathFactory, demo_model: DemoModel, signer: Signer, opa_binary: str
) -> Iterator[StartGateway]:
    """Start gateways with variations of the test configuration; all stop at module end."""
    started: list[Process] = []

    def start(
        wait_ready: bool = True, env: dict[str, str] | None = None, **sections: Any
    ) -> RunningGateway:
        workdir = tmp_path_factory.mktemp("gateway")
        key_file = workdir / "issuer.pem"
        key_file.write_bytes(signer.public_pem)
        config = gateway_config(demo_model, key_file, workdir / "decisions.jsonl", **sections)
        log_path = Path(config["decision_log"].setdefault("path", str(workdir / "decisions.jsonl")))
        config_file = workdir / "agora.yaml"
        config_file.write_text(yaml.safe_dump(config))
        process = Process(
            python_module("gateway", "serve", "--config", str(config_file)),
            workdir / "gateway.log",
            {CALLER_KEY_ENV: CALLER_KEY, **(env or {})},
        )
        started.append(process)
        gateway = RunningGateway(
            url=f"http://127.0.0.1:{config['listen']['port']}",
            admin_url=f"http://127.0.0.1:{config['admin']['listen']['port']}",
            bundle_url=f"http://127.0.0.1:{config['bundle_service']['listen']['port']}",
            process=process,
            config=config,
            decision_log=log_path,
        )
        try:
            wait_for_http(f"{gateway.url}/healthz")
            if wait_ready:
                wait_for_http(f"{gateway.url}/readyz")
        except TimeoutError:
            process.stop()
            raise AssertionError(f"gateway did not start:\n{process.output()}") from None
        return gateway

    yield start
    for process in started:
        process.stop()


@pytest.fixture(scope="module")
def gateway(start_gateway: StartGateway) -> RunningGateway:
    """The default test gateway: managed OPA, default policy, RS256 tokens optional."""
    return start_gateway()
