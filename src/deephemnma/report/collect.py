"""A project folder → a :class:`~deephemnma.report.model.Report`: every stage's section in
pipeline order, whether it ran or not, plus any other step folder that has a ``step.json``."""

from __future__ import annotations

import datetime
import os
from pathlib import Path

from deephemnma.errors import InputError
from deephemnma.report import results, stages
from deephemnma.report.files import relative, step_record
from deephemnma.report.format import duration
from deephemnma.report.model import Report, Section, Table
from deephemnma.report.sections import ReportOptions

STAGES = (
    ("nma", "Normal modes", stages.nma_section),
    ("preprocess", "Preprocessing", stages.preprocess_section),
    ("stage1", "Stage 1: HEMNMA alignment", stages.stage1_section),
    ("filter", "Outlier filter", stages.filter_section),
    ("train", "Stage 2: network training", stages.train_section),
    ("predict", "Stage 2: prediction", stages.predict_section),
    ("evaluate", "Accuracy against ground truth", results.evaluate_section),
    ("analyze", "Stage 3: conformational space", results.analyze_section),
    ("reconstruct", "Reconstructions", results.reconstruct_section),
)
"""(folder name, title, section function) of each stage, in pipeline order."""


def collect_report(project: str | os.PathLike, options: ReportOptions = ReportOptions()) -> Report:
    """Read every stage folder of ``project`` into a report.

    A stage that fails to summarize (a file in an unexpected shape) becomes a section with a
    note; nothing here raises except for a project folder that does not exist.
    """
    from deephemnma import __version__

    project = Path(project)
    if not project.exists():
        raise InputError("project folder not found", path=project)
    if not project.is_dir():
        raise InputError("not a folder", path=project, expected="a project folder")
    sections = []
    for folder, title, function in STAGES:
        try:
            section = function(project, options)
        except Exception as exc:  # noqa: BLE001 - one bad stage must not sink the report
            section = Section(key=folder, title=title, folder=folder, ran=True)
            section.notes.append(f"could not summarize {folder}/: {type(exc).__name__}: {exc}")
        sections.append(section)
    other = other_steps(project)
    if other is not None:
        sections.append(other)
    report = Report(
        project=str(project.resolve()),
        generated=datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z").strip(),
        version=__version__,
        sections=sections,
    )
    if not report.ran:
        known = ", ".join(f"{f}/" for f, _, _ in STAGES)
        report.notes.append(
            f"Nothing has run in this project yet: none of {known} holds any output."
        )
    return report


def other_steps(project: Path) -> Section | None:
    """Folders with a ``step.json`` that are not one of :data:`STAGES` nor ``report/`` (this
    step's own folder in ``deephemnma run``): timings only."""
    known = {folder for folder, _, _ in STAGES} | {"report"}
    rows = []
    section = Section(key="other", title="Other steps", folder=".", ran=True)
    for folder in sorted(p for p in project.iterdir() if p.is_dir()):
        if folder.name in known or not (folder / "step.json").is_file():
            continue
        seconds, finished = step_record(folder, section.notes, project)
        rows.append((relative(folder, project) + "/", duration(seconds), finished or "–"))
    if not rows:
        return None
    section.blocks.append(
        Table(
            header=("step folder", "time", "finished"),
            rows=tuple(rows),
            caption="Other steps of the project (from their step.json).",
        )
    )
    section.headline = f"{len(rows)} step(s)"
    return section
