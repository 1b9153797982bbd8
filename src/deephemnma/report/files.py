"""Reading a stage's files without ever failing: a missing or malformed file gives None and a
note (plain text, naming the file) appended to the caller's list."""

from __future__ import annotations

import csv
import datetime
import json
import math
from pathlib import Path

from deephemnma.report.model import Image

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
GIF_MAGIC = (b"GIF87a", b"GIF89a")
MAX_IMAGE_BYTES = 20_000_000
"""Images above this size are not embedded (the report is one file; keep it openable)."""


def relative(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` when inside it, else as given (POSIX separators)."""
    for a, b in ((Path(path), Path(root)), (Path(path).resolve(), Path(root).resolve())):
        try:
            return a.relative_to(b).as_posix()
        except ValueError:
            continue
    return Path(path).as_posix()


def read_json(path: Path, notes: list[str], root: Path, required: bool = False):
    """The parsed JSON of ``path``; None (and a note, unless absent and not required) when
    absent or unreadable."""
    if not path.is_file():
        if required:
            notes.append(f"{relative(path, root)} is missing")
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        notes.append(f"{relative(path, root)} could not be read: {_reason(exc)}")
        return None


def read_dict(path: Path, notes: list[str], root: Path, required: bool = False) -> dict | None:
    """:func:`read_json` that also requires a JSON object at the top."""
    value = read_json(path, notes, root, required)
    if value is not None and not isinstance(value, dict):
        notes.append(
            f"{relative(path, root)}: expected a JSON object, found {type(value).__name__}"
        )
        return None
    return value


def read_csv_rows(path: Path, notes: list[str], root: Path) -> list[dict[str, str]] | None:
    """Rows of a CSV file with a header, as dicts of strings; None with a note on failure."""
    if not path.is_file():
        return None
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        notes.append(f"{relative(path, root)} could not be read: {_reason(exc)}")
        return None
    if not rows:
        notes.append(f"{relative(path, root)} has no rows")
        return None
    return rows


def image_mime(data: bytes) -> str | None:
    """image/png or image/gif from the file's signature; None for anything else."""
    if data.startswith(PNG_MAGIC):
        return "image/png"
    if data[:6] in GIF_MAGIC:
        return "image/gif"
    return None


def read_image(
    path: Path, caption: str, notes: list[str], root: Path, wide: bool = False
) -> Image | None:
    """An embeddable PNG/GIF; None when absent, and a note when not a PNG/GIF or too big."""
    if not path.is_file():
        return None
    try:
        size = path.stat().st_size
        if size > MAX_IMAGE_BYTES:
            notes.append(
                f"{relative(path, root)} not embedded: {size / 1e6:.0f} MB "
                f"(limit {MAX_IMAGE_BYTES / 1e6:.0f} MB)"
            )
            return None
        data = path.read_bytes()
    except OSError as exc:
        notes.append(f"{relative(path, root)} could not be read: {_reason(exc)}")
        return None
    mime = image_mime(data)
    if mime is None or not _decodes(data):
        notes.append(f"{relative(path, root)} is not a readable PNG or GIF image")
        return None
    return Image(data, mime, caption, relative(path, root), wide)


def _decodes(data: bytes) -> bool:
    import io

    from PIL import Image as PILImage

    try:
        with PILImage.open(io.BytesIO(data)) as image:
            image.verify()
    except Exception:  # noqa: BLE001 - any decoder error means "not embeddable"
        return False
    return True


def step_record(folder: Path, notes: list[str], root: Path) -> tuple[float | None, str | None]:
    """``(seconds, finished)`` from ``folder/step.json`` (written by ``deephemnma run``)."""
    record = read_dict(folder / "step.json", notes, root)
    if record is None:
        return None, None
    seconds = as_float(record.get("seconds"))
    finished = record.get("finished")
    if isinstance(finished, (int, float)) and not isinstance(finished, bool):
        try:
            finished = datetime.datetime.fromtimestamp(finished).astimezone()
            finished = finished.strftime("%Y-%m-%d %H:%M")
        except (OverflowError, OSError, ValueError):
            finished = None
    status = record.get("status")
    if status not in (None, "finished"):
        notes.append(
            f"{relative(folder / 'step.json', root)}: status '{status}' (still running, or "
            "interrupted: rerun 'deephemnma run' to finish it)"
        )
    return seconds, None if finished is None else str(finished)


def config_text(folder: Path, notes: list[str], root: Path, limit: int = 30_000) -> str | None:
    """``folder/config.json`` as indented text (cut at ``limit`` characters)."""
    record = read_json(folder / "config.json", notes, root)
    if record is None:
        return None
    text = json.dumps(record, indent=2, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit] + "\n… (cut)"


def count_star_rows(path: Path, notes: list[str], root: Path) -> int | None:
    """Rows of the particle table of a STAR file, counted line by line (no parsing).

    The table is the loop of ``data_particles`` (RELION 3.1), else of the last data block
    (RELION 3.0 single table)."""
    try:
        counts: dict[str, int] = {}
        block, in_loop, in_rows = "", False, False
        with path.open(encoding="utf-8", errors="replace") as handle:
            for raw in handle:
                line = raw.strip()
                if not line or line.startswith("#"):
                    continue
                if line.startswith("data_"):
                    block, in_loop, in_rows = line, False, False
                    counts[block] = 0
                elif line.startswith("loop_"):
                    in_loop, in_rows = True, False
                elif in_loop and line.startswith("_") and not in_rows:
                    continue
                elif in_loop:
                    in_rows = True
                    counts[block] = counts.get(block, 0) + 1
    except OSError as exc:
        notes.append(f"{relative(path, root)} could not be read: {_reason(exc)}")
        return None
    if not counts:
        notes.append(f"{relative(path, root)}: no data block found")
        return None
    return counts.get("data_particles", counts[list(counts)[-1]])


def as_float(value) -> float | None:
    """A finite float, or None."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _reason(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
