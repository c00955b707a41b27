"""What was sent, answered, forwarded and logged in one run, counted from three independent sides.

- the load generator: what each caller sent and the answer it got;
- the recording upstream: what the model server received, by its own count;
- the decision log on disk, read after the gateway stopped: what was decided,
  by which policy version, with the judged body (``include_body``).

Each request is traced by the case id in its prompt. ``unjudged`` counts
requests the upstream received without an allow decision by the ratified
version on record, or answers that came back 2xx under another version;
``lost`` counts requests the upstream received whose decision is not in the log.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.reliability.load import Result, case_of, statuses

FIGURES_ENV = "AGORA_RELIABILITY_FIGURES"
"""A directory: each soak test writes its row of figures there as ``<name>.json``."""


@dataclass
class Figures:
    """One row of docs/reliability.md."""

    name: str
    fault: str
    load: str
    duration_s: float
    sent: int = 0
    answered: int = 0
    forwarded: int = 0
    logged: int = 0
    unjudged: int = 0
    lost: int = 0
    hung: int = 0
    recovery_s: float | None = None
    answers: dict[str, int] = field(default_factory=dict)
    seen: str = ""
    """What showed the fault while it lasted (readiness, metrics)."""

    def write(self) -> None:
        """Save the row where FIGURES_ENV says, if it says."""
        directory = os.environ.get(FIGURES_ENV)
        if not directory:
            return
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / f"{self.name}.json").write_text(json.dumps(asdict(self), indent=1))


def read_log(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Every complete record of the decision log files (a torn last line is left out)."""
    records: list[dict[str, Any]] = []
    for path in paths:
        for line in path.read_bytes().split(b"\n"):
            if line:
                try:
                    records.append(json.loads(line))
                except ValueError:
                    continue  # a torn line cut by a crash: not a record
    return records


def log_files(log_path: Path) -> list[Path]:
    """The current file and the rotated files beside it."""
    return sorted(log_path.parent.glob(f"*{log_path.suffix}"))


def account(
    figures: Figures,
    results: Sequence[Result],
    received_bodies: Iterable[bytes],
    records: Iterable[dict[str, Any]],
    ratified: str | Collection[str],
) -> Figures:
    """Fill in the counts of ``figures`` from the three sides.

    ``ratified``: the digest of the ratified version, or of each version ratified meanwhile.
    """
    digests = {ratified} if isinstance(ratified, str) else set(ratified)
    ours = {r.case for r in results}
    forwarded = {c for c in (case_of(b.decode("utf-8", "replace")) for b in received_bodies) if c}
    forwarded &= ours
    allowed: dict[str, dict[str, Any]] = {}
    for record in records:
        if record.get("allow") is True:
            case = case_of(json.dumps(record.get("body")))
            if case in ours:
                allowed[case] = record
    logged = forwarded & set(allowed)
    wrong_version = {
        c for c in logged if (allowed[c].get("policy") or {}).get("digest") not in digests
    }
    wrong_answers = {
        r.case
        for r in results
        if r.status is not None and 200 <= r.status < 300 and r.policy_digest not in digests
    }
    figures.sent = len(results)
    figures.answered = sum(r.answered for r in results)
    figures.hung = sum(r.error == "deadline" for r in results)
    figures.forwarded = len(forwarded)
    figures.logged = len(logged)
    figures.lost = len(forwarded - logged)
    figures.unjudged = len(wrong_version | wrong_answers)
    figures.answers = statuses(results)
    return figures


def recovery_after(results: Sequence[Result], cleared_at: float) -> float | None:
    """Seconds from ``cleared_at`` to the first request after which every answer is as expected."""
    later = sorted((r for r in results if r.sent_at >= cleared_at), key=lambda r: r.sent_at)
    first_good: Result | None = None
    for result in later:
        if not result.as_expected:
            first_good = None
        elif first_good is None:
            first_good = result
    if first_good is None:
        return None
    return round(first_good.sent_at + first_good.elapsed - cleared_at, 2)
