"""The page's routes are there only when switched on; its charts escape what they show."""

from __future__ import annotations

from starlette.routing import Route

from gateway.app import create_app
from gateway.community.charts import bar_chart
from gateway.community.page import short
from gateway.config import Settings


def paths(enabled: bool) -> set[str]:
    settings = Settings.model_validate(
        {"auth": {"required": False}, "community": {"enabled": enabled}}
    )
    public = create_app(settings).public
    return {route.path for route in public.routes if isinstance(route, Route)}


def test_the_page_and_its_json_are_switched_by_config() -> None:
    added = {
        "/community", "/community/diff", "/community/dry-run", "/transparency/policy",
        "/transparency/versions", "/transparency/proposals", "/transparency/diff",
        "/transparency/decisions", "/transparency/shadow", "/transparency/dry-run",
    }  # fmt: skip
    assert added <= paths(True)
    assert not added & paths(False)
    assert "/transparency" in paths(False)


def test_a_chart_escapes_labels_and_scales_to_the_largest_bar() -> None:
    svg = bar_chart("t", [("<b>", [("allowed", 2), ("denied", 2)]), ("g", [("denied", 1)])])
    assert "<b>" not in svg and "&lt;b&gt;" in svg
    assert 'role="img"' in svg and "aria-label=" in svg
    widths = [float(part.split('"')[0]) for part in svg.split('width="')[2:]]
    assert widths[0] == widths[1] == 2 * widths[2]


def test_long_proposal_ids_are_shortened() -> None:
    assert short("42") == "42"
    assert short("1" * 78) == "1" * 10 + "…"
