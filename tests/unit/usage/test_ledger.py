"""The ledger on local counters: what policy sees, refunds, tokens, windows that roll over,
and what an unreachable Redis means under each ``usage.on_unavailable``."""

from __future__ import annotations

import asyncio
import socket

import pytest

from gateway.auth import ANONYMOUS, Caller
from gateway.config import Usage
from gateway.exceptions import UsageUnavailable
from gateway.lifecycle import State
from gateway.metrics import GatewayMetrics
from gateway.usage.counters import Tokens
from gateway.usage.ledger import UsageLedger
from gateway.usage.windows import Windows

ALICE = Caller(True, "alice", "https://issuer", {"groups": ["members", "ops", "members", 3]})


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def ledger(clock: Clock, **config: object) -> UsageLedger:
    return UsageLedger(Usage.model_validate(config), GatewayMetrics(), clock)


async def settled(usage: UsageLedger) -> None:
    """Let the background refunds and token additions land."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_local_counters_take_refunds_and_tokens_at_once_without_a_task() -> None:
    usage = ledger(Clock(0.0))
    refused = await usage.charge(ANONYMOUS)
    forwarded = await usage.charge(ANONYMOUS)
    tasks = len(asyncio.all_tasks())
    usage.refund(refused)
    usage.add_tokens(forwarded, Tokens(7, 3))
    assert len(asyncio.all_tasks()) == tasks
    after = (await usage.charge(ANONYMOUS)).document["caller"]["minute"]
    assert after == {
        "requests": 1, "tokens": {"prompt": 7, "completion": 3, "total": 10}, "estimated": 0,
    }  # fmt: skip


def test_windows_are_aligned_on_the_epoch() -> None:
    minute, day = Windows({"minute": 60, "day": 86_400}).current(86_400 * 3 + 125.5)
    assert (minute.start, minute.end, minute.resets_in_s(86_400 * 3 + 125.5)) == (
        86_400 * 3 + 120, 86_400 * 3 + 180, 55,
    )  # fmt: skip
    assert day.start == 86_400 * 3


async def test_policy_sees_use_before_this_request_for_caller_and_groups() -> None:
    clock = Clock(1_000_000.0)
    usage = ledger(clock)
    first = await usage.charge(ALICE)
    assert first.document == {
        "windows": {
            "minute": {"seconds": 60, "resets_in_s": 20},
            "day": {"seconds": 86_400, "resets_in_s": 36_800},
        },
        "caller": {
            "minute": {"requests": 0, "tokens": {"prompt": 0, "completion": 0, "total": 0},
                       "estimated": 0},
            "day": {"requests": 0, "tokens": {"prompt": 0, "completion": 0, "total": 0},
                    "estimated": 0},
        },
        "groups": {
            "members": first.document["caller"],
            "ops": first.document["caller"],
        },
        "counters": "local",
    }  # fmt: skip
    usage.add_tokens(first, Tokens(10, 5))
    await settled(usage)
    second = await usage.charge(ALICE)
    assert second.document["caller"]["minute"] == {
        "requests": 1, "tokens": {"prompt": 10, "completion": 5, "total": 15}, "estimated": 0,
    }  # fmt: skip
    assert second.document["groups"]["ops"]["day"]["requests"] == 1


async def test_anonymous_callers_share_one_count_and_have_no_groups() -> None:
    usage = ledger(Clock(0.0))
    await usage.charge(ANONYMOUS)
    spoof = Caller(False, None, None, {"groups": ["admins"]})
    charge = await usage.charge(spoof)
    assert charge.document["caller"]["minute"]["requests"] == 1
    assert charge.document["groups"] == {}


async def test_refunded_requests_do_not_count_and_estimates_say_so() -> None:
    usage = ledger(Clock(0.0))
    refused = await usage.charge(ANONYMOUS)
    usage.refund(refused)
    forwarded = await usage.charge(ANONYMOUS)
    usage.add_tokens(forwarded, Tokens(100, 0, estimated=True))
    await settled(usage)
    after = (await usage.charge(ANONYMOUS)).document["caller"]["day"]
    assert after == {
        "requests": 1, "tokens": {"prompt": 100, "completion": 0, "total": 100}, "estimated": 1,
    }  # fmt: skip


async def test_windows_roll_over() -> None:
    clock = Clock(59.0)
    usage = ledger(clock)
    for _ in range(3):
        await usage.charge(ANONYMOUS)
    clock.now = 60.0
    rolled = (await usage.charge(ANONYMOUS)).document["caller"]
    assert rolled["minute"]["requests"] == 0
    assert rolled["day"]["requests"] == 3
    clock.now = 86_400.0
    assert (await usage.charge(ANONYMOUS)).document["caller"]["day"]["requests"] == 0


async def test_tokens_without_sub_are_counted_together_apart_from_anonymous() -> None:
    usage = ledger(Clock(0.0))
    nameless = Caller(True, None, None, {"groups": ["ops"]})
    await usage.charge(nameless)
    again = await usage.charge(nameless)
    assert again.document["caller"]["minute"]["requests"] == 1
    assert again.document["groups"]["ops"]["minute"]["requests"] == 1
    assert (await usage.charge(ANONYMOUS)).document["caller"]["minute"]["requests"] == 0


async def test_groups_counted_are_bounded_and_the_claim_is_configurable() -> None:
    caller = Caller(True, "bob", None, {"roles": [f"g{i}" for i in range(10)], "groups": ["x"]})
    charge = await ledger(Clock(0.0), groups_claim="roles", max_groups=3).charge(caller)
    assert list(charge.document["groups"]) == ["g0", "g1", "g2"]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_unreachable_redis_fails_closed_by_default() -> None:
    url = f"redis://:hunter2@127.0.0.1:{closed_port()}/0"
    usage = ledger(Clock(0.0), redis_url=url, timeout_ms=500)
    await usage.start()
    try:
        assert usage.gates_readiness
        assert usage.state is State.ERROR
        with pytest.raises(UsageUnavailable, match=r"usage counters .* are unavailable") as raised:
            await usage.charge(ANONYMOUS)
        assert "refusing requests" in usage.detail
        assert "hunter2" not in usage.detail and "hunter2" not in str(raised.value)
    finally:
        await usage.stop()


async def test_unreachable_redis_counts_locally_when_configured() -> None:
    usage = ledger(
        Clock(0.0), redis_url=f"redis://127.0.0.1:{closed_port()}/0", on_unavailable="local"
    )
    await usage.start()
    try:
        assert not usage.gates_readiness
        await usage.charge(ANONYMOUS)
        charge = await usage.charge(ANONYMOUS)
        assert charge.document["counters"] == "local"
        assert charge.document["caller"]["minute"]["requests"] == 1
        assert usage.state is State.WARN
        assert "counting in this process meanwhile" in usage.detail
    finally:
        await usage.stop()
