"""The community page in a real browser, against a gateway that reads a real dev chain (anvil).

Two proposals are made with ``gateway.gov`` against the version in force: one
that opens ``demo-large`` to anonymous callers and adds a deny pattern, and one
whose bundle denies everything. Traffic is sent; the gateway's answers must be
the version in force's alone, while the page (and its JSON) shows each
proposal, its diff, and a shadow impact equal to what this test computes from
the same requests; the figures equal ``agora log stats --figures``; the
dry-run form shows both decisions. Debian's chromium, driven by Playwright.
A screenshot is kept under ``$AGORA_SCREENSHOT_DIR`` (else the test's tmp dir).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from demo.devchain import Anvil
from demo.quickstart import start_governance
from gateway.gov.governance import Governance, Support
from gateway.pinning.bundle import load_bundle
from tests.integration.conftest import RunningGateway, StartGateway
from tests.support import ROOT, Signer, free_port, run_agora

CHROMIUM = Path("/usr/bin/chromium")
SECRET_WORD = "xyzzy"
DENY_ALL_REASON = "this proposal denies every request"


@dataclass(frozen=True)
class Sent:
    """One request of the test's traffic, and what each policy decides on it."""

    model: str
    text: str
    region: str | None
    """The caller's ``region`` claim (an authenticated caller), or None: anonymous."""
    v1_allows: bool
    open_allows: bool
    """What the first proposal (demo-large opened, a new deny pattern) decides."""


TRAFFIC = [
    Sent("demo-small", "Hello", None, v1_allows=True, open_allows=True),
    Sent("demo-small", "Hello again", "north", v1_allows=True, open_allows=True),
    Sent("demo-large", "Hello", None, v1_allows=False, open_allows=True),
    Sent("demo-large", "Hi there", None, v1_allows=False, open_allows=True),
    Sent("demo-small", f"say {SECRET_WORD} please", "south", v1_allows=True, open_allows=False),
    Sent("demo-small", f"what is {SECRET_WORD}", None, v1_allows=True, open_allows=False),
    Sent("demo-nothing", "Hello", "north", v1_allows=False, open_allows=False),
]


def opened_bundle(workdir: Path) -> Path:
    """Version 1 with demo-large open to anonymous callers and one deny pattern more."""
    bundle = workdir / "proposal-open"
    shutil.copytree(ROOT / "policies", bundle)
    data_file = bundle / "agora" / "config" / "data.json"
    text = data_file.read_text()
    # Edited as text, the way a proposer edits it, so that the diff shows only the change.
    text = text.replace('"anonymous": ["demo-small", "demo-embed"]',
                        '"anonymous": ["demo-small", "demo-embed", "demo-large"]')  # fmt: skip
    pattern = {"id": "secret-word", "description": "the secret word", "pattern": SECRET_WORD}
    head, rules = text.split('"deny_patterns": [', 1)
    rules, tail = rules.split("}\n  ]", 1)
    text = f'{head}"deny_patterns": [{rules}}},\n    {json.dumps(pattern)}\n  ]{tail}'
    data = json.loads(text)
    assert "demo-large" in data["models"]["anonymous"] and data["deny_patterns"][-1] == pattern
    data_file.write_text(text)
    return bundle


def deny_all_bundle(workdir: Path) -> Path:
    """A bundle whose decision denies every request."""
    bundle = workdir / "proposal-deny-all"
    (bundle / "agora").mkdir(parents=True)
    (bundle / ".manifest").write_text('{"roots": ["agora"], "revision": ""}')
    (bundle / "agora" / "main.rego").write_text(
        "package agora.main\n\nallow := false\n\n"
        f'reasons := ["{DENY_ALL_REASON}"]\n\nmax_tokens := null\n'
    )
    return bundle


@dataclass
class Stack:
    gateway: RunningGateway
    open_id: str
    deny_all_id: str
    open_digest: str
    v1_digest: str


@pytest.fixture(scope="module")
def stack(start_gateway: StartGateway, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("community")
    chain = Anvil.start(free_port(), workdir)
    try:
        deployment, _ = start_governance(chain, ROOT / "policies")
        governance = Governance.from_deployment(chain.w3, deployment)
        sender = chain.sender()
        opened, deny_all = opened_bundle(workdir), deny_all_bundle(workdir)
        first = governance.propose_ratification(sender, load_bundle(opened).digest, opened.as_uri())
        second = governance.propose_ratification(
            sender, load_bundle(deny_all).digest, deny_all.as_uri()
        )
        chain.mine_until(first.vote_start + 1)
        governance.vote(sender, first.proposal_id, Support.FOR)
        gateway = start_gateway(
            governance={
                "rpc_urls": [chain.url],
                "registry": deployment.registry,
                "chain_id": deployment.chain_id,
                "confirmations": 0,
                "poll_s": 0.5,
            },
            community={
                "governor": deployment.governor,
                "from_block": deployment.block_number,
                "poll_s": 0.5,
                "shadow": {"sample_rate": 1.0, "queue_size": 1000},
            },
            decision_log={"path": str(workdir / "decisions.jsonl"), "group_claim": "region"},
        )
        yield Stack(
            gateway,
            str(first.proposal_id),
            str(second.proposal_id),
            first.digest or "",
            load_bundle(ROOT / "policies").digest,
        )
    finally:
        chain.stop()


def eventually(check: Callable[[], Any], timeout_s: float = 30) -> Any:
    """``check()``'s first truthy value, asked again until ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def shadow_of(gateway: RunningGateway) -> dict[str, Any]:
    document: dict[str, Any] = httpx.get(f"{gateway.url}/transparency/shadow").json()
    return {p["proposal_id"]: p for p in document["proposals"]}


@pytest.fixture(scope="module")
def traffic(stack: Stack, signer: Signer) -> list[int]:
    """The test's requests, sent once both proposals are judged in shadow; their statuses."""
    gateway = stack.gateway
    assert eventually(lambda: len(shadow_of(gateway)) == 2), gateway.process.output()
    statuses = []
    for sent in TRAFFIC:
        token = None if sent.region is None else signer.token(groups=(), region=sent.region)
        body = {"model": sent.model, "messages": [{"role": "user", "content": sent.text}]}
        with gateway.client(token) as client:
            statuses.append(client.post("/v1/chat/completions", json=body).status_code)
    judged = eventually(
        lambda: all(p["compared"] == len(TRAFFIC) for p in shadow_of(gateway).values())
    )
    assert judged, shadow_of(gateway)
    return statuses


def expected_impact(proposal_allows: Callable[[Sent], bool]) -> dict[str, Any]:
    """What the shadow must count, computed from the traffic."""
    by_group: dict[str, dict[str, int]] = {}
    would_deny = would_allow = 0
    for sent in TRAFFIC:
        group = by_group.setdefault(
            sent.region or "(none)", {"compared": 0, "would_deny": 0, "would_allow": 0}
        )
        group["compared"] += 1
        if sent.v1_allows and not proposal_allows(sent):
            would_deny += 1
            group["would_deny"] += 1
        elif not sent.v1_allows and proposal_allows(sent):
            would_allow += 1
            group["would_allow"] += 1
    return {"would_deny": would_deny, "would_allow": would_allow, "by_group": by_group}


def test_the_answers_are_the_version_in_force_s_while_a_shadow_bundle_denies_everything(
    stack: Stack, traffic: list[int]
) -> None:
    assert traffic == [200 if sent.v1_allows else 403 for sent in TRAFFIC]
    deny_all = shadow_of(stack.gateway)[stack.deny_all_id]
    assert deny_all["would_deny"] == sum(sent.v1_allows for sent in TRAFFIC)
    assert deny_all["would_allow"] == 0
    assert {"reason": f"would deny: {DENY_ALL_REASON}", "count": deny_all["would_deny"]} in (
        deny_all["by_reason"]
    )


def test_the_shadow_impact_is_what_the_traffic_implies(stack: Stack, traffic: list[int]) -> None:
    impact = shadow_of(stack.gateway)[stack.open_id]
    expected = expected_impact(lambda sent: sent.open_allows)
    assert impact["would_deny"] == expected["would_deny"] == 2
    assert impact["would_allow"] == expected["would_allow"] == 2
    assert impact["by_group"] == expected["by_group"]
    assert len(impact["examples"]) == 4
    example = json.dumps(impact["examples"])
    assert SECRET_WORD not in example and "Hello" not in example  # redacted


def test_the_figures_are_those_agora_log_stats_prints(stack: Stack, traffic: list[int]) -> None:
    gateway = stack.gateway

    def both() -> tuple[Any, Any] | None:
        page = httpx.get(f"{gateway.url}/transparency/decisions").json()["figures"]
        result = run_agora("log", "stats", "--figures", "--json", str(gateway.decision_log))
        assert result.returncode == 0, result.stderr
        files = json.loads(result.stdout)
        return (page, files) if page == files else None

    matched = eventually(both)
    assert matched, "the page's figures never equalled agora log stats --figures"
    figures = matched[0]
    assert figures["by_group"]["north"]["denied"] == 1
    assert figures["by_group"]["south"]["allowed"] == 1


def test_the_proposals_and_versions_are_read_from_the_chain(stack: Stack) -> None:
    gateway = stack.gateway
    answer = httpx.get(f"{gateway.url}/transparency/proposals").json()
    assert answer["voting"] == {"model": "token", "summary": "one AGORA token, one vote"}
    first = next(p for p in answer["proposals"] if p["proposal_id"] == stack.open_id)
    assert first["state"] == "Active" and first["open"] and first["bundle_verified"]
    assert first["votes_for"].endswith(" AGORA") and first["votes_against"] == "0 AGORA"
    versions = httpx.get(f"{gateway.url}/transparency/versions").json()["versions"]
    assert [(v["version"], v["digest"]) for v in versions] == [(1, stack.v1_digest)]
    policy = httpx.get(f"{gateway.url}/transparency/policy").json()
    assert policy["ratification"]["transaction"] == versions[0]["transaction"]
    diff = httpx.get(
        f"{gateway.url}/transparency/diff",
        params={"from": stack.v1_digest, "to": stack.open_digest},
    ).json()
    changed = [f for f in diff["files"] if f["change"] != "unchanged"]
    assert [f["path"] for f in changed] == ["agora/config/data.json"]
    added = [line for line in changed[0]["lines"] if line.startswith("+")][1:]  # not +++
    assert len(added) == 3 and '"demo-large"' in added[0] and "secret-word" in added[2]


def test_the_page_in_a_browser(stack: Stack, traffic: list[int], tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/install-tools.sh chromium")

    gateway = stack.gateway
    shots = Path(os.environ.get("AGORA_SCREENSHOT_DIR") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    expected = expected_impact(lambda sent: sent.open_allows)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            console: list[str] = []
            page.on("console", lambda message: console.append(message.text))
            loaded = page.goto(f"{gateway.url}/community")
            assert loaded is not None
            assert "default-src 'none'" in loaded.headers["content-security-policy"]
            expect(page.locator("#policy-version")).to_have_text("1")
            expect(page.locator("#proposal-table")).to_contain_text(stack.open_id)
            expect(page.locator("#proposal-table")).to_contain_text("Active")
            diff = page.locator(f"#diff-{stack.open_id}").locator("..")
            expect(diff).to_contain_text("agora/config/data.json")
            expect(diff.locator(".diff .add").filter(has_text="demo-large").first).to_be_visible()
            impact = page.locator(f"#impact-{stack.open_id}")
            expect(impact.locator(".would-deny")).to_have_text(str(expected["would_deny"]))
            expect(impact.locator(".would-allow")).to_have_text(str(expected["would_allow"]))
            stats = run_agora("log", "stats", "--figures", "--json", str(gateway.decision_log))
            figures = json.loads(stats.stdout)
            for group, counts in figures["by_group"].items():
                row = page.locator("#by-group tr").filter(has_text=group)
                expect(row.locator("td").nth(2)).to_have_text(str(counts["denied"]))
            page.screenshot(path=str(shots / "community-page.png"), full_page=True)
            for section in ("in-force", "proposals", "decisions", "impact"):
                page.locator(f"#{section}").screenshot(path=str(shots / f"section-{section}.png"))

            page.fill("#dr-model", "demo-large")
            page.fill("#dr-message", "Hello")
            page.select_option("#dr-proposal", stack.open_id)
            page.click("text=Ask the policy")
            expect(page.locator("#verdict-in_force .decision")).to_have_text("Denied")
            expect(page.locator("#verdict-proposal .decision")).to_have_text("Allowed")
            expect(page.locator("#verdict-in_force")).to_contain_text("caller is anonymous")
            page.locator("#dry-run").screenshot(path=str(shots / "section-dry-run.png"))
            # The page needs nothing its Content-Security-Policy refuses (styles, the form).
            assert not [text for text in console if "Content Security Policy" in text], console
        finally:
            browser.close()
    # The dry run wrote nothing to the decision log.
    after = json.loads(
        run_agora("log", "stats", "--figures", "--json", str(gateway.decision_log)).stdout
    )
    assert after["decisions"] == figures["decisions"]
