"""Numbers as report text: durations, counts, values with a fixed number of digits."""

from __future__ import annotations

import math

DASH = "–"


def duration(seconds: float | None) -> str:
    """``"42.1 s"``, ``"12 min 05 s"``, ``"3 h 07 min"``; a dash for None."""
    if seconds is None or not math.isfinite(seconds):
        return DASH
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def count(value) -> str:
    """An integer with thousands separators (``"12,345"``); a dash when not a number."""
    try:
        return f"{int(value):,}"
    except (TypeError, ValueError):
        return DASH


def number(value, digits: int = 2) -> str:
    """A float with ``digits`` decimals; a dash when missing or not finite."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return DASH
    if not math.isfinite(value):
        return DASH
    return f"{value:.{digits}f}"


def mean_std(stats: dict | None, digits: int = 2) -> str:
    """``"1.23 ± 0.45"`` from ``{"mean", "std"}`` (std optional); a dash when missing."""
    if not isinstance(stats, dict) or stats.get("mean") is None:
        return DASH
    text = number(stats["mean"], digits)
    if stats.get("std") is not None:
        text += f" ±\u00a0{number(stats['std'], digits)}"  # wraps before ±, never after
    return text


def percent(fraction, digits: int = 1) -> str:
    """``0.123`` → ``"12.3 %"``; a dash when missing."""
    try:
        return f"{100 * float(fraction):.{digits}f}\u00a0%"
    except (TypeError, ValueError):
        return DASH


def span(numbers) -> str:
    """Mode numbers as ranges: ``[7, 8, 9, 11]`` → ``"7–9, 11"``."""
    values = sorted({int(n) for n in numbers})
    parts, start = [], None
    for i, n in enumerate(values):
        if start is None:
            start = n
        if i + 1 == len(values) or values[i + 1] != n + 1:
            parts.append(str(start) if start == n else f"{start}–{n}")
            start = None
    return ", ".join(parts) if parts else DASH
