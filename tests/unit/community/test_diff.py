"""The bundle diff: every file by path, added, removed, changed or unchanged, as unified diffs."""

from __future__ import annotations

from gateway.community.diff import diff_bundles


def test_each_file_is_reported_with_its_change() -> None:
    old = {"a.rego": b"package a\nallow := true\n", "gone.json": b"{}\n", "same": b"x\n"}
    new = {"a.rego": b"package a\nallow := false\n", "new.json": b"[]\n", "same": b"x\n"}
    diffs = {d.path: d for d in diff_bundles(old, new, "v1", "v2")}
    assert {p: d.change for p, d in diffs.items()} == {
        "a.rego": "changed", "gone.json": "removed", "new.json": "added", "same": "unchanged",
    }  # fmt: skip
    changed = diffs["a.rego"]
    assert changed.lines[:2] == ("--- v1/a.rego", "+++ v2/a.rego")
    assert "-allow := true" in changed.lines and "+allow := false" in changed.lines
    assert (changed.added, changed.removed) == (1, 1)
    assert diffs["new.json"].lines[0] == "--- /dev/null" and diffs["new.json"].added == 1
    assert diffs["gone.json"].lines[1] == "+++ /dev/null" and diffs["gone.json"].removed == 1
    assert diffs["same"].lines == ()


def test_files_come_sorted_by_path_and_binary_files_have_no_lines() -> None:
    diffs = diff_bundles({"b": b"\xff\xfe"}, {"b": b"\xff\xff", "a": b"x"}, "v1", "v2")
    assert [d.path for d in diffs] == ["a", "b"]
    assert diffs[1].change == "changed" and diffs[1].binary and diffs[1].lines == ()


def test_identical_bundles_differ_in_nothing() -> None:
    files = {"x.rego": b"package x\n"}
    assert [d.change for d in diff_bundles(files, dict(files), "a", "b")] == ["unchanged"]
