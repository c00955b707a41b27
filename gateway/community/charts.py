"""Small horizontal bar charts as inline SVG, drawn on the server.

No chart library and no script: the page needs a handful of bars, which SVG
draws in a few elements, readable without JavaScript, with nothing fetched
from anywhere. Each chart has a text alternative (``aria-label``) and each bar
a ``<title>``; the page shows the same figures in a table beside it.
"""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

WIDTH = 640
LABEL_WIDTH = 200
BAR_HEIGHT = 18
GAP = 8
PALETTE = {
    "allowed": "#1b7a3a",
    "denied": "#b3261e",
    "failed_closed": "#6b5b00",
    "other": "#3558a8",
}
"""Colours with at least 4.5:1 contrast against white, told apart by the legend's text too."""

Bar = tuple[str, Sequence[tuple[str, int]]]
"""A labelled bar: its segments, ``(name, value)``, stacked left to right."""


def bar_chart(title: str, bars: Sequence[Bar]) -> Markup:
    """Stacked horizontal bars, one per label, scaled to the largest total."""
    largest = max((sum(v for _, v in segments) for _, segments in bars), default=0) or 1
    scale = (WIDTH - LABEL_WIDTH - 60) / largest
    height = len(bars) * (BAR_HEIGHT + GAP) + GAP
    summary = "; ".join(
        f"{label}: " + ", ".join(f"{name} {value}" for name, value in segments)
        for label, segments in bars
    )
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" '
        f'height="{height}" aria-label="{escape(title)}: {escape(summary)}">'
    ]
    for row, (label, segments) in enumerate(bars):
        y = GAP + row * (BAR_HEIGHT + GAP)
        parts.append(
            f'<text x="{LABEL_WIDTH - 6}" y="{y + BAR_HEIGHT - 4}" text-anchor="end">'
            f"{escape(_short(label))}</text>"
        )
        x = float(LABEL_WIDTH)
        for name, value in segments:
            if value <= 0:
                continue
            width = value * scale
            colour = PALETTE.get(name, PALETTE["other"])
            parts.append(
                f'<rect x="{x:.1f}" y="{y}" width="{width:.1f}" height="{BAR_HEIGHT}" '
                f'fill="{colour}"><title>{escape(label)}: {escape(name)} {value}</title></rect>'
            )
            x += width
        total = sum(v for _, v in segments)
        parts.append(f'<text x="{x + 4:.1f}" y="{y + BAR_HEIGHT - 4}">{total}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def _short(label: str, limit: int = 30) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "…"
