"""Shared option parsing for the CLI."""

from __future__ import annotations

from deephemnma.errors import InputError


def parse_mode_list(text: str, allow_none: bool = False) -> list[int]:
    """'7-9,11' → [7, 8, 9, 11] (1-based mode numbers); 'none' → [] where allowed."""
    from deephemnma.nma.modes import parse_mode_numbers

    if allow_none and text.strip().lower() == "none":
        return []
    return parse_mode_numbers(text)


def parse_float(text: str, name: str) -> float:
    """A float that may be 'inf' (e.g. --snr inf for noise-free images)."""
    try:
        return float(text)
    except ValueError:
        raise InputError(
            "not a number", field=name, expected="a number or inf", found=text
        ) from None


def check_device(name: str) -> str:
    """``cpu`` or ``cuda`` (InputError for another name, or CUDA where there is none)."""
    import torch

    if name not in ("cpu", "cuda"):
        raise InputError("unknown device", field="--device", expected="cpu or cuda", found=name)
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("CUDA is not available here", field="--device", found=name)
    return name
