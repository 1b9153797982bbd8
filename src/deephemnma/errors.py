"""One error type for bad user input, so the CLI can report it without a traceback."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class InputError(Exception):
    """Input that cannot be used as given.

    The message names where the problem is (file and field), what was expected and what
    was found, so a user can fix the input without reading code.
    """

    message: str
    path: str | Path | None = None
    field: str | None = None
    expected: str | None = None
    found: str | None = None

    def __post_init__(self) -> None:
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = []
        if self.path is not None:
            parts.append(f"{self.path}")
        if self.field is not None:
            parts.append(f"field '{self.field}'")
        where = ": ".join(parts)
        text = f"{where}: {self.message}" if where else self.message
        if self.expected is not None:
            text += f" (expected {self.expected}"
            text += f", found {self.found})" if self.found is not None else ")"
        elif self.found is not None:
            text += f" (found {self.found})"
        return text


def check_settings(settings, checks, what: str) -> None:
    """Raise :class:`InputError` for the first failed check of a settings object.

    checks: (ok, field name, what was expected) triples; the found value is read from the
    settings' attribute of that name.
    """
    for ok, name, expected in checks:
        if not ok:
            raise InputError(
                f"invalid {what} setting",
                field=name,
                expected=expected,
                found=str(getattr(settings, name)),
            )
