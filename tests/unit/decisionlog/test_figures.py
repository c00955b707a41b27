"""The community page's figures: the same from the files (agora log stats) as counted live."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.decisionlog import DecisionEntry, build_record, stats
from gateway.decisionlog.counts import DecisionCounts
from gateway.decisionlog.figures import MAX_KEYS, OTHER, FigureTally
from gateway.decisionlog.record import group_of, parse_line, seal
from tests.unit.decisionlog.samples import decision, outcome_of, refusal
from tests.unit.decisionlog.test_verify import chain, run, write

HOUR = timedelta(hours=1)
START = datetime(2025, 1, 1, tzinfo=UTC)


def entries() -> list[DecisionEntry]:
    allowed = decision(0, group="north")
    return [
        allowed,
        outcome_of(allowed),
        refusal(1, group="north", reasons=["model x is not offered", "too many tokens"]),
        refusal(2, reasons=["model x is not offered"]),
        refusal(3, status=503, group="south"),
        decision(4, time=START + HOUR, policy_version=4, group="south"),
    ]


def test_figures_by_hour_reason_and_group() -> None:
    tally = FigureTally()
    for line in chain(entries()):
        tally.add_record(parse_line(line[:-1]))
    figures = tally.snapshot()
    assert figures["decisions"] == 5  # the outcome record is not a decision
    assert figures["by_hour"] == [
        {"hour": "2025-01-01T00", "by_version": {
            "3": {"allowed": 1, "denied": 2, "failed_closed": 1, "total": 4}}},
        {"hour": "2025-01-01T01", "by_version": {
            "4": {"allowed": 1, "denied": 0, "failed_closed": 0, "total": 1}}},
    ]  # fmt: skip
    assert figures["deny_reasons"] == [
        {"reason": "model x is not offered", "count": 2},
        {"reason": "too many tokens", "count": 1},
    ]
    assert figures["by_group"] == {
        "(none)": {"allowed": 0, "denied": 1, "failed_closed": 0, "total": 1, "deny_rate": 1.0},
        "north": {"allowed": 1, "denied": 1, "failed_closed": 0, "total": 2, "deny_rate": 0.5},
        "south": {"allowed": 1, "denied": 0, "failed_closed": 1, "total": 2, "deny_rate": 0.0},
    }


def test_live_counts_equal_the_files(tmp_path: Path) -> None:
    """What /transparency/decisions counts as records are queued is what the CLI recounts."""
    live = DecisionCounts()
    for entry in entries():
        live.add(entry)
    path = write(tmp_path / "decisions.jsonl", chain(entries()))
    from_files = FigureTally()
    stats([path], also=from_files.add_record)
    assert live.figures() == from_files.snapshot()


async def test_counts_loaded_at_start_include_the_figures(tmp_path: Path) -> None:
    path = write(tmp_path / "decisions.jsonl", chain(entries()))
    counts = DecisionCounts()
    await counts.load(path)
    assert counts.figures()["decisions"] == 5


def test_cli_prints_the_figures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "decisions.jsonl", chain(entries()))
    assert run("log", "stats", path, "--figures", "--json") == 0
    printed = json.loads(capsys.readouterr().out)
    expected = FigureTally()
    stats([path], also=expected.add_record)
    assert printed == expected.snapshot()
    assert run("log", "stats", path, "--figures") == 0
    text = capsys.readouterr().out
    assert "north: allowed 1, denied 1, failed_closed 0, deny rate 50.00%" in text
    assert "2  model x is not offered" in text


def test_groups_beyond_the_bound_count_as_other() -> None:
    tally = FigureTally()
    for i in range(MAX_KEYS + 5):
        tally.add(hour="2025-01-01T00", version=1, allow=True, status=None, reasons=[],
                  group=f"g{i}")  # fmt: skip
    groups = tally.snapshot()["by_group"]
    assert len(groups) == MAX_KEYS + 1 and groups[OTHER]["total"] == 5


def test_the_group_member_of_a_record() -> None:
    assert group_of({"region": "eu"}, "region") == "eu"
    assert group_of({"tier": ["b", "a", "b"]}, "tier") == "a,b"
    assert group_of({"region": 3}, "region") is None
    assert group_of({"region": "eu"}, None) is None
    assert group_of({"region": "x" * 100}, "region") == "x" * 64
    fields = build_record(decision(0, group="eu"), caller_key=b"k", include_body=False)
    assert fields["group"] == "eu"
    _, line = seal(fields, 1, None)
    assert parse_line(line[:-1])["group"] == "eu"
    outcome = build_record(outcome_of(decision(0, group="eu")), caller_key=b"k",
                           include_body=False)  # fmt: skip
    assert "group" not in outcome
