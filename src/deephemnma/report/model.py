"""What a report holds, as plain data: sections of facts, tables, figures and notes.

The collector (:mod:`deephemnma.report.collect`) fills these from a project folder; the
renderer (:mod:`deephemnma.report.html`) turns them into HTML. Text is plain (the renderer
escapes it); images are the encoded bytes of a PNG or GIF.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Image:
    """An image to embed: ``data`` the encoded file (``mime`` image/png or image/gif),
    ``caption`` what it shows, ``source`` the file it came from (relative to the project) or
    a short description when the report drew it; ``wide`` spans the full text width."""

    data: bytes
    mime: str
    caption: str
    source: str
    wide: bool = False


@dataclass(frozen=True)
class Facts:
    """Label → value pairs (labels carry their units, e.g. ``"time (s)"``)."""

    items: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Table:
    """A table of text cells. ``row_classes`` (one per row, may be empty) marks rows for the
    renderer, e.g. ``"paper"`` for the paper's published values."""

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: str = ""
    row_classes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Gallery:
    """Figures shown side by side (wide ones take a whole row)."""

    images: tuple[Image, ...]


@dataclass(frozen=True)
class Text:
    """A paragraph of plain text."""

    text: str


Block = Facts | Table | Gallery | Text


@dataclass
class Section:
    """One stage of the project (or one part of a stage, as a subsection).

    key: anchor id; folder: the stage folder relative to the project; ran: whether it has
    outputs; headline: one line for the overview table; seconds / finished: timing of the
    step (``step.json`` or the stage's own record); config: the step's ``config.json`` as
    indented text.
    """

    key: str
    title: str
    folder: str
    ran: bool = False
    headline: str = ""
    blocks: list[Block] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float | None = None
    finished: str | None = None
    config: str | None = None
    subsections: list[Section] = field(default_factory=list)


@dataclass
class Report:
    """The whole report: the project folder, when and with which version it was made, the
    stage sections in pipeline order (also those that have not run), and general notes."""

    project: str
    generated: str
    version: str
    sections: list[Section]
    notes: list[str] = field(default_factory=list)

    @property
    def ran(self) -> list[Section]:
        return [s for s in self.sections if s.ran]
