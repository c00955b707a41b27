from __future__ import annotations

import asyncio
import time

import pytest

from gateway.exceptions import BundleError, DigestMismatch
from gateway.pinning.bundle import Bundle
from gateway.pinning.service import _is_loopback, _prefer_wait
from gateway.pinning.store import PolicyStore, prepare_version


def bundle(rule: str = "allow := true") -> Bundle:
    return Bundle(
        {
            ".manifest": b'{"roots": ["agora"]}',
            "agora/main.rego": f"package agora.main\n{rule}\n".encode(),
        },
        "test",
    )


def test_activation_requires_the_pinned_digest() -> None:
    store = PolicyStore()
    with pytest.raises(DigestMismatch):
        store.activate(bundle(), 1, "sha256:" + "0" * 64)
    assert store.active is None
    active = store.activate(bundle(), 1, bundle().digest)
    assert store.active is active
    assert store.lookup(active.revision) is active
    assert active.revision == f"v1+{bundle().digest}"


def test_an_older_version_never_replaces_a_newer_one() -> None:
    store = PolicyStore()
    store.activate(bundle("allow := false"), 2, None)
    with pytest.raises(BundleError, match="already in force"):
        store.activate(bundle(), 1, None)
    assert store.active is not None and store.active.version == 2


def test_same_version_with_other_content_is_refused() -> None:
    store = PolicyStore()
    store.activate(bundle(), 1, None)
    with pytest.raises(DigestMismatch):
        store.activate(bundle("allow := false"), 1, None)


def test_old_revisions_stay_known_for_in_flight_decisions() -> None:
    store = PolicyStore()
    first = store.activate(bundle(), 1, None)
    store.activate(bundle("allow := false"), 2, None)
    assert store.lookup(first.revision) is first
    assert store.lookup("v9+sha256:unknown") is None


async def test_long_poll_wakes_on_activation() -> None:
    store = PolicyStore()
    first = store.activate(bundle(), 1, None)
    waiter = asyncio.create_task(store.wait_for_change(first.revision, timeout_s=5))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    store.activate(bundle("allow := false"), 2, None)
    await asyncio.wait_for(waiter, 1)


async def test_long_poll_times_out_without_change() -> None:
    store = PolicyStore()
    first = store.activate(bundle(), 1, None)
    started = time.monotonic()
    await store.wait_for_change(first.revision, timeout_s=0.2)
    assert time.monotonic() - started >= 0.19  # held for the whole wait, not answered at once
    assert store.active is first


async def test_long_poll_returns_as_soon_as_the_version_changes() -> None:
    store = PolicyStore()
    first = store.activate(bundle(), 1, None)
    waiting = asyncio.create_task(store.wait_for_change(first.revision, timeout_s=10))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    store.activate(bundle("allow := false"), 2, None)
    await asyncio.wait_for(waiting, 1)


def test_prefer_wait_parsing() -> None:
    assert _prefer_wait("wait=10") == 10
    assert _prefer_wait("modes=snapshot,delta;wait=10") == 10  # what OPA sends
    assert _prefer_wait("respond-async, wait=5") == 5
    assert _prefer_wait("wait=9999") == 60
    assert _prefer_wait("wait=x") == 0
    assert _prefer_wait(None) == 0


def test_loopback_clients_only() -> None:
    assert _is_loopback("127.0.0.1") and _is_loopback("::1") and _is_loopback("::ffff:127.0.0.1")
    assert not _is_loopback("10.0.0.7") and not _is_loopback("::ffff:10.0.0.7")
    assert not _is_loopback("testclient")
    # A service mesh's sidecar relays other pods' traffic from 127.0.0.6: not our own OPA.
    assert not _is_loopback("127.0.0.6") and not _is_loopback("::ffff:127.0.0.6")


def test_only_the_active_version_judges_and_the_superseded_one_for_the_overlap() -> None:
    store = PolicyStore()
    assert store.judge("anything", overlap_s=60) is None
    first = store.activate(bundle(), 1, None)
    assert store.judge(first.revision, overlap_s=0) is first
    second = store.activate(bundle("allow := false"), 2, None)
    assert store.judge(second.revision, overlap_s=0) is second
    assert store.judge(first.revision, overlap_s=60) is first  # OPA may not have switched yet
    assert store.judge(first.revision, overlap_s=0) is None  # the overlap is over
    assert store.judge(None, overlap_s=60) is None
    third = store.activate(bundle("allow := input.x"), 3, None)
    assert store.judge(first.revision, overlap_s=60) is None  # two switches ago
    assert store.judge(second.revision, overlap_s=60) is second
    assert store.lookup(first.revision) is first  # still known, for messages and /readyz
    assert store.judge(third.revision, overlap_s=0) is third


def test_preparing_a_version_touches_no_shared_state() -> None:
    store = PolicyStore()
    prepared = prepare_version(bundle(), 1, bundle().digest, ratified_block=7)
    assert store.active is None and prepared.archive and prepared.activated_at == 0.0
    installed = store.install(prepared)
    assert store.active is installed and installed.ratified_block == 7
    assert installed.activated_at > 0
    with pytest.raises(BundleError, match=r"needs a \.manifest"):
        prepare_version(Bundle({"agora/main.rego": b"package agora.main"}, "bare"), 2, None)
