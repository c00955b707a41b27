"""The side-by-side benchmark still runs end to end: a smoke pass, never a timing assertion."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT, tool_env


def test_side_by_side_smoke_writes_a_table(tmp_path: Path, opa_binary: str) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# Benchmarks\n")
    results = tmp_path / "results"
    script = ROOT / "bench" / "side_by_side.py"
    args = ["--smoke", "--results", str(results), "--readme", str(readme)]
    run = subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        env=tool_env(),
        cwd=ROOT,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    text = readme.read_text()
    assert text.startswith("# Benchmarks\n")
    assert "side-by-side:begin" in text and "side-by-side:end" in text
    for target in ("direct", "bare", "agora"):
        assert f"| {target} | " in text
    for phase in ("auth", "request policy", "upstream", "response policy", "total"):
        assert f"| {phase} | " in text  # Agora's own timings, from its decision log
    (raw_file,) = results.glob("side-by-side-smoke-*.json")
    raw = json.loads(raw_file.read_text())
    assert {cell["target"] for cell in raw["cells"]} == {"direct", "bare", "agora"}
