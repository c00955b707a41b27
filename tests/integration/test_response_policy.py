"""Response policy end to end: real OPA, the default bundle's answer rules, the stand-in model.

The stand-in model answers exactly the text a test chooses, in the chunks it
chooses (``X-Demo-Answer``); the default bundle denies answers holding a
private key block (policies/agora/answers/terms.rego).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.integration.conftest import DemoModel, RunningGateway, StartGateway
from tests.integration.test_fail_closed import ExternalOpa, with_sidecar
from tests.support import Signer, free_port

CHAT = {"model": "demo-small", "messages": [{"role": "user", "content": "Show me the key"}]}
KEY = "-----BEGIN PRIVATE KEY-----"
CHECKPOINT = 40
OVERLAP = 30  # at least len(KEY): a key header straddling a checkpoint is never sent in part
VIOLATING = [
    "Here is the key ",  # 16 characters: held, under the checkpoint
    "you asked for: ",  # 31
    "-----BEGIN PRIV",  # 46: a checkpoint; no whole term yet, so allowed, but only the
    # first chunk is released: the last 30 characters (these two chunks) are kept back
    "ATE KEY-----",  # the term completes here: held
    "\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC",  # 91: the next checkpoint denies
    *["\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC"] * 20,  # more that must never be sent
]


def script(chunks: list[str], **extra: Any) -> dict[str, str]:
    return {"X-Demo-Answer": json.dumps({"chunks": chunks, **extra}), "X-Demo-Delay-Ms": "5"}


def events(raw: bytes) -> list[str]:
    """The data of each SSE event."""
    return [
        block.removeprefix("data: ")
        for block in raw.decode().split("\n\n")
        if block.startswith("data: ")
    ]


def streamed_text(raw: bytes) -> str:
    text = ""
    for data in events(raw):
        if data.startswith("{") and "choices" in data:
            for choice in json.loads(data)["choices"]:
                text += choice.get("delta", {}).get("content") or choice.get("text") or ""
    return text


def records(log: Path, decision_id: str, kinds: set[str], timeout_s: float = 10) -> list[Any]:
    """The records of one request, once those of ``kinds`` are all written."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = [
            json.loads(line)
            for line in log.read_text().splitlines()
            if f'"decision_id":"{decision_id}"' in line
        ]
        if kinds <= {r.get("event", "decision") for r in found} or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


@pytest.fixture(scope="module")
def gateway(start_gateway: StartGateway) -> RunningGateway:
    return start_gateway(
        response={"checkpoint_chars": CHECKPOINT, "overlap_chars": OVERLAP, "deny_status": 451}
    )


def post_stream(gateway: RunningGateway, headers: dict[str, str], path: str, body: Any) -> Any:
    with gateway.client() as client:
        response = client.post(path, json={**body, "stream": True}, headers=headers)
    return response


# --- clean answers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", CHAT),
        ("/v1/completions", {"model": "demo-small", "prompt": "Say hi"}),
        ("/v1/responses", {"model": "demo-small", "input": "Say hi"}),
    ],
)
def test_clean_streamed_answer_passes_byte_identical(
    gateway: RunningGateway, demo_model: DemoModel, path: str, body: dict[str, Any]
) -> None:
    chunks = ["A calm ", "answer, ", "in pieces ", "of several ", "sizes: ", "x" * 70, " end."]
    headers = script(chunks)
    direct = httpx.post(demo_model.url + path, json={**body, "stream": True}, headers=headers)
    through = post_stream(gateway, headers, path, body)
    assert through.status_code == 200
    assert through.headers["content-type"].startswith("text/event-stream")
    assert through.content == direct.content
    if path != "/v1/responses":
        assert through.content.endswith(b"data: [DONE]\n\n")


def test_clean_whole_answer_passes_byte_identical(
    gateway: RunningGateway, demo_model: DemoModel
) -> None:
    headers = script(["A whole ", "answer."], tool_arguments=['{"a": ', "1}"])
    direct = httpx.post(demo_model.url + "/v1/chat/completions", json=CHAT, headers=headers)
    with gateway.client() as client:
        through = client.post("/v1/chat/completions", json=CHAT, headers=headers)
    assert through.status_code == 200
    assert through.content == direct.content


# --- violating answers -----------------------------------------------------------------------


def test_violating_stream_is_cut_at_the_first_checkpoint_after_the_violation(
    gateway: RunningGateway, demo_model: DemoModel
) -> None:
    before = demo_model.stats()["streams_closed_early"]
    response = post_stream(gateway, script(VIOLATING), "/v1/chat/completions", CHAT)
    assert response.status_code == 200
    text = streamed_text(response.content)
    assert text == VIOLATING[0]  # released at the allowed checkpoint, its overlap kept back
    assert "-----BEGIN" not in text  # the term straddling that checkpoint: not even in part
    assert KEY not in text and "MIIEvQ" not in text
    last = json.loads(events(response.content)[-1])
    assert last["error"]["type"] == "policy_denied"
    assert last["error"]["code"] == "policy_denied"
    assert last["error"]["reasons"] == [
        "answer matches deny term private-key: a private key block in the answer"
    ]
    assert b"[DONE]" not in response.content
    # The upstream was closed: the model saw its stream end early.
    deadline = time.monotonic() + 5
    while demo_model.stats()["streams_closed_early"] == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert demo_model.stats()["streams_closed_early"] == before + 1

    decision_id = response.headers["x-agora-decision-id"]
    found = records(gateway.decision_log, decision_id, {"decision", "response", "outcome"})
    by_event = {r.get("event", "decision"): r for r in found}
    assert by_event["decision"]["allow"] is True
    # Request-side obligations still hold: the anonymous caller's output cap was applied.
    assert by_event["decision"]["obligations"] == {"max_tokens": 256}
    answer = by_event["response"]
    assert answer["allow"] is False
    assert answer["reasons"] == last["error"]["reasons"]
    assert answer["response"]["outcome"] == "denied"
    assert answer["response"]["chars_sent"] == len(text)
    assert answer["response"]["sent_unjudged"] is None
    assert answer["response"]["holdback"] is True
    assert by_event["outcome"]["reasons"] == ["policy_denied"]
    assert [r["seq"] for r in found] == sorted(r["seq"] for r in found)


def test_the_openai_sdk_raises_on_the_error_event(gateway: RunningGateway, signer: Signer) -> None:
    client = openai.OpenAI(
        base_url=f"{gateway.url}/v1", api_key=signer.token(), max_retries=0, timeout=10
    )
    stream = client.chat.completions.create(
        model="demo-small",
        messages=[{"role": "user", "content": "Show me the key"}],
        stream=True,
        extra_headers=script(VIOLATING),
    )
    received = []
    with pytest.raises(openai.APIError) as raised:
        for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    assert "Answer stopped by policy" in raised.value.message
    assert KEY not in "".join(received)


def test_violating_tool_call_arguments_are_cut(gateway: RunningGateway) -> None:
    arguments = ['{"file": "', "-----BEGIN OPENSSH ", 'PRIVATE KEY-----"}']
    response = post_stream(
        gateway, script(["Saving."], tool_arguments=arguments), "/v1/chat/completions", CHAT
    )
    last = json.loads(events(response.content)[-1])
    assert last["error"]["type"] == "policy_denied"
    assert "openssh-private-key" in last["error"]["reasons"][0]
    assert b"PRIVATE KEY-----" not in response.content  # the term never went out whole


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/completions", {"model": "demo-small", "prompt": "Say hi"}),
        ("/v1/responses", {"model": "demo-small", "input": "Say hi"}),
    ],
)
def test_violating_streams_of_other_apis_are_cut(
    gateway: RunningGateway, path: str, body: dict[str, Any]
) -> None:
    response = post_stream(gateway, script(VIOLATING), path, body)
    last = json.loads(events(response.content)[-1])
    assert last["error"]["type"] == "policy_denied"
    assert KEY.encode() not in response.content


def test_whole_answer_is_denied_with_the_configured_status(gateway: RunningGateway) -> None:
    for path, body in [
        ("/v1/chat/completions", CHAT),
        ("/v1/completions", {"model": "demo-small", "prompt": "Say hi"}),
        ("/v1/responses", {"model": "demo-small", "input": "Say hi"}),
    ]:
        with gateway.client() as client:
            response = client.post(path, json=body, headers=script(["x ", KEY, " MIIEvQ"]))
        assert response.status_code == 451, path
        error = response.json()["error"]
        assert error["type"] == "policy_denied"
        assert error["reasons"][0].startswith("answer matches deny term private-key")
        assert KEY not in response.text and "MIIEvQ" not in response.text
        decision_id = response.headers["x-agora-decision-id"]
        found = records(gateway.decision_log, decision_id, {"response", "outcome"})
        answer = next(r for r in found if r.get("event") == "response")
        assert answer["status"] == 451 and answer["response"]["chars_sent"] == 0


def test_answers_are_counted_in_transparency_and_metrics(gateway: RunningGateway) -> None:
    post_stream(gateway, script(VIOLATING), "/v1/chat/completions", CHAT)
    with gateway.client() as client:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            totals = client.get("/transparency").json()["log"]["totals"]
            if totals["answers_denied"] >= 1:
                break
            time.sleep(0.1)
    assert totals["answers_denied"] >= 1 and totals["answers_allowed"] >= 0
    with gateway.admin() as admin:
        exposition = admin.get("/metrics").text
    assert 'agora_answer_decisions_total{api="chat.completions",outcome="denied"' in exposition


# --- holdback off ----------------------------------------------------------------------------


def test_without_holdback_text_goes_out_first_and_the_log_says_what_was_unjudged(
    start_gateway: StartGateway,
) -> None:
    gateway = start_gateway(response={"checkpoint_chars": CHECKPOINT, "holdback": 0})
    response = post_stream(gateway, script(VIOLATING), "/v1/chat/completions", CHAT)
    text = streamed_text(response.content)
    assert KEY in text  # sent before it was judged: the operator's choice
    last = json.loads(events(response.content)[-1])
    assert last["error"]["type"] == "policy_denied"
    assert b"[DONE]" not in response.content
    decision_id = response.headers["x-agora-decision-id"]
    found = records(gateway.decision_log, decision_id, {"response"})
    answer = next(r for r in found if r.get("event") == "response")["response"]
    assert answer["holdback"] is False
    assert answer["chars_sent"] == len(text)
    assert answer["sent_unjudged"] == {"from": answer["sent_unjudged"]["from"], "to": len(text)}
    assert answer["sent_unjudged"]["from"] < text.index(KEY) + len(KEY)


# --- failing closed --------------------------------------------------------------------------


@pytest.fixture
def sidecar(opa_binary: str, tmp_path: Path) -> Iterator[tuple[ExternalOpa, int]]:
    bundle_port = free_port()
    opa = ExternalOpa(opa_binary, tmp_path, bundle_port)
    opa.start()
    yield opa, bundle_port
    opa.stop()


def test_opa_stopped_mid_stream_ends_the_stream_with_an_error(
    start_gateway: StartGateway, sidecar: tuple[ExternalOpa, int]
) -> None:
    opa, gateway = with_sidecar(start_gateway, sidecar, timeout_ms=500)
    chunks = ["clean text " * 4] * 80  # 44 characters each, 50 ms apart: about 4 s
    headers = {**script(chunks), "X-Demo-Delay-Ms": "50"}
    received = b""
    with (
        gateway.client() as client,
        client.stream(
            "POST", "/v1/chat/completions", json={**CHAT, "stream": True}, headers=headers
        ) as response,
    ):
        for chunk in response.iter_raw():
            received += chunk
            if opa.process is not None and received.count(b"data: ") >= 4:
                opa.stop()
                opa.process = None
    last = json.loads(events(received)[-1])
    assert last["error"]["type"] == "policy_unavailable"
    assert b"[DONE]" not in received
    decision_id = response.headers["x-agora-decision-id"]
    found = records(gateway.decision_log, decision_id, {"response", "outcome"})
    answer = next(r for r in found if r.get("event") == "response")
    assert answer["allow"] is False and answer["response"]["outcome"] == "failed_closed"


# --- no response rule, bounds ----------------------------------------------------------------


def test_a_bundle_without_the_response_path_judges_no_answer(start_gateway: StartGateway) -> None:
    gateway = start_gateway(
        policy={
            "bundle": "policies", "opa": "managed", "version": 1, "timeout_ms": 1000,
            "response_path": "agora/no_such_rules",
        }
    )  # fmt: skip
    response = post_stream(gateway, script(VIOLATING[:5]), "/v1/chat/completions", CHAT)
    assert streamed_text(response.content) == "".join(VIOLATING[:5])
    assert response.content.endswith(b"data: [DONE]\n\n")
    decision_id = response.headers["x-agora-decision-id"]
    found = records(gateway.decision_log, decision_id, {"decision", "outcome"})
    assert [r.get("event") for r in found] == ["decision", "outcome"]


def test_a_whole_answer_over_the_bound_is_not_sent(start_gateway: StartGateway) -> None:
    gateway = start_gateway(response={"max_body_bytes": 300})
    with gateway.client() as client:
        response = client.post("/v1/chat/completions", json=CHAT, headers=script(["y" * 400]))
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "answer_unjudgeable"
    assert "y" * 50 not in response.text
    decision_id = response.headers["x-agora-decision-id"]
    found = records(gateway.decision_log, decision_id, {"response", "outcome"})
    answer = next(r for r in found if r.get("event") == "response")
    assert (answer["allow"], answer["status"]) == (False, 502)
    assert answer["response"]["outcome"] == "failed_closed"
    assert "max_body_bytes" in answer["reasons"][0]
