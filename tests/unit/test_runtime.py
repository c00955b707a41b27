"""The gateway's components start in order and, when one fails, those started are stopped."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway import runtime
from gateway.config import Settings
from gateway.decisionlog.writer import DecisionLogWriter
from gateway.lifecycle import State
from gateway.metrics import GatewayMetrics
from tests.support import ROOT


def settings(tmp_path: Path) -> Settings:
    return Settings.model_validate(
        {
            "auth": {"required": False},
            "policy": {"bundle": str(ROOT / "policies"), "opa": "managed"},
            "decision_log": {"path": str(tmp_path / "decisions.jsonl")},
        }
    )


async def test_a_failed_start_stops_what_was_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGORA_CALLER_KEY", "a test key")

    async def opa_will_not_start(self: object) -> None:
        raise RuntimeError("opa cannot start")

    monkeypatch.setattr(runtime.ManagedOpa, "start", opa_will_not_start)
    config = settings(tmp_path)
    with pytest.raises(RuntimeError, match="opa cannot start"):
        async with runtime.running(config, GatewayMetrics()):
            pytest.fail("the gateway must not run without OPA")
    # The decision log was started and is stopped again: its lock is free.
    writer = DecisionLogWriter(config.decision_log)
    await writer.start()
    await writer.stop()
    assert writer.state is State.STOPPED


async def test_workers_report_their_states_to_the_metric(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGORA_CALLER_KEY", "a test key")

    async def no_process(self: object) -> None:
        return None

    monkeypatch.setattr(runtime.ManagedOpa, "start", no_process)
    monkeypatch.setattr(runtime.ManagedOpa, "stop", no_process)
    metrics = GatewayMetrics()
    async with runtime.running(settings(tmp_path), metrics) as gateway:
        assert [worker.name for worker in gateway.workers] == [
            "decision_log",
            "usage",
            "opa",
            "community",
        ]
        sample = metrics.registry.get_sample_value
        assert sample("agora_component_state", {"component": "usage", "state": "ok"}) == 1
        assert sample("agora_component_state", {"component": "decision_log", "state": "ok"}) == 1
        assert sample("agora_component_state", {"component": "decision_log", "state": "error"}) == 0
        assert gateway.store.active is not None  # the local bundle, through activate()
