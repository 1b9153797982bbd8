"""``deephemnma report``: one self-contained HTML page summarizing a project folder.

- :func:`collect_report` reads each stage folder (:mod:`.stages`, :mod:`.results`) into
  plain data (:mod:`.model`), turning missing or malformed files into notes;
- :func:`render_html` / :func:`write_html` turn that into a page with embedded figures
  (:mod:`.html`);
- :func:`write_report` does both: ``write_report(project)`` → ``PROJECT/report.html``.
"""

from __future__ import annotations

import os
from pathlib import Path

from deephemnma.report.collect import STAGES, collect_report
from deephemnma.report.html import render_html, write_html
from deephemnma.report.model import Facts, Gallery, Image, Report, Section, Table, Text
from deephemnma.report.sections import ReportOptions

__all__ = [
    "STAGES",
    "Facts",
    "Gallery",
    "Image",
    "Report",
    "ReportOptions",
    "Section",
    "Table",
    "Text",
    "collect_report",
    "default_path",
    "render_html",
    "write_html",
    "write_report",
]


def default_path(project: str | os.PathLike) -> Path:
    """Where the report goes without ``-o``: ``PROJECT/report.html``."""
    return Path(project) / "report.html"


def write_report(
    project: str | os.PathLike,
    out: str | os.PathLike | None = None,
    options: ReportOptions = ReportOptions(),
) -> Path:
    """Collect ``project`` and write the page to ``out`` (default ``PROJECT/report.html``);
    returns the path written."""
    return write_html(collect_report(project, options), out or default_path(project))
