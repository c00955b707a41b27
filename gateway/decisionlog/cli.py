"""``agora log verify`` and ``agora log stats``: what an auditor runs on the log files."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gateway.decisionlog.errors import DecisionLogError
from gateway.decisionlog.figures import Figures, FigureTally
from gateway.decisionlog.files import PATHS_HELP, expand
from gateway.decisionlog.tally import Figure, LogStats
from gateway.decisionlog.verify import ChainBroken, stats, verify
from gateway.transparency import cli as transparency_cli

_PARTIAL_HELP = (
    "the files are a later part of the chain (older files archived): "
    "accept a first record that is not seq 1"
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``log`` command group; each subcommand sets ``func(args) -> exit status``."""
    log = subparsers.add_parser(
        "log",
        help="verify, count and prove the decision log; keys and witnesses",
        description="Check the hash chain of decision log files, recount them, prove "
        "records and checkpoints from them; make log keys; witness a gateway's log.",
    )
    commands = log.add_subparsers(dest="log_command", required=True, metavar="COMMAND")

    check = commands.add_parser(
        "verify",
        help="check every hash and link; print the count and head hash",
        description="Check every record's hash and every link, across rotated files. "
        "Exit 0 and print the record count and head hash, or exit 1 naming the first "
        "bad record (file:line, seq, reason) and whether it is a write cut by a crash "
        "(an unterminated last line) or an alteration.",
    )
    check.add_argument("paths", nargs="+", type=Path, metavar="PATH", help=PATHS_HELP)
    check.add_argument("--partial", action="store_true", help=_PARTIAL_HELP)
    transparency_cli.add_checkpoint_options(check)
    check.set_defaults(func=run_verify)

    count = commands.add_parser(
        "stats",
        help="count decisions per policy version and outcome (verifies first)",
        description="Recount decisions per policy version and outcome (allowed, denied, "
        "failed_closed), and how allowed requests ended (forwarded_ok, upstream_failed, "
        "incomplete), from files whose chain verifies; exit 1 if it does not.",
    )
    count.add_argument("paths", nargs="+", type=Path, metavar="PATH", help=PATHS_HELP)
    count.add_argument("--partial", action="store_true", help=_PARTIAL_HELP)
    count.add_argument("--json", action="store_true", help="print the counts as JSON")
    count.add_argument(
        "--figures",
        action="store_true",
        help="print the community page's figures instead: decisions per version by the hour, "
        "the top deny reasons, and deny rates per group (the records' group member)",
    )
    count.set_defaults(func=run_stats)
    transparency_cli.register(commands)


def run_verify(args: argparse.Namespace) -> int:
    """``agora log verify``: 0 when the chain verifies, 1 when it does not, 2 on bad input."""
    try:
        result = verify(expand(args.paths), partial=args.partial)
    except (DecisionLogError, OSError) as exc:
        print(f"agora log verify: {exc}", file=sys.stderr)
        return 2
    files = f"{len(result.files)} file{'s' if len(result.files) != 1 else ''}"
    if result.first_bad is not None:
        print(f"FAILED: {result.first_bad}")
        print(f"this is {result.first_bad.diagnosis}")
        print(f"verified before it: {result.count} records, head {result.head or 'none'}")
        return 1
    print(f"OK: {result.count} records in {files}")
    print(f"head: {result.head or 'none'}")
    status = 0
    if args.checkpoint is not None:
        status = transparency_cli.check_checkpoint(args, result)
    if args.chain is not None and status == 0:
        status = transparency_cli.check_anchored(args, result)
    return status


def run_stats(args: argparse.Namespace) -> int:
    """``agora log stats``: 0 with the counts, 1 when the chain does not verify, 2 on bad input."""
    figures = FigureTally()
    try:
        counts = stats(expand(args.paths), partial=args.partial, also=figures.add_record)
    except ChainBroken as exc:
        print(f"FAILED: {exc.bad}")
        print(f"this is {exc.bad.diagnosis}")
        return 1
    except (DecisionLogError, OSError) as exc:
        print(f"agora log stats: {exc}", file=sys.stderr)
        return 2
    if args.figures:
        shown = figures.snapshot()
        print(json.dumps(shown, indent=2) if args.json else _figures_text(shown))
    else:
        print(json.dumps(counts, indent=2) if args.json else _table(counts))
    return 0


_COLUMNS: tuple[Figure, ...] = (
    "allowed", "denied", "failed_closed", "total", "forwarded_ok", "upstream_failed", "incomplete",
    "answers_allowed", "answers_denied", "answers_failed_closed",
)  # fmt: skip


def _table(counts: LogStats) -> str:
    header = ["version", *_COLUMNS, "digest"]
    rows = [
        [version, *(str(entry[c]) for c in _COLUMNS), " ".join(entry["digests"])]
        for version, entry in counts["by_version"].items()
    ]
    totals = counts["totals"]
    rows.append(["all", *(str(totals[c]) for c in _COLUMNS), ""])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
             for row in [header, *rows]]  # fmt: skip
    lines.append(f"head: {counts['head'] or 'none'} ({counts['count']} records)")
    return "\n".join(lines)


def _figures_text(figures: Figures) -> str:
    lines = [f"decisions: {figures['decisions']}", "", "by hour (UTC) and version:"]
    for hour in figures["by_hour"]:
        for version, c in hour["by_version"].items():
            lines.append(
                f"  {hour['hour']}  v{version}: allowed {c['allowed']}, denied {c['denied']}, "
                f"failed_closed {c['failed_closed']}"
            )
    lines += ["", "top deny reasons:"]
    lines += [f"  {r['count']:>8}  {r['reason']}" for r in figures["deny_reasons"]]
    lines += ["", "by group:"]
    for group, c in figures["by_group"].items():
        lines.append(
            f"  {group}: allowed {c['allowed']}, denied {c['denied']}, "
            f"failed_closed {c['failed_closed']}, deny rate {c['deny_rate']:.2%}"
        )
    return "\n".join(lines)
