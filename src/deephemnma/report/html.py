"""A :class:`~deephemnma.report.model.Report` → one self-contained HTML page.

Figures are embedded as base64 ``data:`` URIs, the style sheet is inline, there is no
JavaScript and no external reference: the file works offline and can be mailed as is. All
text from the project is escaped (:func:`html.escape`).
"""

from __future__ import annotations

import base64
import os
from html import escape
from pathlib import Path
from string import Template

from deephemnma.report.format import duration
from deephemnma.report.model import Facts, Gallery, Image, Report, Section, Table, Text

CSS = """
:root { --ink:#1d2733; --muted:#5f6b7a; --line:#dde3ea; --accent:#2f6690; --paper:#fbf6e9;
        --note:#fff4d6; --note-line:#e0b44c; --bg:#f5f7fa; }
* { box-sizing: border-box; }
html { scroll-behavior: smooth; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue",
       Arial, sans-serif; color: var(--ink); background: var(--bg); }
nav.toc { position: fixed; top: 0; left: 0; bottom: 0; width: 220px; overflow-y: auto;
          padding: 22px 18px; background: #1f3447; color: #dfe8f1; }
nav.toc .brand { font-weight: 700; font-size: 17px; letter-spacing: .02em; color: #fff; }
nav.toc .sub { font-size: 12px; color: #9fb3c6; margin-bottom: 18px; }
nav.toc ol { list-style: none; margin: 0; padding: 0; }
nav.toc li { margin: 2px 0; font-size: 14px; }
nav.toc li a { display: block; padding: 4px 8px; border-radius: 5px; color: #dfe8f1;
               text-decoration: none; }
nav.toc li a:hover { background: rgba(255,255,255,.08); }
nav.toc li.off { padding: 4px 8px; color: #6f8396; }
nav.toc li.off::after { content: " · not run"; font-size: 11px; }
nav.toc li.child a { padding-left: 22px; font-size: 13px; color: #b8c8d8; }
main { margin-left: 220px; padding: 24px 28px 60px; max-width: 1240px; }
header.top h1 { margin: 0 0 4px; font-size: 28px; }
header.top .meta { color: var(--muted); font-size: 13px; }
header.top .meta code { font-size: 12px; }
section.card { background: #fff; border: 1px solid var(--line); border-radius: 10px;
               padding: 18px 22px 22px; margin: 22px 0; box-shadow: 0 1px 2px rgba(0,0,0,.03); }
h2 { margin: 0 0 2px; font-size: 21px; }
h3 { margin: 24px 0 4px; font-size: 17px; border-top: 1px solid var(--line); padding-top: 16px; }
.where { color: var(--muted); font-size: 13px; margin: 0 0 12px; }
.where code { background: #eef2f6; padding: 1px 5px; border-radius: 4px; }
.pill { display: inline-block; font-size: 12px; padding: 1px 9px; border-radius: 10px;
        background: #e4eef7; color: var(--accent); margin-left: 6px; vertical-align: 2px; }
.pill.off { background: #eceff2; color: #8a96a3; }
.pill.warn { background: var(--note); color: #8a6413; }
dl.facts { display: grid; grid-template-columns: repeat(auto-fill, minmax(190px, 1fr));
           gap: 8px; margin: 10px 0 14px; }
dl.facts div { background: #f7f9fb; border: 1px solid #e9edf2; border-radius: 7px;
               padding: 6px 10px; }
dl.facts dt { font-size: 11.5px; color: var(--muted); text-transform: uppercase;
              letter-spacing: .03em; }
dl.facts dd { margin: 0; font-weight: 600; font-variant-numeric: tabular-nums;
              overflow-wrap: anywhere; }
.table-wrap { overflow-x: auto; margin: 12px 0 4px; }
table.data { border-collapse: collapse; font-size: 13px; font-variant-numeric: tabular-nums; }
table.data th, table.data td { padding: 5px 7px; border-bottom: 1px solid var(--line);
                               text-align: right; }
table.data th { background: #eef3f8; font-weight: 600; font-size: 12px; white-space: normal;
                vertical-align: bottom; min-width: 50px; }
table.data th:first-child, table.data td:first-child { text-align: left; }
table.data td:first-child { min-width: 130px; max-width: 250px; }
table.data tbody tr:nth-child(even) td { background: #fafbfd; }
table.data tr.paper td { background: var(--paper) !important; color: #6b5a2e; font-style: italic; }
table.data tr.first-paper td { border-top: 2px solid #d9c68f; }
table.overview { width: 100%; }
table.overview th, table.overview td { text-align: left; }
table.overview td:nth-child(4) { text-align: right; white-space: nowrap; }
table.overview td:last-child { white-space: normal; }
table.overview a { color: var(--accent); text-decoration: none; font-weight: 600; }
p.caption, figcaption { color: var(--muted); font-size: 13px; margin: 4px 0 12px; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(340px, 1fr));
           gap: 16px; margin: 12px 0; align-items: start; }
figure { margin: 0; background: #fff; border: 1px solid #e9edf2; border-radius: 8px;
         padding: 10px; }
figure.wide { grid-column: 1 / -1; }
figure img { display: block; max-width: 100%; max-height: 720px; width: auto; height: auto;
             margin: 0 auto; }
figure img.movie { width: 100%; max-width: 420px; image-rendering: auto; }
figcaption b { color: var(--ink); }
figcaption .src { display: block; font-size: 11.5px; color: #98a3ae; }
.note { background: var(--note); border-left: 4px solid var(--note-line); border-radius: 6px;
        padding: 7px 12px; margin: 8px 0; font-size: 13.5px; }
details { margin-top: 12px; font-size: 13px; }
details summary { cursor: pointer; color: var(--accent); }
details pre { background: #f4f6f8; border-radius: 6px; padding: 10px; max-height: 360px;
              overflow: auto; font-size: 12px; }
footer { color: var(--muted); font-size: 12px; margin-top: 30px; }
@media (max-width: 900px) { nav.toc { position: static; width: auto; }
                            main { margin-left: 0; padding: 18px; } }
@media print { nav.toc { display: none; } main { margin-left: 0; } }
"""

PAGE = Template(
    """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<style>$css</style>
</head>
<body>
<nav class="toc">
<div class="brand">DeepHEMNMA report</div>
<div class="sub">$project_name</div>
<ol>
$toc
</ol>
</nav>
<main>
<header class="top">
<h1>$title</h1>
<div class="meta">Project <code>$project</code> · generated $generated · deephemnma $version</div>
</header>
$body
<footer>Self-contained report written by <code>deephemnma report</code>: figures are embedded,
the page needs no network.</footer>
</main>
</body>
</html>
"""
)


class _Numbers:
    """Figure and table numbers across the page."""

    def __init__(self) -> None:
        self.figure = 0
        self.table = 0


def data_uri(image: Image) -> str:
    """``data:<mime>;base64,<data>``."""
    return f"data:{image.mime};base64,{base64.b64encode(image.data).decode('ascii')}"


def write_html(report: Report, path: str | os.PathLike) -> Path:
    """Render ``report`` and write it to ``path`` atomically (folders created)."""
    from deephemnma.io.atomic import atomic_write_text

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, render_html(report))


def render_html(report: Report) -> str:
    """The whole page as text."""
    numbers = _Numbers()
    body = [_overview(report)]
    index = 0
    for section in report.sections:
        if section.ran:
            index += 1
            body.append(_section(section, index, numbers))
    name = report.project.rstrip("/").rsplit("/", 1)[-1]
    return PAGE.substitute(
        title=escape(f"DeepHEMNMA report: {name}"),
        css=CSS,
        project_name=escape(name),
        project=escape(report.project),
        generated=escape(report.generated),
        version=escape(report.version),
        toc="\n".join(_toc(report)),
        body="\n".join(body),
    )


def _toc(report: Report) -> list[str]:
    items = ['<li><a href="#overview">Overview</a></li>']
    index = 0
    for section in report.sections:
        if not section.ran:
            items.append(f'<li class="off">{escape(section.title)}</li>')
            continue
        index += 1
        items.append(
            f'<li><a href="#{escape(section.key)}">{index}. {escape(section.title)}</a></li>'
        )
        for sub in section.subsections:
            items.append(
                f'<li class="child"><a href="#{escape(sub.key)}">{escape(sub.title)}</a></li>'
            )
    return items


def _overview(report: Report) -> str:
    from deephemnma.report.sections import summary_headline

    rows = []
    for section in report.sections:
        status = (
            '<span class="pill">done</span>'
            if section.ran and not section.notes
            else f'<span class="pill warn">{len(section.notes)} note(s)</span>'
            if section.ran
            else '<span class="pill off">not run</span>'
        )
        title = (
            f'<a href="#{escape(section.key)}">{escape(section.title)}</a>'
            if section.ran
            else escape(section.title)
        )
        rows.append(
            "<tr>"
            f"<td>{title}</td><td><code>{escape(section.folder)}/</code></td><td>{status}</td>"
            f"<td>{escape(duration(section.seconds) if section.ran else '')}</td>"
            f"<td>{escape(summary_headline(section))}</td></tr>"
        )
    total = sum(s.seconds or 0.0 for s in report.sections if s.ran)
    notes = "".join(f'<div class="note">{escape(n)}</div>' for n in report.notes)
    timed = [s for s in report.sections if s.ran and s.seconds is not None]
    total_text = (
        f'<p class="caption">Total recorded time of the {len(timed)} timed step(s): '
        f"{escape(duration(total))}.</p>"
        if timed
        else ""
    )
    return (
        '<section class="card" id="overview"><h2>Overview</h2>'
        f'<p class="where">{len(report.ran)} of {len(report.sections)} stages have outputs.</p>'
        f"{notes}"
        '<div class="table-wrap"><table class="data overview"><thead><tr><th>stage</th>'
        "<th>folder</th><th>status</th><th>time</th><th>result</th></tr></thead><tbody>"
        + "".join(rows)
        + f"</tbody></table></div>{total_text}</section>"
    )


def _section(section: Section, index: int, numbers: _Numbers) -> str:
    parts = [
        f'<section class="card" id="{escape(section.key)}">',
        f"<h2>{index}. {escape(section.title)}{_time_pill(section)}</h2>",
        _where(section),
    ]
    parts += _content(section, numbers)
    for sub in section.subsections:
        parts.append(f'<div id="{escape(sub.key)}">')
        parts.append(f"<h3>{escape(sub.title)}{_time_pill(sub)}</h3>")
        parts.append(_where(sub))
        parts += _content(sub, numbers)
        parts.append("</div>")
    parts.append("</section>")
    return "\n".join(parts)


def _time_pill(section: Section) -> str:
    if section.seconds is None:
        return ""
    return f'<span class="pill">{escape(duration(section.seconds))}</span>'


def _where(section: Section) -> str:
    text = f"<code>{escape(section.folder)}/</code>"
    if section.finished:
        text += f" · finished {escape(section.finished)}"
    return f'<p class="where">{text}</p>'


def _content(section: Section, numbers: _Numbers) -> list[str]:
    parts = []
    for block in section.blocks:
        if isinstance(block, Facts):
            parts.append(_facts(block))
        elif isinstance(block, Table):
            numbers.table += 1
            parts.append(_table(block, numbers.table))
        elif isinstance(block, Gallery):
            parts.append(_gallery(block, numbers))
        elif isinstance(block, Text):
            parts.append(f"<p>{escape(block.text)}</p>")
    parts += [f'<div class="note">{escape(note)}</div>' for note in section.notes]
    if section.config:
        parts.append(
            f"<details><summary>config.json</summary><pre>{escape(section.config)}</pre></details>"
        )
    return parts


def _facts(block: Facts) -> str:
    items = "".join(f"<div><dt>{escape(k)}</dt><dd>{escape(v)}</dd></div>" for k, v in block.items)
    return f'<dl class="facts">{items}</dl>'


def _table(block: Table, number: int) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in block.header)
    rows = []
    previous = ""
    for k, row in enumerate(block.rows):
        css = block.row_classes[k] if k < len(block.row_classes) else ""
        classes = css
        if css == "paper" and previous != "paper" and k > 0:
            classes += " first-paper"
        previous = css
        cells = "".join(f"<td>{escape(c)}</td>" for c in row)
        attribute = f' class="{escape(classes.strip())}"' if classes.strip() else ""
        rows.append(f"<tr{attribute}>{cells}</tr>")
    caption = (
        f'<p class="caption"><b>Table {number}.</b> {escape(block.caption)}</p>'
        if block.caption
        else ""
    )
    return (
        f'<div class="table-wrap"><table class="data"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>{caption}"
    )


def _gallery(block: Gallery, numbers: _Numbers) -> str:
    figures = []
    for image in block.images:
        numbers.figure += 1
        css = ' class="wide"' if image.wide else ""
        img_class = ' class="movie"' if image.mime == "image/gif" else ""
        figures.append(
            f'<figure{css}><img{img_class} src="{data_uri(image)}" '
            f'alt="{escape(image.caption)}">'
            f"<figcaption><b>Figure {numbers.figure}.</b> {escape(image.caption)}"
            f'<span class="src">{escape(image.source)}</span></figcaption></figure>'
        )
    return f'<div class="gallery">{"".join(figures)}</div>'
