"""How the pages write numbers: one convention everywhere (Jinja filters and the chart)."""

from __future__ import annotations


def thousands(number: int) -> str:
    """1234567 -> "1,234,567" (the separator every count on the pages uses)."""
    return f"{int(number):,}"


def percent_of(part: int, whole: int) -> str:
    """part / whole as "97.2%", rounded down so that "100%" means all; "" when whole is 0."""
    if whole <= 0:
        return ""
    tenths = min(part, whole) * 1000 // whole  # integer arithmetic: no 99.96 shown as 100
    return f"{tenths // 10}%" if tenths % 10 == 0 else f"{tenths // 10}.{tenths % 10}%"


def duration(seconds: float) -> str:
    """12.5 -> "12.5 s", 150 -> "2.5 min", 5400 -> "1.5 h", 129600 -> "1.5 d"."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}".removesuffix(".0") + f" {unit}"
    return f"{seconds:.1f}".removesuffix(".0") + " s"
