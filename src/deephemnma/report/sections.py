"""Building blocks of the stage sections: options, a section started from its folder (timing,
config), galleries of the images that exist."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from deephemnma.report.files import (
    config_text,
    read_dict,
    read_image,
    relative,
    step_record,
)
from deephemnma.report.model import Gallery, Section


@dataclass(frozen=True)
class ReportOptions:
    """mode_movies: flexible modes animated in the normal-mode section when the nma folder
    holds no GIF (0: none); movie_rms_A: their ± RMS displacement (Å); movie_frames and
    movie_size: frames per movie and pixels per view."""

    mode_movies: int = 3
    movie_rms_A: float = 3.0
    movie_frames: int = 12
    movie_size: int = 96


def start_section(project: Path, key: str, title: str, folder: Path) -> Section:
    """A section for ``folder``: ran when it holds any file; timing from ``step.json``;
    ``config.json`` as text."""
    section = Section(key=key, title=title, folder=relative(folder, project))
    if not folder.is_dir() or not any(folder.iterdir()):
        return section
    section.ran = True
    section.seconds, section.finished = step_record(folder, section.notes, project)
    section.config = config_text(folder, section.notes, project)
    return section


def gallery(section: Section, project: Path, items, wide=()) -> Gallery | None:
    """A gallery of the (path, caption) items that exist; None when none does."""
    images = []
    for path, caption in items:
        image = read_image(path, caption, section.notes, project, wide=path.name in wide)
        if image is not None:
            images.append(image)
    return Gallery(tuple(images)) if images else None


def setting(folder: Path, section: str, key: str):
    """``config.json[section][key]`` of a ``deephemnma run`` step folder, or None."""
    config = read_dict(folder / "config.json", [], folder)
    part = (config or {}).get(section)
    return part.get(key) if isinstance(part, dict) else None


def add(section: Section, block) -> None:
    if block is not None:
        section.blocks.append(block)


def summary_headline(section: Section) -> str:
    """The overview line of a section: its headline, or why it has none."""
    if not section.ran:
        return "not run"
    return section.headline or (f"{len(section.notes)} note(s)" if section.notes else "ran")
