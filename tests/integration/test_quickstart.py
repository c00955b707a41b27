"""`agora quickstart`, as a new user runs it: one command, an allowed and a denied answer.

It runs a real dev chain (anvil, from ``scripts/install-tools.sh anvil``), and
the gateway reads it over JSON-RPC like any other chain; ``agora gov`` reaches
the same chain from another process.
"""

from __future__ import annotations

import re
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from gateway.transparency.checkpoint import SignedCheckpoint
from gateway.transparency.note import Signer
from tests.support import ROOT, TOOL_BIN, Process, free_port, wait_for_http

CHAT = {"model": "demo-small", "messages": [{"role": "user", "content": "Hello"}]}


@dataclass
class Quickstart:
    url: str
    rpc_port: int
    printed: str
    workdir: Path
    process: Process


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Quickstart]:
    if not (shutil.which("anvil") or shutil.which("anvil", path=str(TOOL_BIN))):
        pytest.fail(
            f"anvil is not installed (on PATH or in {TOOL_BIN}): run scripts/install-tools.sh anvil"
        )
    workdir = tmp_path_factory.mktemp("quickstart")
    port, model_port, rpc_port, admin_port = free_port(), free_port(), free_port(), free_port()
    args = [
        sys.executable, "-m", "gateway", "quickstart", "--port", str(port),
        "--model-port", str(model_port), "--rpc-port", str(rpc_port),
        "--admin-port", str(admin_port),
    ]  # fmt: skip
    # From a fresh directory, as a user runs it, but with the code of this checkout.
    env = {"PYTHONPATH": str(ROOT)}
    process = Process(args, workdir / "quickstart.log", env=env, cwd=workdir)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/readyz", timeout_s=90)
        deadline = time.monotonic() + 30
        while "agora gov execute" not in process.output() and time.monotonic() < deadline:
            time.sleep(0.2)
        yield Quickstart(f"http://127.0.0.1:{port}", rpc_port, process.output(), workdir, process)
    except TimeoutError:
        raise AssertionError(f"the quickstart did not start:\n{process.output()}") from None
    finally:
        process.stop()


def test_quickstart_answers_allowed_and_denied(quickstart: Quickstart) -> None:
    url = quickstart.url
    allowed = httpx.post(f"{url}/v1/chat/completions", json=CHAT, timeout=10)
    denied = httpx.post(
        f"{url}/v1/chat/completions", json={**CHAT, "model": "demo-large"}, timeout=10
    )
    assert allowed.status_code == 200
    assert allowed.headers["x-agora-policy-version"] == "1"
    assert denied.status_code == 403 and denied.json()["error"]["reasons"]
    token = re.search(r"Authorization: Bearer (\S+)'", quickstart.printed)
    assert token is not None, quickstart.printed
    with openai.OpenAI(base_url=f"{url}/v1", api_key=token.group(1), max_retries=0) as member:
        completion = member.chat.completions.create(model="demo-large", messages=CHAT["messages"])
    assert completion.choices[0].message.content


def test_the_gateway_reads_the_chain_like_an_operator_configures_it(
    quickstart: Quickstart,
) -> None:
    config = yaml.safe_load((quickstart.workdir / "agora-quickstart" / "agora.yaml").read_text())
    assert config["governance"]["rpc_urls"] == [f"http://127.0.0.1:{quickstart.rpc_port}"]
    assert "chain" not in config["governance"]
    ready = httpx.get(f"{quickstart.url}/readyz", timeout=10)
    assert ready.status_code == 200


def test_the_community_page_shows_the_ratified_version(quickstart: Quickstart) -> None:
    assert f"{quickstart.url}/community" in quickstart.printed
    page = httpx.get(f"{quickstart.url}/community", timeout=10)
    assert page.status_code == 200 and 'id="proposal-table"' in page.text
    versions = httpx.get(f"{quickstart.url}/transparency/versions", timeout=10).json()
    assert [v["version"] for v in versions["versions"]] == [1]


def test_the_decision_log_is_checkpointed_with_the_quickstart_key(quickstart: Quickstart) -> None:
    key_file = quickstart.workdir / "agora-quickstart" / "log.key"
    verifier = Signer.parse(key_file.read_text()).verifier
    assert str(verifier) in quickstart.printed
    httpx.post(f"{quickstart.url}/v1/chat/completions", json=CHAT, timeout=10)
    deadline = time.monotonic() + 20  # checkpoint_interval_s: 5
    while (response := httpx.get(f"{quickstart.url}/transparency/checkpoint")).status_code != 200:
        assert time.monotonic() < deadline, response.text
        time.sleep(0.2)
    assert SignedCheckpoint.open(response.text, verifier).checkpoint.size >= 1


def test_agora_gov_status_shows_version_1_ratified(quickstart: Quickstart) -> None:
    exports = dict(re.findall(r"export (AGORA_\w+)=(\S+)", quickstart.printed))
    assert {"AGORA_RPC_URL", "AGORA_GOV_DEPLOYMENT", "AGORA_GOV_PRIVATE_KEY"} <= set(exports), (
        quickstart.printed
    )
    assert exports["AGORA_RPC_URL"] == f"http://127.0.0.1:{quickstart.rpc_port}"
    workdir = quickstart.workdir
    status = Process(
        [sys.executable, "-m", "gateway", "gov", "status"], workdir / "status.log", exports, workdir
    )
    exit_code = status.popen.wait(60)
    status.stop()
    assert exit_code == 0, status.output()
    assert "policy in force: version 1, sha256:" in status.output()
    assert (workdir / "agora-quickstart" / "policies-v2").is_dir()
    assert (workdir / "decisions.jsonl").is_file()


def test_stopping_the_quickstart_stops_its_chain(quickstart: Quickstart) -> None:
    assert quickstart.process.stop() == 0, quickstart.process.output()
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", quickstart.rpc_port), timeout=2),
    ):
        pass
