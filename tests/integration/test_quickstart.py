"""`agora quickstart`, as a new user runs it: one command, an allowed and a denied answer."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.support import Process, free_port, wait_for_http

CHAT = {"model": "demo-small", "messages": [{"role": "user", "content": "Hello"}]}


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    workdir = tmp_path_factory.mktemp("quickstart")
    port, model_port, rpc_port, admin_port = free_port(), free_port(), free_port(), free_port()
    args = [
        sys.executable, "-m", "gateway", "quickstart", "--port", str(port),
        "--model-port", str(model_port), "--rpc-port", str(rpc_port),
        "--admin-port", str(admin_port),
    ]  # fmt: skip
    process = Process(args, workdir / "quickstart.log", cwd=workdir)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/readyz", timeout_s=60)
        deadline = time.monotonic() + 30
        while "agora gov execute" not in process.output() and time.monotonic() < deadline:
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}", process.output(), workdir
    finally:
        process.stop()


def test_quickstart_answers_allowed_and_denied(quickstart: tuple[str, str, Path]) -> None:
    url, printed, _ = quickstart
    allowed = httpx.post(f"{url}/v1/chat/completions", json=CHAT, timeout=10)
    denied = httpx.post(
        f"{url}/v1/chat/completions", json={**CHAT, "model": "demo-large"}, timeout=10
    )
    assert allowed.status_code == 200
    assert allowed.headers["x-agora-policy-version"] == "1"
    assert denied.status_code == 403 and denied.json()["error"]["reasons"]
    token = re.search(r"Authorization: Bearer (\S+)'", printed)
    assert token is not None, printed
    member = openai.OpenAI(base_url=f"{url}/v1", api_key=token.group(1), max_retries=0)
    completion = member.chat.completions.create(model="demo-large", messages=CHAT["messages"])
    assert completion.choices[0].message.content


def test_quickstart_chain_is_reachable_with_agora_gov(quickstart: tuple[str, str, Path]) -> None:
    _, printed, workdir = quickstart
    exports = dict(re.findall(r"export (AGORA_\w+)=(\S+)", printed))
    assert {"AGORA_RPC_URL", "AGORA_GOV_DEPLOYMENT", "AGORA_GOV_PRIVATE_KEY"} <= set(exports), (
        printed
    )
    status = Process(
        [sys.executable, "-m", "gateway", "gov", "status"], workdir / "status.log", exports, workdir
    )
    exit_code = status.popen.wait(60)
    status.stop()
    assert exit_code == 0, status.output()
    assert "policy in force: version 1" in status.output()
    assert (workdir / "agora-quickstart" / "policies-v2").is_dir()
    assert (workdir / "decisions.jsonl").is_file()
