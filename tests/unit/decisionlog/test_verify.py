"""Verifying and recounting decision log files, and the ``agora log`` commands."""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any

import pytest

from gateway.decisionlog import ChainBroken, DecisionEntry, Tally, build_record, seal, stats, verify
from gateway.decisionlog.cli import register
from tests.unit.decisionlog.samples import (
    decision,
    legacy_fields,
    outcome_of,
    refusal,
    response_of,
)


def chain(decisions: list[DecisionEntry | dict[str, object]]) -> list[bytes]:
    """Log lines for these decisions (or prepared record fields), chained from the first record."""
    lines, prev = [], None
    for seq, d in enumerate(decisions, 1):
        fields = d if isinstance(d, dict) else build_record(d, caller_key=b"k", include_body=False)
        prev, line = seal(fields, seq, prev)
        lines.append(line)
    return lines


def write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(lines))
    return path


@pytest.fixture
def log(tmp_path: Path) -> tuple[Path, list[bytes]]:
    lines = chain([decision(i) for i in range(10)])
    return write(tmp_path / "decisions.jsonl", lines), lines


def test_a_valid_log_verifies(log: tuple[Path, list[bytes]]) -> None:
    path, lines = log
    result = verify([path])
    assert result.ok
    assert result.count == 10
    assert result.head == json.loads(lines[-1])["hash"]


def test_one_flipped_byte_is_named(log: tuple[Path, list[bytes]]) -> None:
    path, lines = log
    lines[4] = lines[4].replace(b"d-000004", b"d-000005")
    result = verify([write(path, lines)])
    assert result.first_bad is not None
    assert (result.first_bad.line, result.first_bad.seq) == (5, 5)
    assert result.first_bad.reason == "hash mismatch"
    assert result.count == 4
    assert result.head == json.loads(lines[3])["hash"]


def test_any_flipped_byte_is_caught(log: tuple[Path, list[bytes]]) -> None:
    path, lines = log
    original = b"".join(lines)
    rng = random.Random(3)
    for _ in range(50):
        data = bytearray(original)
        offset = rng.randrange(len(data))
        data[offset] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(data))
        result = verify([path])
        assert not result.ok, offset
        line = original.count(b"\n", 0, offset) + 1
        assert result.first_bad is not None
        assert result.first_bad.line in (line, line + 1)  # a flipped newline joins two lines


def test_a_deleted_line_is_named(log: tuple[Path, list[bytes]]) -> None:
    path, lines = log
    del lines[6]
    result = verify([write(path, lines)])
    assert result.first_bad is not None
    assert (result.first_bad.line, result.first_bad.seq) == (7, 8)
    assert "seq gap: expected seq 7, found 8" in result.first_bad.reason


def test_two_swapped_lines_are_named(log: tuple[Path, list[bytes]]) -> None:
    path, lines = log
    lines[2], lines[3] = lines[3], lines[2]
    result = verify([write(path, lines)])
    assert result.first_bad is not None
    assert (result.first_bad.line, result.first_bad.seq) == (3, 4)


def test_renumbered_records_break_the_link(log: tuple[Path, list[bytes]]) -> None:
    path, lines = log
    # Record 3 removed and the rest re-sealed with new numbers: hashes hold, the link does not.
    records = [json.loads(line) for line in lines]
    resealed = lines[:2]
    for seq, record in enumerate(records[3:], 3):
        fields = {k: v for k, v in record.items() if k not in ("seq", "prev", "hash")}
        resealed.append(seal(fields, seq, record["prev"])[1])
    result = verify([write(path, resealed)])
    assert result.first_bad is not None
    assert (result.first_bad.line, result.first_bad.reason) == (
        3,
        "broken link: prev is not the hash of the record before",
    )


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda line: line[:-5] + b"\n", "bad JSON"),
        (lambda line: b"\n", "bad JSON"),
        (lambda line: json.dumps(json.loads(line)).encode() + b"\n", "canonical form"),
        (lambda line: line[:-1], "torn line"),
    ],
)
def test_damaged_lines_are_named(log: tuple[Path, list[bytes]], damage: Any, reason: str) -> None:
    path, lines = log
    lines[-1] = damage(lines[-1])
    result = verify([write(path, lines)])
    assert result.first_bad is not None
    assert result.first_bad.line == 10
    assert reason in result.first_bad.reason
    # Only an unterminated last line can be a crash's torn write; the rest is alteration.
    assert result.first_bad.torn == (reason == "torn line")


def split(tmp_path: Path, lines: list[bytes], sizes: list[int]) -> list[Path]:
    files, start = [], 0
    for number, size in enumerate(sizes):
        seq = start + 1
        files.append(write(tmp_path / f"decisions.20250101T00000{number}Z-{seq:012d}.jsonl",
                           lines[start : start + size]))  # fmt: skip
        start += size
    return files


def test_files_in_any_order_verify_as_one_chain(tmp_path: Path) -> None:
    lines = chain([decision(i) for i in range(30)])
    files = split(tmp_path, lines, [7, 8, 9, 6])
    files.append(write(tmp_path / "decisions.jsonl", []))  # current file, just rotated
    for seed in range(5):
        random.Random(seed).shuffle(files)
        result = verify(files)
        assert result.ok, result.first_bad
        assert result.count == 30
        assert result.files[0].name.endswith("-000000000001.jsonl")


def test_a_missing_file_in_the_middle_is_a_gap(tmp_path: Path) -> None:
    lines = chain([decision(i) for i in range(30)])
    first, _, third = split(tmp_path, lines, [10, 10, 10])
    result = verify([third, first])
    assert result.first_bad is not None
    assert (result.first_bad.file, result.first_bad.line, result.first_bad.seq) == (third, 1, 21)


def test_a_missing_first_file_fails_unless_partial(tmp_path: Path) -> None:
    lines = chain([decision(i) for i in range(20)])
    _, second = split(tmp_path, lines, [10, 10])
    result = verify([second])
    assert result.first_bad is not None
    assert "earlier files missing" in result.first_bad.reason
    assert verify([second], partial=True).count == 10


def test_a_first_record_with_a_prev_fails(tmp_path: Path) -> None:
    fields = build_record(decision(1), caller_key=None, include_body=False)
    _, line = seal(fields, 1, "sha256:" + "00" * 32)
    result = verify([write(tmp_path / "decisions.jsonl", [line])])
    assert result.first_bad is not None
    assert "first record must have prev null" in result.first_bad.reason


def mixed_decisions() -> list[DecisionEntry | dict[str, object]]:
    """23 records: 14 decisions, 2 response records, 7 outcomes.

    Version 1: 3 allowed (2 answered, 1 without an outcome). Version 3: 7 allowed (4
    answered, 1 upstream failure, 2 without an outcome), 2 denied, and one record of the
    first writers (allowed, ended 200). No policy: 1 failed closed.
    """
    v1 = {"policy_version": 1, "policy_digest": "sha256:" + "01" * 32}
    first = [decision(i, **v1) for i in range(3)]
    later = [decision(i) for i in range(5, 12)]
    return [
        first[0],
        first[1],
        refusal(3),
        outcome_of(first[0]),
        first[2],
        outcome_of(first[2], status=404),  # the upstream answered, with an error of its own
        refusal(4),
        *later[:4],
        outcome_of(later[0], status=502, reasons=["upstream: connection refused"]),
        response_of(later[1]),
        outcome_of(later[1]),
        response_of(later[2], "denied"),
        *later[4:],
        outcome_of(later[2], reasons=["policy_denied"]),
        outcome_of(later[3]),
        outcome_of(later[4]),
        refusal(12, status=503, policy_version=None, policy_digest=None),
        legacy_fields(decision(13, status=200)),
    ]


def mixed_log(tmp_path: Path) -> Path:
    return write(tmp_path / "decisions.jsonl", chain(mixed_decisions()))


MIXED_TOTALS = {
    "allowed": 11, "denied": 2, "failed_closed": 1, "total": 14,
    "forwarded_ok": 7, "upstream_failed": 1, "incomplete": 3,
    "answers_allowed": 1, "answers_denied": 1, "answers_failed_closed": 0,
}  # fmt: skip
NO_ANSWERS = {"answers_allowed": 0, "answers_denied": 0, "answers_failed_closed": 0}


def test_stats_count_decisions_and_how_allowed_ones_ended(tmp_path: Path) -> None:
    counts = stats([mixed_log(tmp_path)])
    assert counts["count"] == 23  # records, response and outcome records included
    assert counts["totals"] == MIXED_TOTALS
    assert counts["by_version"] == {
        "1": {"allowed": 3, "denied": 0, "failed_closed": 0, "total": 3,
              "forwarded_ok": 2, "upstream_failed": 0, "incomplete": 1, **NO_ANSWERS,
              "digests": ["sha256:" + "01" * 32]},
        "3": {"allowed": 8, "denied": 2, "failed_closed": 0, "total": 10,
              "forwarded_ok": 5, "upstream_failed": 1, "incomplete": 2,
              "answers_allowed": 1, "answers_denied": 1, "answers_failed_closed": 0,
              "digests": ["sha256:" + "ab" * 32]},
        "none": {"allowed": 0, "denied": 0, "failed_closed": 1, "total": 1,
                 "forwarded_ok": 0, "upstream_failed": 0, "incomplete": 0, **NO_ANSWERS,
                 "digests": []},
    }  # fmt: skip
    assert list(counts["by_version"]) == ["1", "3", "none"]
    for entry in [counts["totals"], *counts["by_version"].values()]:
        assert entry["allowed"] == (
            entry["forwarded_ok"] + entry["upstream_failed"] + entry["incomplete"]
        )


def test_a_live_tally_of_the_same_records_gives_the_same_figures(tmp_path: Path) -> None:
    path = mixed_log(tmp_path)
    tally = Tally()
    for line in path.read_bytes().splitlines():
        tally.add_record(json.loads(line))
    assert tally.snapshot(23, None)["totals"] == MIXED_TOTALS
    on_disk = stats([path])
    assert Tally(on_disk).snapshot(on_disk["count"], on_disk["head"]) == on_disk


def test_stats_refuse_a_broken_chain(log: tuple[Path, list[bytes]]) -> None:
    path, lines = log
    del lines[3]
    with pytest.raises(ChainBroken) as caught:
        stats([write(path, lines)])
    assert caught.value.bad.line == 4


def run(*argv: str | Path) -> int:
    parser = argparse.ArgumentParser(prog="agora")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([str(a) for a in argv])
    status: int = args.func(args)
    return status


def test_cli_verify(log: tuple[Path, list[bytes]], capsys: pytest.CaptureFixture[str]) -> None:
    path, lines = log
    assert run("log", "verify", path.parent) == 0
    head = json.loads(lines[-1])["hash"]
    assert capsys.readouterr().out == f"OK: 10 records in 1 file\nhead: {head}\n"

    lines[4] = lines[4].replace(b"d-000004", b"d-000005")
    write(path, lines)
    assert run("log", "verify", path) == 1
    out = capsys.readouterr().out
    assert f"FAILED: {path}:5 (seq 5): hash mismatch" in out
    assert "the log was altered" in out


def test_cli_verify_tells_a_torn_write_from_an_altered_last_line(
    log: tuple[Path, list[bytes]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, lines = log
    write(path, [*lines[:-1], lines[-1][:40]])  # unterminated: a write cut by a crash
    assert run("log", "verify", path) == 1
    out = capsys.readouterr().out
    assert "torn line: no trailing newline" in out
    assert "cut short by a crash" in out
    write(path, [*lines[:-1], lines[-1].replace(b"d-000009", b"d-000010")])  # complete
    assert run("log", "verify", path) == 1
    out = capsys.readouterr().out
    assert "hash mismatch" in out
    assert "complete line" in out and "the log was altered" in out


def test_cli_verify_a_missing_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("log", "verify", tmp_path / "nope.jsonl") == 2
    assert "no such file" in capsys.readouterr().err


def test_cli_stats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = mixed_log(tmp_path)
    assert run("log", "stats", path, "--json") == 0
    assert json.loads(capsys.readouterr().out) == stats([path])
    assert run("log", "stats", path) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == [
        "version", "allowed", "denied", "failed_closed", "total",
        "forwarded_ok", "upstream_failed", "incomplete",
        "answers_allowed", "answers_denied", "answers_failed_closed", "digest",
    ]  # fmt: skip
    assert table[2].split() == [
        "3", "8", "2", "0", "10", "5", "1", "2", "1", "1", "0", "sha256:" + "ab" * 32
    ]  # fmt: skip
    assert table[4].split() == ["all", "11", "2", "1", "14", "7", "1", "3", "1", "1", "0"]


def test_cli_stats_of_a_broken_chain(
    log: tuple[Path, list[bytes]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, lines = log
    del lines[3]
    assert run("log", "stats", write(path, lines)) == 1
    assert f"FAILED: {path}:4 (seq 5): seq gap" in capsys.readouterr().out
