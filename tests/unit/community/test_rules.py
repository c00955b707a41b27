"""A bundle as people read it: rule files with their reasons, data.json as tables."""

from __future__ import annotations

import json

from gateway.community.rules import data_tables, readable
from gateway.pinning.bundle import load_bundle
from tests.support import ROOT


def test_the_default_bundle_reads_as_rules_with_reasons_and_data_tables() -> None:
    view = readable(load_bundle(ROOT / "policies").files)
    paths = [f.path for f in view.rule_files]
    assert "agora/rules/models.rego" in paths
    assert not any("tests" in p for p in paths)
    models = next(f for f in view.rule_files if f.path == "agora/rules/models.rego")
    assert models.package == "agora.rules"
    assert models.summary.startswith("Which caller may use which model")
    assert "model %s is not offered by this policy" in models.reasons
    captions = [t.caption for t in view.tables]
    assert "agora/config: deny_patterns" in captions
    patterns = next(t for t in view.tables if t.caption == "agora/config: deny_patterns")
    assert patterns.columns == ("id", "description", "pattern")
    assert patterns.rows[0][0] == "prompt-injection"


def test_data_becomes_settings_mappings_and_lists_of_objects() -> None:
    data = json.loads(
        '{"max_choices": 8, "models": {"anonymous": ["a", "b"], "groups": {"x": ["g"]}},'
        ' "rules": [{"id": "r1", "pattern": "p"}, {"id": "r2"}], "empty": []}'
    )
    tables = {t.caption: t for t in data_tables(data, "cfg")}
    assert tables["cfg: settings"].rows == (("max_choices", "8"), ("empty", "(none)"))
    assert tables["cfg: models"].rows == (("anonymous", "a, b"), ("groups.x", "g"))
    assert tables["cfg: rules"].rows == (("r1", "p"), ("r2", "null"))


def test_reasons_are_sentences_from_sprintf_msg_and_contains() -> None:
    rego = (
        b'package p\n\n# What p is for.\nlabel(x) := sprintf("%s: %s", [x, x])\n'
        b'violation contains "streams are closed to everyone" if { true }\n'
        b'violation contains msg if { msg := sprintf("model %s is closed", [input.model]) }\n'
    )
    (rule_file,) = readable({"p/r.rego": rego, "p/r_test.rego": rego}).rule_files
    assert rule_file.summary == "What p is for."
    assert rule_file.reasons == ("model %s is closed", "streams are closed to everyone")
