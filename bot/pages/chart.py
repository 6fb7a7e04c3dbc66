"""A small server-rendered bar chart of sent / delivered / not sent per day (no JS, no CDN).

The SVG has no viewBox: x positions are percentages of its width and y positions pixels, so
the bars stretch to any width while labels keep their CSS font size (a scaled viewBox shrank
them to 4 px on a phone). The legend is HTML beside it, in the page's own font.
"""

from __future__ import annotations

from datetime import date, timedelta

from markupsafe import Markup, escape

from bot.pages.format import thousands
from bot.stats_view import DayRow

# Okabe-Ito colours: told apart with the common colour-vision deficiencies, and each at least
# 3:1 against the white card (WCAG 1.4.11 for graphics).
SERIES = (
    ("sent", "Sent", "#0072b2"),
    ("delivered", "Delivered", "#009e73"),
    ("not_sent", "Not sent", "#d55e00"),
)
HEIGHT, TOP, BOTTOM = 180, 22, 24
MAX_LABELS = 8  # date labels that fit under the bars on a phone


def bar_chart(rows: list[DayRow], first: date, last: date) -> Markup:
    """Every day from first to last, zeros included, as grouped bars with a legend."""
    by_date = {row.date: row for row in rows}
    days = [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]
    values = [
        {name: (getattr(by_date[d], name) if d in by_date else 0) for name, _, _ in SERIES}
        for d in days
    ]
    peak = max([v for day in values for v in day.values()] + [1])
    title = f"Sent, delivered and not sent per day, {days[0]} to {days[-1]}"
    parts = [
        f'<figure class="chart">{_legend()}<svg xmlns="http://www.w3.org/2000/svg" width="100%" '
        f'height="{HEIGHT}" role="img" aria-labelledby="chart-title"><title id="chart-title">'
        f"{escape(title)}</title>",
        _axis(peak),
    ]
    step = -(-len(days) // MAX_LABELS)
    for i, (day, counts) in enumerate(zip(days, values, strict=True)):
        parts.append(_day_bars(i, len(days), day, counts, peak, label=i % step == 0))
    parts.append("</svg></figure>")
    return Markup("".join(parts))


def _legend() -> str:
    items = "".join(
        f'<li><svg class="swatch" width="14" height="14" aria-hidden="true"><rect width="14" '
        f'height="14" rx="2" fill="{color}"/></svg>{escape(label)}</li>'
        for _, label, color in SERIES
    )
    return f'<ul class="legend" aria-label="Legend">{items}</ul>'


def _axis(peak: int) -> str:
    """The peak and zero lines, each labelled with its count."""
    base = HEIGHT - BOTTOM
    return (
        f'<text x="0" y="{TOP - 6}" class="axis">{thousands(peak)}</text>'
        f'<line x1="0" y1="{TOP}" x2="100%" y2="{TOP}" class="grid"/>'
        f'<line x1="0" y1="{base}" x2="100%" y2="{base}" class="base"/>'
    )


def _day_bars(
    i: int, count: int, day: str, counts: dict[str, int], peak: int, *, label: bool
) -> str:
    slot = 100 / count  # percent of the width per day
    bar = slot / (len(SERIES) + 1)  # a day's bars side by side, half a bar of gap each side
    plot = HEIGHT - TOP - BOTTOM
    x0 = i * slot + bar / 2
    parts = []
    for j, (name, text, color) in enumerate(SERIES):
        # at least 2: a few among millions still shows
        height = max(plot * counts[name] / peak, 2 if counts[name] else 0)
        parts.append(
            f'<rect x="{x0 + j * bar:.2f}%" y="{TOP + plot - height:.1f}" '
            f'width="{bar * 0.85:.2f}%" height="{height:.1f}" fill="{color}">'
            f"<title>{escape(day)}: {thousands(counts[name])} {escape(text.lower())}</title></rect>"
        )
    if label:
        parts.append(
            f'<text x="{i * slot + slot / 2:.2f}%" y="{HEIGHT - 6}" text-anchor="middle" '
            f'class="axis">{escape(day[5:])}</text>'
        )
    return "".join(parts)
