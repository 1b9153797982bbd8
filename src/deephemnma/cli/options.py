"""Shared option parsing for the CLI."""

from __future__ import annotations

from deephemnma.errors import InputError


def parse_mode_list(text: str, allow_none: bool = False) -> list[int]:
    """'7-9,11' → [7, 8, 9, 11] (1-based mode numbers); 'none' → [] where allowed."""
    if allow_none and text.strip().lower() == "none":
        return []
    numbers: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                numbers.extend(range(lo, hi + 1))
            else:
                numbers.append(int(part))
    except ValueError:
        raise InputError("cannot read mode list", field="--modes",
                         expected="numbers and ranges like 7-9,11", found=text) from None
    if not numbers or min(numbers) < 1:
        raise InputError("mode numbers start at 1", field="--modes",
                         expected="numbers and ranges like 7-9,11", found=text)
    return numbers


def parse_float(text: str, name: str) -> float:
    """A float that may be 'inf' (e.g. --snr inf for noise-free images)."""
    try:
        return float(text)
    except ValueError:
        raise InputError("not a number", field=name, expected="a number or inf",
                         found=text) from None
