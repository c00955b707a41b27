"""The figures the soak tests wrote, as the table of docs/reliability.md.

    AGORA_RELIABILITY_FIGURES=/tmp/figures python -m pytest -q -m soak
    python -m tests.reliability.table /tmp/figures                 # print the table
    python -m tests.reliability.table /tmp/figures --update docs/reliability.md

With ``--update``, the table replaces what stands between the file's
``<!-- figures:begin -->`` and ``<!-- figures:end -->`` lines.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

BEGIN, END = "<!-- figures:begin -->", "<!-- figures:end -->"
ORDER = [
    "opa-killed", "opa-paused", "upstream-refusing", "upstream-reset", "upstream-hanging",
    "rpc-down", "rpc-slow", "rpc-older", "bundle-tampered", "log-disk-full", "log-read-only",
    "slow-loris", "idle-and-slow-readers", "burst-shed", "rolling-restart",
    "crash-record", "crash-batch", "crash-interval",
]  # fmt: skip
COLUMNS = (
    "fault", "load", "s", "sent", "answered", "forwarded", "logged",
    "let through unjudged", "lost", "recovery s", "answers", "shown by",
)  # fmt: skip
TEXT = {"fault", "load", "answers", "shown by"}


def row(figures: dict[str, Any]) -> list[str]:
    recovery = figures["recovery_s"]
    answers = ", ".join(f"{status}: {n}" for status, n in figures["answers"].items())
    return [
        f"**{figures['name']}**: {figures['fault']}",
        figures["load"],
        f"{figures['duration_s']:g}",
        *(str(figures[key]) for key in ("sent", "answered", "forwarded", "logged")),
        str(figures["unjudged"]),
        str(figures["lost"]),
        "n/a" if recovery is None else f"{recovery:g}",
        answers.replace("|", "/"),
        figures["seen"].replace("|", "/"),
    ]


def table(directory: Path) -> str:
    found = {p.stem: json.loads(p.read_text()) for p in directory.glob("*.json")}
    names = [n for n in ORDER if n in found] + sorted(set(found) - set(ORDER))
    lines = [
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---" if c in TEXT else "---:" for c in COLUMNS) + "|",
    ]
    lines += ["| " + " | ".join(row(found[name])) + " |" for name in names]
    return "\n".join(lines) + "\n"


def update(document: Path, text: str) -> None:
    content = document.read_text()
    head, begin, rest = content.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not begin or not end:
        raise SystemExit(f"{document} has no {BEGIN} ... {END} section")
    document.write_text(f"{head}{BEGIN}\n{text}{END}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--update", type=Path, metavar="MARKDOWN")
    args = parser.parse_args()
    text = table(args.directory)
    if args.update:
        update(args.update, text)
    else:
        print(text, end="")


if __name__ == "__main__":
    main()
