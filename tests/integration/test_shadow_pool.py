"""The shadow pool with real OPA processes: one per bundle, never restarted in a loop."""

from __future__ import annotations

import pytest

from gateway.community.shadow import ShadowPool, Verdict


async def test_a_bundle_that_does_not_compile_is_an_error_and_is_not_restarted_at_once() -> None:
    """A real OPA on a broken bundle: the verdict says why, and the next question does not
    spawn another process."""
    pool = ShadowPool("opa", "agora/main", 2, 1000)
    await pool.start()
    try:
        broken = {".manifest": b'{"roots": ["agora"]}', "agora/main.rego": b"package agora.main\n{"}
        first = await pool.decide("sha256:" + "e" * 64, broken, {})
        assert first.error is not None and "does not compile" in first.error
        second = await pool.decide("sha256:" + "e" * 64, broken, {})
        assert second.error == first.error
        assert pool.digests == frozenset()
    finally:
        await pool.stop()


async def test_a_shadow_opa_answers_for_its_bundle_alone() -> None:
    pool = ShadowPool("opa", "agora/main", 1, 2000)
    await pool.start()
    deny_all = {
        ".manifest": b'{"roots": ["agora"]}',
        "agora/main.rego": b'package agora.main\n\nallow := false\n\nreasons := ["no"]\n',
    }
    try:
        verdict = await pool.decide("sha256:" + "f" * 64, deny_all, {"model": "m"})
        assert verdict == Verdict(False, ("no",))
        over = await pool.decide("sha256:" + "0" * 64, deny_all, {})
        assert over.error is not None and "max_bundles" in over.error
        await pool.keep_only(frozenset())
        assert pool.digests == frozenset()
    finally:
        await pool.stop()


READS_SECRETS = {
    "http.send": 'reasons := [http.send({"method": "GET", "url": "http://127.0.0.1:1/"}).body]',
    "opa.runtime": "reasons := [opa.runtime().env.AGORA_CALLER_KEY]",
    "net.lookup_ip_addr": 'reasons := [sprintf("%v", [net.lookup_ip_addr("example.org")])]',
}


@pytest.mark.parametrize("builtin", sorted(READS_SECRETS))
async def test_a_proposal_that_reaches_the_network_or_the_environment_is_not_loaded(
    builtin: str,
) -> None:
    """Anyone may propose a bundle, and the dry-run form shows its reasons to anyone: one that
    could send requests from the operator's network or read the gateway's environment (its
    secrets) is refused before OPA loads it."""
    pool = ShadowPool("opa", "agora/main", 2, 2000)
    await pool.start()
    rego = f"package agora.main\n\nallow := false\n\n{READS_SECRETS[builtin]}\n"
    snooping = {".manifest": b'{"roots": ["agora"]}', "agora/main.rego": rego.encode()}
    try:
        verdict = await pool.decide("sha256:" + "1" * 64, snooping, {})
        assert verdict.error is not None and "does not compile" in verdict.error
        assert builtin in verdict.error
        assert pool.digests == frozenset()
    finally:
        await pool.stop()
