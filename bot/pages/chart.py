"""A small server-rendered SVG bar chart of sent / delivered / not sent per day (no JS, no CDN)."""
from __future__ import annotations

from datetime import date, timedelta

from markupsafe import Markup, escape

from bot.stats_view import DayRow

SERIES = (("sent", "Sent", "#0866ff"), ("delivered", "Delivered", "#1e7b34"), ("not_sent", "Not sent", "#e07b00"))
WIDTH, HEIGHT, TOP, BOTTOM, LEFT = 640, 190, 24, 28, 36


def bar_chart(rows: list[DayRow], first: date, last: date) -> Markup:
    """Every day from first to last, zeros included, as grouped bars with a legend."""
    by_date = {row.date: row for row in rows}
    days = [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]
    values = [{name: (getattr(by_date[d], name) if d in by_date else 0) for name, _, _ in SERIES} for d in days]
    peak = max([v for day in values for v in day.values()] + [1])
    slot = (WIDTH - LEFT) / max(1, len(days))
    bar = max(2.0, slot / (len(SERIES) + 1))
    plot = HEIGHT - TOP - BOTTOM
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" class="chart" role="img" '
             f'aria-labelledby="chart-title"><title id="chart-title">Sent, delivered and not sent per day, '
             f'{escape(days[0])} to {escape(days[-1])}</title>',
             f'<text x="0" y="{TOP + 4}" class="axis">{peak}</text><text x="0" y="{TOP + plot}" class="axis">0</text>',
             f'<line x1="{LEFT - 4}" y1="{TOP + plot}" x2="{WIDTH}" y2="{TOP + plot}" stroke="#dadde1"/>']
    for i, (day, counts) in enumerate(zip(days, values)):
        x0 = LEFT + i * slot + bar / 2
        for j, (name, label, color) in enumerate(SERIES):
            height = plot * counts[name] / peak
            parts.append(f'<rect x="{x0 + j * bar:.1f}" y="{TOP + plot - height:.1f}" width="{bar - 1:.1f}" '
                         f'height="{height:.1f}" fill="{color}"><title>{escape(day)}: {counts[name]} '
                         f'{escape(label.lower())}</title></rect>')
        parts.append(f'<text x="{x0 + bar * 1.5:.1f}" y="{HEIGHT - 8}" text-anchor="middle" class="axis">'
                     f'{escape(day[5:])}</text>')
    for j, (_, label, color) in enumerate(SERIES):
        parts.append(f'<rect x="{LEFT + j * 110}" y="2" width="10" height="10" fill="{color}"/>'
                     f'<text x="{LEFT + j * 110 + 14}" y="11" class="axis">{escape(label)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
