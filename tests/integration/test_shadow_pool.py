"""The shadow pool with real OPA processes: one per bundle, never restarted in a loop."""

from __future__ import annotations

from gateway.community.shadow import ShadowPool, Verdict


async def test_a_bundle_that_does_not_compile_is_an_error_and_is_not_restarted_at_once() -> None:
    """A real OPA on a broken bundle: the verdict says why, and the next question does not
    spawn another process."""
    pool = ShadowPool("opa", "agora/main", 2, 1000)
    await pool.start()
    try:
        broken = {".manifest": b'{"roots": ["agora"]}', "agora/main.rego": b"package agora.main\n{"}
        first = await pool.decide("sha256:" + "e" * 64, broken, {})
        assert first.error is not None and "did not start" in first.error
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
