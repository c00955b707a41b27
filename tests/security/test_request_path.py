"""The request path attacked from outside: the upstream gets exactly what policy judged.

One real gateway (managed OPA, the default bundle pinned by its digest, RS256
tokens optional) stands in front of the recording upstream
(tests/security/recording_upstream.py). Requests are written byte for byte on a
raw socket, because an HTTP client library would normalise the very targets
under test, and from 127.0.0.2, a peer the server does not take for a proxy.

Every request must keep one property. EITHER the gateway refuses it (4xx) and
no byte reaches the upstream, OR the upstream receives one request with the
method and the target sent (path and query byte for byte) and the body sent,
where an output-cap obligation may only set or lower the cap fields, with
choices x cap within the caller's cap. And what is forwarded must be what
DESIGN allows to be forwarded: a canonical target, a strictly valid body, a
model and token counts that policy grants the caller, read the same way by
the parsers model servers use.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import math
import random
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from tests.integration.conftest import (  # noqa: F401  (fixtures)
    RunningGateway,
    StartGateway,
    demo_model,
    opa_binary,
    signer,
    start_gateway,
)
from tests.security.recording_upstream import (
    CASE_HEADER,
    FORGED_HEADERS,
    GATEWAY_ENV,
    KEYED_PREFIX,
    OPERATOR_KEY,
    OPERATOR_ORG,
    SEQ_HEADER,
    Recorded,
    Recording,
    RecordingUpstream,
    start_recording_upstream,
)
from tests.support import ROOT, Signer

pytestmark = pytest.mark.integration

CLIENT_ADDRESS = "127.0.0.2"
MAX_DEPTH = 64  # limits.max_json_depth, default
POLICY_DATA = json.loads((ROOT / "policies/agora/config/data.json").read_text())
CAP_FIELDS = {
    "chat.completions": ("max_tokens", "max_completion_tokens"),
    "completions": ("max_tokens",),
    "responses": ("max_output_tokens",),
}
TOKEN_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
COUNT_FIELDS = ("n", "best_of")
POST_APIS = {
    "/v1/chat/completions": "chat.completions",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
    "/v1/responses": "responses",
}
EXAMPLES = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --- callers and what the default policy grants them ------------------------------------------


@dataclass(frozen=True)
class Caller:
    name: str
    groups: tuple[str, ...] | None  # None: anonymous

    @property
    def cap(self) -> int:
        caps = POLICY_DATA["max_tokens"]
        if self.groups is None:
            return int(caps["anonymous"])
        group_caps = [caps["groups"][g] for g in self.groups if g in caps["groups"]]
        return int(max(group_caps)) if group_caps else int(caps["authenticated"])

    def may_use(self, model: str) -> bool:
        models = POLICY_DATA["models"]
        if any(fnmatchcase(model, p) for p in models["anonymous"]):
            return True
        if self.groups is None:
            return False
        if any(fnmatchcase(model, p) for p in models["authenticated"]):
            return True
        return any(
            fnmatchcase(model, pattern) and set(groups) & set(self.groups)
            for pattern, groups in models["groups"].items()
        )


ANONYMOUS = Caller("anonymous", None)
MEMBER = Caller("member", ("members",))
ADMIN = Caller("admin", ("admins",))


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def recorder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RecordingUpstream]:
    upstream = start_recording_upstream(tmp_path_factory.mktemp("recorder"))
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def gateway(
    start_gateway: StartGateway,  # noqa: F811
    recorder: RecordingUpstream,
) -> RunningGateway:
    """Bodies up to 2 MB, so that the 1 MB bodies of the concurrency case are judged."""
    return start_gateway(
        env=GATEWAY_ENV, limits={"max_body_bytes": 2_000_000}, **recorder.gateway_sections()
    )


@pytest.fixture(scope="module")
def tokens(signer: Signer) -> dict[str, str]:  # noqa: F811
    return {
        caller.name: signer.token(groups=list(caller.groups), expires_in=3600)
        for caller in (MEMBER, ADMIN)
        if caller.groups is not None
    }


# --- sending byte for byte ---------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]


@dataclass(frozen=True)
class Sent:
    """One request as written on the wire; ``body`` is the body the gateway reads."""

    method: bytes
    target: bytes
    caller: Caller = ANONYMOUS
    body: bytes | None = None
    headers: tuple[tuple[bytes, bytes], ...] = ()
    chunked: bool = False
    case: str = field(default_factory=lambda: uuid.uuid4().hex)

    def wire(self, tokens: dict[str, str]) -> bytes:
        lines = [self.method + b" " + self.target + b" HTTP/1.1", b"Host: 127.0.0.1"]
        if self.caller.groups is not None:
            lines.append(b"Authorization: Bearer " + tokens[self.caller.name].encode())
        lines.append(f"{CASE_HEADER}: {self.case}".encode())
        lines.extend(name + b": " + value for name, value in self.headers)
        payload = b""
        if self.body is not None and self.chunked:
            lines.append(b"Transfer-Encoding: chunked")
            half = len(self.body) // 2
            for part in (self.body[:half], self.body[half:]):
                if part:
                    payload += b"%x\r\n%s\r\n" % (len(part), part)
            payload += b"0\r\n\r\n"
        elif self.body is not None:
            lines.append(b"Content-Length: %d" % len(self.body))
            payload = self.body
        lines.append(b"Connection: close")
        return b"\r\n".join(lines) + b"\r\n\r\n" + payload


def exchange(gateway: RunningGateway, raw: bytes, head: bool = False) -> Reply | None:
    """Write ``raw`` on a fresh connection; the reply, or None if the connection just closed."""
    port = int(gateway.config["listen"]["port"])
    with socket.create_connection(("127.0.0.1", port), 5, (CLIENT_ADDRESS, 0)) as sock:
        sock.sendall(raw)
        response = http.client.HTTPResponse(sock, method="HEAD" if head else "GET")
        try:
            response.begin()
            body = response.read()
        except (http.client.HTTPException, OSError):
            return None
        finally:
            response.close()
        return Reply(response.status, list(response.getheaders()), body)


def send(
    gateway: RunningGateway, recorder: RecordingUpstream, tokens: dict[str, str], sent: Sent
) -> tuple[Reply | None, Recording]:
    recorder.take()
    reply = exchange(gateway, sent.wire(tokens), head=sent.method == b"HEAD")
    return reply, recorder.take()


def judged(
    gateway: RunningGateway, recorder: RecordingUpstream, tokens: dict[str, str], sent: Sent
) -> None:
    """Send one generated request and judge it; label the outcome for the statistics."""
    reply, recording = send(gateway, recorder, tokens, sent)
    forwarded = any(r.case == sent.case for r in recording.requests)
    status = "no answer" if reply is None else str(reply.status)
    event(f"{status} {'forwarded' if forwarded else 'not forwarded'}")
    judge(sent, reply, recording)


# --- what DESIGN allows to be forwarded -----------------------------------------------------


def origin_form(target: bytes) -> bytes:
    """The path and query a server reads from a target: absolute form reduced, no fragment."""
    if target[:7].lower() == b"http://" or target[:8].lower() == b"https://":
        rest = target.split(b"//", 1)[1]
        slash = rest.find(b"/")
        target = rest[slash:] if slash >= 0 else b"/"
    return target.split(b"#", 1)[0]


def design_canonical(path_and_query: bytes) -> bool:
    """DESIGN "Request path", step 1, restated: what may be judged and forwarded as it is."""
    path = path_and_query.partition(b"?")[0]
    if any(b < 0x21 or b > 0x7E for b in path_and_query):
        return False  # control, space or non-ASCII
    if not path.startswith(b"/v1/") or b"%" in path or b"\\" in path or b";" in path:
        return False
    segments = path.split(b"/")[1:]
    return all(segments) and not any(set(s) == {ord(".")} for s in segments)


class StrictBodyError(ValueError):
    pass


def strict_parse(raw: bytes) -> dict[str, Any]:
    """DESIGN's body rules, restated independently of gateway/body.py."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:  # Go matches keys without case
        folded = [key.casefold() for key, _ in items]
        if len(set(folded)) != len(folded):
            raise StrictBodyError(f"keys repeat (some parsers ignore case): {items!r:.80}")
        return dict(items)

    def constant(name: str) -> Any:
        raise StrictBodyError(name)

    def finite(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            raise StrictBodyError(f"{text} overflows a double")
        return value

    value = json.loads(
        raw.decode("utf-8"), object_pairs_hook=pairs, parse_constant=constant, parse_float=finite
    )
    if not isinstance(value, dict):
        raise StrictBodyError("not an object")
    if any(key.casefold() != key for key in value):
        raise StrictBodyError("a top-level field Go reads as another")
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            node.encode("utf-8")  # a lone surrogate raises
        elif isinstance(node, dict | list):
            if depth > MAX_DEPTH:
                raise StrictBodyError("too deep")
            items = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
            for key, child in items:
                if isinstance(key, str):
                    key.encode("utf-8")
                stack.append((child, depth + 1))
    if "stream" in value and not isinstance(value["stream"], bool):
        raise StrictBodyError("stream is not a boolean")
    for name in (*TOKEN_FIELDS, *COUNT_FIELDS):
        if name in value and not positive_int(value[name]):
            raise StrictBodyError(f"{name} is not a positive integer")
    return value


def positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def outputs_per_token(api: str, body: dict[str, Any]) -> int:
    """How many answers share the output cap: choices, times prompts in a completions batch."""
    choices = max([1, *(body[name] for name in COUNT_FIELDS if name in body)])
    prompt = body.get("prompt")
    batch = isinstance(prompt, list) and bool(prompt) and not isinstance(prompt[0], int)
    if api == "completions" and batch:
        return int(choices * len(prompt))
    return int(choices)


# --- the property ----------------------------------------------------------------------------


def judge(sent: Sent, reply: Reply | None, recording: Recording) -> None:
    """Assert the property of the module docstring for one request."""
    ours = [r for r in recording.requests if r.case == sent.case]
    others = [r for r in recording.requests if r not in ours]
    listing = sent.method == b"GET" and origin_form(sent.target).split(b"?")[0] == b"/v1/models"
    for other in others:  # only the gateway's own model listing may reach the upstream
        assert listing and other.method == "GET" and other.target.endswith(b"/v1/models"), other
        assert not other.body
    for request in recording.requests:  # and every byte on the wire was one of these requests
        line = f"{request.method} ".encode() + request.target + b" HTTP/1.1\r\n"
        assert line in recording.wire[request.conn], "the recorder's parse differs from the wire"
    if not recording.requests:
        assert not recording.wire, f"bytes reached the upstream but no request: {recording.wire}"

    if not ours:
        if reply is not None and not (listing and reply.status == 200):
            assert 400 <= reply.status < 500, (reply.status, reply.body[:300])
        return
    assert len(ours) == 1, f"one request became {len(ours)} upstream"
    got = ours[0]
    assert reply is not None and reply.status < 500, reply
    assert reply.header(SEQ_HEADER) == [str(got.seq)], "the answer is not the upstream's"
    for name, forged in FORGED_HEADERS.items():
        assert len(reply.header(name)) == 1 and forged not in reply.header(name), name
    expected = origin_form(sent.target)
    assert design_canonical(expected), f"forwarded a target DESIGN refuses: {sent.target!r}"
    assert got.method == sent.method.decode("latin-1")
    prefix = KEYED_PREFIX.encode() if got.target.startswith(KEYED_PREFIX.encode()) else b""
    assert got.target == prefix + expected, (got.target, sent.target)
    judge_headers(sent, got, keyed=bool(prefix))
    judge_body(sent, got, expected.split(b"?")[0].decode())


def judge_headers(sent: Sent, got: Recorded, keyed: bool) -> None:
    assert got.header("X-Forwarded-For") == [CLIENT_ADDRESS]
    assert got.header("Authorization") == ([f"Bearer {OPERATOR_KEY}"] if keyed else [])
    if keyed:
        assert got.header("OpenAI-Organization") == [OPERATOR_ORG]
    for name in (
        "Cookie", "Forwarded", "X-Real-IP", "X-Forwarded-Host", "X-Forwarded-Prefix",
        "X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override",
        "X-Original-URL", "X-Rewrite-URL", "Transfer-Encoding", "Expect", "X-Forwarded-Port",
    ):  # fmt: skip
        assert not got.header(name), f"{name} reached the upstream"
    assert len(got.header("Content-Length")) <= 1


def judge_body(sent: Sent, got: Recorded, path: str) -> None:
    if not sent.body:
        assert got.body == b""
        return
    try:
        forwarded = strict_parse(got.body)
    except (ValueError, UnicodeError) as exc:
        raise AssertionError(
            f"forwarded a body DESIGN refuses ({exc}): {got.body[:200]!r}"
        ) from exc
    api = POST_APIS.get(path) if sent.method == b"POST" else None
    original = json.loads(sent.body)
    if got.body != sent.body:
        changed = {
            k
            for k in original.keys() | forwarded.keys()
            if original.get(k, None) != forwarded.get(k, None)
        }
        assert api in CAP_FIELDS and changed <= set(CAP_FIELDS[api]), f"rewrote {changed}"
    model = forwarded.get("model")
    assert isinstance(model, str) and sent.caller.may_use(model), f"forwarded model {model!r}"
    cap = sent.caller.cap
    for name in TOKEN_FIELDS:
        if name in forwarded:
            assert forwarded[name] <= cap, f"{name} {forwarded[name]} over the cap {cap}"
    if api in CAP_FIELDS:
        present = [forwarded[name] for name in CAP_FIELDS[api] if name in forwarded]
        assert present, "the output cap obligation was not applied"
        assert outputs_per_token(api, forwarded) * max(present) <= cap


# --- generators ------------------------------------------------------------------------------

PATHS = [
    "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses",
    "/v1/models", "/v1/models/demo-small", "/v1/models/demo-large", "/v1/files",
]  # fmt: skip
PIECES = [
    ".", "..", "...", "%2e", "%2E", "%2e%2e", "%2E%2e", ".%2e", "%252e%252e", "%2f", "%2F",
    "%5c", "%5C", "%25", "\\", "..\\", ";", ";x=1", "..;", "%3b", "%00", "\x00", "\t", "\x7f",
    "é", "%c0%ae%c0%ae", "%u002e", "+", "~", ":", "@", "chat%2fcompletions", "", "%20",
    "\uff0e\uff0e", "demo-large", "models", "chat", "completions", "v1", "V1", "#", "?",
    "a" * 2100,
]  # fmt: skip
QUERY_KEYS = ["a", "A", "%61", "model", "api-version", "a%00", "a+", "a[]", "", "a%3Db", "%", "b"]
QUERY_VALUES = ["1", "2", "%2e%2e", "demo-large", "%zz", "%", "x#y", "é", "%c3%a9", "%0d%0a", ""]
METHODS = [b"POST"] * 4 + [b"GET"] * 3 + [
    b"PUT", b"PATCH", b"DELETE", b"HEAD", b"OPTIONS", b"TRACE", b"get", b"PROPFIND", b"CONNECT",
]  # fmt: skip
SMALL_CHAT = {"model": "demo-small", "messages": [{"role": "user", "content": "hello"}]}


@st.composite
def targets(draw: st.DrawFn) -> bytes:
    """Canonical targets, the same with a few edits, or raw bytes after /v1/."""
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return b"/v1/" + draw(st.binary(max_size=40))
    if kind < 4:  # canonical: must be forwarded byte for byte when policy allows
        query = draw(st.sampled_from(["", "", "?a=1", "?a=%2e%2e&b=%2F", "?api-version=x:y@z"]))
        return (draw(st.sampled_from(PATHS)) + query).encode()
    segments = draw(st.sampled_from(PATHS)).split("/")[1:]
    for _ in range(draw(st.sampled_from([0, 0, 0, 0, 1, 1, 2, 3]))):
        edit = draw(st.sampled_from(["insert", "replace", "encode", "separator", "trail"]))
        index = draw(st.integers(0, len(segments)))
        piece = draw(st.sampled_from(PIECES))
        if edit == "insert":
            segments.insert(index, piece)
        elif edit == "replace" and segments:
            segments[index % len(segments)] = piece
        elif edit == "encode" and segments:
            text = segments[index % len(segments)]
            if text:
                at = draw(st.integers(0, len(text) - 1))
                escape = draw(st.sampled_from(["%{:02x}", "%{:02X}", "%25{:02x}"]))
                segments[index % len(segments)] = (
                    text[:at] + escape.format(ord(text[at]) % 256) + text[at + 1 :]
                )
        elif edit == "separator" and len(segments) > 1:
            join = draw(st.sampled_from(["//", "\\", "/./", "%2f", "/;/"]))
            segments[index % (len(segments) - 1)] += join + segments.pop(
                index % (len(segments) - 1) + 1
            )
        elif edit == "trail":
            segments.append("")
    path = ("/" + "/".join(segments)).encode("utf-8", "surrogatepass")
    path = draw(st.sampled_from([b""] * 6 + [b"/", b"http://evil.test", b"HTTP://1.2.3.4"])) + path
    pairs = draw(
        st.lists(st.tuples(st.sampled_from(QUERY_KEYS), st.sampled_from(QUERY_VALUES)), max_size=2)
        | st.just([])
    )
    if pairs:
        join = draw(st.sampled_from(["&", ";", "&&"]))
        path += b"?" + join.join(f"{k}={v}" for k, v in pairs).encode()
    return path


def chat_body(model: str, **extra: Any) -> bytes:
    return json.dumps({"model": model, "messages": SMALL_CHAT["messages"], **extra}).encode()


@settings(EXAMPLES)
@given(
    method=st.sampled_from(METHODS),
    target=targets(),
    model=st.sampled_from(["demo-small", "demo-large"]),
    caller=st.sampled_from([ANONYMOUS, MEMBER]),
)
@example(method=b"POST", target=b"/v1/models/../chat/completions", model="demo-large",
         caller=ANONYMOUS)  # fmt: skip
@example(method=b"POST", target=b"/v1/models/%2e%2e/chat/completions", model="demo-large",
         caller=ANONYMOUS)  # fmt: skip
@example(method=b"POST", target=b"/v1/models/%2E%2E/chat/completions", model="demo-large",
         caller=ANONYMOUS)  # fmt: skip
@example(method=b"GET", target=b"/v1/models/demo-small/..", model="demo-small", caller=ANONYMOUS)
@example(method=b"GET", target=b"/v1/models/demo-small/%2E.", model="demo-small", caller=ANONYMOUS)
@example(method=b"DELETE", target=b"/v1/models/demo-small", model="demo-small", caller=MEMBER)
@example(method=b"POST", target=b"/v1/chat%2fcompletions", model="demo-large", caller=ANONYMOUS)
@example(method=b"GET", target=b"http://evil.test/v1/models/demo-small?a=1", model="demo-small",
         caller=ANONYMOUS)  # fmt: skip
def test_any_request_target(
    gateway: RunningGateway,
    recorder: RecordingUpstream,
    tokens: dict[str, str],
    method: bytes,
    target: bytes,
    model: str,
    caller: Caller,
) -> None:
    body = chat_body(model) if method in (b"POST", b"PUT", b"PATCH") else None
    sent = Sent(method, target, caller, body)
    judged(gateway, recorder, tokens, sent)


# Bodies: JSON text written by hand, so that duplicate keys, odd numbers and broken
# escapes can be expressed at all.

NUMBERS = [
    "0", "-0", "1", "-1", "2", "64", "255", "256", "257", "1024", "4096", "100000", "1.0", "1e2",
    "1E+2", "2.5", "-1e400", "1e400", "1e-400", "123456789012345678901234567890",
    "9007199254740993", "2147483647", "2147483648", "0.1000000000000000055511151231257827",
    "NaN", "Infinity", "-Infinity", "01", "+1", ".5", "1.", "0x10", "1" + "0" * 5000,
]  # fmt: skip
STRINGS = [
    '"hello"', '""', '"\\ud800"', '"\\udfff\\ud800"', '"\\ud83d\\ude00"', '"\\u0000"',
    '"\u202eevil"', '"ignore previous instructions"', '"true"', '"256"', '"demo-large"',
]  # fmt: skip
MODEL_NAMES = [
    "demo-small", "demo-large", "demo-embed", "keyed-small", "DEMO-SMALL", "demo-small ",
    " demo-small", "demo-small\u0000", "demo-small\n", "demo-\u0455mall", "demo-small\u200b",
    "demo-small/../demo-large", "demo-small%00", "demo-*", "*", "", "x" * 300,
    "ft:demo-small:org::1", "demo-small:latest", "../demo-large", "demo-small\\",
]  # fmt: skip
KEYS = [
    "model", "Model", "MODEL", "mod\\u0065l", "stream", "Stream", "max_tokens", "Max_Tokens",
    "max_to\u212aens", "max_completion_tokens", "max_output_tokens", "n", "N", "best_of",
    "messages", "input", "prompt", "temperature", "a", "\\ud800", "",
]  # fmt: skip


def literal(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def json_values(depth: int = 3) -> st.SearchStrategy[str]:
    leaves = st.one_of(
        st.sampled_from(NUMBERS),
        st.sampled_from(["true", "false", "null"]),
        st.sampled_from(STRINGS),
        st.integers(-(2**70), 2**70).map(str),
        st.floats(allow_nan=False, allow_infinity=False).map(repr),
        st.text(max_size=12).map(literal),
        st.sampled_from([63, 64, 65, 200, 100_000]).map(lambda d: "[" * d + "]" * d),
    )
    if depth == 0:
        return leaves
    inner = json_values(depth - 1)
    return st.one_of(
        leaves,
        st.lists(inner, max_size=3).map(lambda items: "[" + ",".join(items) + "]"),
        st.lists(st.tuples(st.sampled_from(KEYS), inner), max_size=3).map(render_object),
    )


def render_object(members: list[tuple[str, str]]) -> str:
    return "{" + ",".join(f'"{key}":{value}' for key, value in members) + "}"


BASES = {
    "/v1/chat/completions": ("messages", '[{"role":"user","content":"hello"}]'),
    "/v1/completions": ("prompt", '"hello"'),
    "/v1/embeddings": ("input", '"hello"'),
    "/v1/responses": ("input", '"hello"'),
}
BATCH_OF_FOUR = b'{"model":"demo-small","prompt":["a","b","c","d"],"max_tokens":256}'
BATCH_PROMPTS = ['["a","b","c","d"]', "[1,2,3]", "[[1,2],[3]]", '["a"]', "[]"]


@st.composite
def bodies(draw: st.DrawFn, path: str) -> bytes:
    text_key, text_value = BASES[path]
    if path == "/v1/completions":
        text_value = draw(st.sampled_from(['"hello"', *BATCH_PROMPTS]))
    members = [("model", literal(draw(st.sampled_from(MODEL_NAMES)))), (text_key, text_value)]
    extras = st.tuples(
        st.sampled_from(KEYS),
        st.one_of(
            st.sampled_from(NUMBERS), json_values(), st.sampled_from(MODEL_NAMES).map(literal)
        ),
    )
    for key, value in draw(st.lists(extras, max_size=4)):
        members.insert(draw(st.integers(0, len(members))), (key, value))
    text = render_object(members)
    raw = text.encode("utf-8", "surrogatepass")
    mutation = draw(st.sampled_from(["none"] * 6 + ["bom", "utf16", "latin1", "trailing", "lead"]))
    if mutation == "bom":
        raw = b"\xef\xbb\xbf" + raw
    elif mutation == "utf16":
        raw = text.encode("utf-16-le", "surrogatepass")
    elif mutation == "latin1":
        raw = raw.replace(b"hello", b"h\xe9llo\xff")
    elif mutation == "trailing":
        raw += draw(st.sampled_from([b" ", b"\n", b"x", b"{}", b"\x00"]))
    elif mutation == "lead":
        raw = draw(st.sampled_from([b" ", b"\t\n", b"\x00"])) + raw
    return raw


@st.composite
def body_requests(draw: st.DrawFn) -> Sent:
    path = draw(st.sampled_from(sorted(BASES)))
    caller = draw(st.sampled_from([ANONYMOUS, MEMBER]))
    return Sent(b"POST", path.encode(), caller, draw(bodies(path)))


@settings(EXAMPLES)
@given(sent=body_requests())
@example(sent=Sent(b"POST", b"/v1/chat/completions", ANONYMOUS,
                   chat_body("demo-large", max_tokens=100_000)))  # fmt: skip
@example(sent=Sent(b"POST", b"/v1/chat/completions", ANONYMOUS,
                   b'{"model":"demo-small","messages":[],"model":"demo-large"}'))  # fmt: skip
@example(sent=Sent(b"POST", b"/v1/chat/completions", ANONYMOUS,
                   b'{"model":"demo-small","messages":[],"Model":"demo-large"}'))  # fmt: skip
@example(sent=Sent(b"POST", b"/v1/chat/completions", ANONYMOUS,
                   b'{"model":"demo-small","messages":[],"temperature":1e400}'))  # fmt: skip
@example(sent=Sent(b"POST", b"/v1/completions", ANONYMOUS, BATCH_OF_FOUR))
@example(sent=Sent(b"POST", b"/v1/chat/completions", ANONYMOUS,
                   b'{"model":"demo-small","messages":[],"N":64}'))  # fmt: skip
@example(sent=Sent(b"POST", b"/v1/chat/completions", ANONYMOUS,
                   b'{"model":"demo-small","messages":[],"stream":"false"}'))  # fmt: skip
def test_any_request_body(
    gateway: RunningGateway, recorder: RecordingUpstream, tokens: dict[str, str], sent: Sent
) -> None:
    judged(gateway, recorder, tokens, sent)


HEADER_SETS = [
    (b"X-HTTP-Method-Override", b"DELETE"), (b"X-Method-Override", b"DELETE"),
    (b"X-HTTP-Method", b"DELETE"), (b"X-Original-URL", b"/v1/models/demo-large"),
    (b"X-Rewrite-URL", b"/v1/admin"), (b"X-Forwarded-For", b"6.6.6.6"),
    (b"X-Forwarded-Host", b"evil.test"), (b"X-Forwarded-Prefix", b"/evil"),
    (b"X-Forwarded-Proto", b"https"), (b"X-Forwarded-Port", b"443"),
    (b"Forwarded", b"for=6.6.6.6;proto=https"),
    (b"X-Real-IP", b"6.6.6.6"), (b"Cookie", b"session=1"), (b"Content-Type", b"text/plain"),
    (b"Content-Type", b"application/json; charset=utf-16"), (b"Content-Encoding", b"gzip"),
    (b"Content-Encoding", b"identity"), (b"Content-Length", b"3"), (b"Transfer-Encoding", b"gzip"),
    (b"Expect", b"100-continue"), (b"Connection", b"X-Forwarded-For"), (b"Host", b"evil.test"),
    (b"Authorization", b"Basic YTpi"), (b"OpenAI-Organization", b"org-evil"),
]  # fmt: skip


@settings(EXAMPLES, max_examples=80)
@given(
    headers=st.lists(st.sampled_from(HEADER_SETS), max_size=4),
    chunked=st.booleans(),
    caller=st.sampled_from([ANONYMOUS, MEMBER]),
)
@example(headers=[(b"X-HTTP-Method-Override", b"DELETE")], chunked=False, caller=ANONYMOUS)
@example(headers=[(b"X-Forwarded-For", b"6.6.6.6")], chunked=False, caller=ANONYMOUS)
@example(headers=[(b"Content-Length", b"3")], chunked=True, caller=ANONYMOUS)
def test_any_request_headers(
    gateway: RunningGateway,
    recorder: RecordingUpstream,
    tokens: dict[str, str],
    headers: list[tuple[bytes, bytes]],
    chunked: bool,
    caller: Caller,
) -> None:
    sent = Sent(
        b"POST", b"/v1/chat/completions", caller, chat_body("demo-small"), tuple(headers), chunked
    )
    judged(gateway, recorder, tokens, sent)


# --- cases by hand -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [{}, {"max_tokens": -1}, {"n": 64}, {"n": 3}, {"max_completion_tokens": 200, "n": 2}],
    ids=["omitted", "negative", "n-64", "n-3", "completion-tokens-n-2"],
)
def test_an_anonymous_output_cap_is_refused_or_applied(
    gateway: RunningGateway, recorder: RecordingUpstream, tokens: dict[str, str],
    extra: dict[str, int],
) -> None:  # fmt: skip
    sent = Sent(b"POST", b"/v1/chat/completions", ANONYMOUS, chat_body("demo-small", **extra))
    reply, recording = send(gateway, recorder, tokens, sent)
    judge(sent, reply, recording)
    assert reply is not None
    if reply.status == 200:
        body = json.loads(recording.requests[0].body)
        choices = body.get("n", 1)
        caps = [body[f] for f in ("max_tokens", "max_completion_tokens") if f in body]
        assert caps and choices * max(caps) <= ANONYMOUS.cap


def test_a_completions_batch_shares_the_output_cap(
    gateway: RunningGateway, recorder: RecordingUpstream, tokens: dict[str, str]
) -> None:
    raw = json.dumps({"model": "demo-small", "prompt": ["a", "b", "c", "d"], "max_tokens": 256})
    sent = Sent(b"POST", b"/v1/completions", ANONYMOUS, raw.encode())
    reply, recording = send(gateway, recorder, tokens, sent)
    judge(sent, reply, recording)
    assert reply is not None and reply.status == 200
    assert json.loads(recording.requests[0].body)["max_tokens"] == ANONYMOUS.cap // 4


def test_caller_organization_never_reaches_a_keyed_upstream(
    gateway: RunningGateway, recorder: RecordingUpstream, tokens: dict[str, str]
) -> None:
    sent = Sent(
        b"POST", b"/v1/chat/completions", ADMIN, chat_body("keyed-small"),
        ((b"OpenAI-Organization", b"org-caller"), (b"openai-organization", b"org-caller-2"),
         (b"OpenAI-Project", b"proj-caller")),
    )  # fmt: skip
    reply, recording = send(gateway, recorder, tokens, sent)
    judge(sent, reply, recording)
    assert reply is not None and reply.status == 200
    (got,) = recording.requests
    assert got.target == b"/keyed/v1/chat/completions"
    assert got.header("OpenAI-Organization") == [OPERATOR_ORG]
    assert got.header("OpenAI-Project") == []
    assert got.header("Authorization") == [f"Bearer {OPERATOR_KEY}"]


def test_forwarding_headers_and_method_overrides_are_the_gateways_own(
    gateway: RunningGateway, recorder: RecordingUpstream, tokens: dict[str, str]
) -> None:
    sent = Sent(
        b"POST", b"/v1/chat/completions", ANONYMOUS, chat_body("demo-small"),
        ((b"X-Forwarded-For", b"6.6.6.6"), (b"X-Forwarded-Proto", b"https"),
         (b"X-HTTP-Method-Override", b"DELETE"), (b"X-Original-URL", b"/v1/models/demo-large"),
         (b"X-Agora-Policy-Version", b"999")),
    )  # fmt: skip
    reply, recording = send(gateway, recorder, tokens, sent)
    judge(sent, reply, recording)
    (got,) = recording.requests
    assert got.method == "POST"
    assert got.header("X-Forwarded-For") == [CLIENT_ADDRESS]
    assert got.header("X-Forwarded-Proto") == ["http"]
    assert not got.header("X-HTTP-Method-Override") and not got.header("X-Original-URL")
    assert not got.header("X-Agora-Policy-Version")


@pytest.mark.parametrize("stream", [False, True])
def test_a_proxied_response_has_one_date_and_one_server_header(
    gateway: RunningGateway, recorder: RecordingUpstream, tokens: dict[str, str], stream: bool
) -> None:
    sent = Sent(b"POST", b"/v1/chat/completions", ANONYMOUS, chat_body("demo-small", stream=stream))
    reply, recording = send(gateway, recorder, tokens, sent)
    judge(sent, reply, recording)
    assert reply is not None and reply.status == 200
    assert len(reply.header("Date")) == 1 and len(reply.header("Server")) == 1
    if stream:
        assert reply.body.endswith(b"data: [DONE]\n\n")


def test_big_bodies_do_not_make_small_requests_fail_closed(
    gateway: RunningGateway, recorder: RecordingUpstream
) -> None:
    """Three 1 MB bodies of floats among forty small requests, under the default OPA budget.

    No request fails closed: OPA's budget grows with the body
    (``policy.timeout_ms_per_mib``), and large bodies take turns for their
    parsing, judging and hashing (``limits.max_concurrent_large``). A large
    body that waits longer than ``limits.queue_timeout_ms`` for its turn is
    shed as overload (503 ``overloaded``) before any work, by design.
    """
    numbers = random.Random(7)
    big = json.dumps(
        {"model": "demo-embed", "input": "x",
         "user_vector": [round(numbers.random() * 1000, 9) for _ in range(80_000)]}
    ).encode()  # fmt: skip
    assert len(big) > 1_000_000

    async def load() -> tuple[list[int | str], list[int | str]]:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as client:

            async def post_big() -> int | str:
                response = await client.post(
                    "/v1/embeddings", content=big, headers={"Content-Type": "application/json"}
                )
                if response.status_code == 503:
                    return str(response.json()["error"]["code"])
                return response.status_code

            async def post_small(index: int) -> int:
                await asyncio.sleep(index * 0.02)
                response = await client.post("/v1/chat/completions", json=SMALL_CHAT)
                return response.status_code

            results = await asyncio.gather(
                *(post_big() for _ in range(3)), *(post_small(i) for i in range(40))
            )
        return list(results[:3]), list(results[3:])

    big_statuses, small_statuses = asyncio.run(load())
    recorder.take()
    # A large body either gets its turn and is answered, or is shed as overload before any
    # work: never failed closed (policy_unavailable) with OPA healthy.
    assert set(big_statuses) <= {200, "overloaded"}, big_statuses
    assert 200 in big_statuses, big_statuses
    assert small_statuses.count(503) == 0, small_statuses
    assert set(small_statuses) == {200}, small_statuses


def test_expect_100_continue_is_answered(
    gateway: RunningGateway, recorder: RecordingUpstream, tokens: dict[str, str]
) -> None:
    """A client may send the body without waiting for 100 Continue; the gateway holds it all."""
    sent = Sent(
        b"POST", b"/v1/chat/completions", ANONYMOUS, chat_body("demo-small"),
        ((b"Expect", b"100-continue"),),
    )  # fmt: skip
    reply, recording = send(gateway, recorder, tokens, sent)
    judge(sent, reply, recording)
    assert reply is not None and reply.status == 200


def test_the_recorder_sees_what_a_client_library_would_hide(
    gateway: RunningGateway, recorder: RecordingUpstream, tokens: dict[str, str]
) -> None:
    """The raw client really sends dot segments: the gateway gets them and refuses them."""
    sent = Sent(b"GET", b"/v1/models/../models/demo-small")
    reply, recording = send(gateway, recorder, tokens, sent)
    assert reply is not None and reply.status == 400
    assert recording.empty
    assert json.loads(reply.body)["error"]["code"] == "invalid_target"
