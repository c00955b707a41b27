"""The environment the gateway gives the OPA processes it starts."""

from __future__ import annotations

import pytest

from gateway.policy.opa import DECISION_OPA_GOGC, bare_environment, decision_environment


def test_the_decision_opa_gets_a_throughput_collector_and_no_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for knob in ("GOGC", "GOMEMLIMIT", "GOMAXPROCS"):
        monkeypatch.delenv(knob, raising=False)
    monkeypatch.setenv("AGORA_UPSTREAM_KEY", "sk-secret")
    env = decision_environment()
    assert env == {"PATH": bare_environment()["PATH"], "GOGC": DECISION_OPA_GOGC}


def test_go_runtime_settings_of_the_gateway_pass_through(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOGC", "100")
    monkeypatch.setenv("GOMEMLIMIT", "200MiB")
    monkeypatch.delenv("GOMAXPROCS", raising=False)
    env = decision_environment()
    assert env["GOGC"] == "100" and env["GOMEMLIMIT"] == "200MiB" and "GOMAXPROCS" not in env


def test_other_opa_processes_get_the_bare_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOGC", "100")
    assert set(bare_environment()) == {"PATH"}
