"""STAR syntax: the data blocks of a file, as ``starfile.read`` returns them, in bounded memory.

A loop block becomes a DataFrame (columns named as the labels without their underscore,
numbers parsed, the ``string_labels`` kept as text, ``nan``/``NaN``/``<NA>`` missing); a block
of ``_label value`` pairs becomes a dict. The values are the ones ``starfile`` 0.5 gives:
tests compare the two on our fixtures; checked once more on 2026-11-26, all 17 STAR files of
starfile's own test data (RELION tutorial model, optimiser and sampling files, pipelines,
quoting) and all 12 particle STARs of cryoDRGN's (RELION 3.0, 3.1 with six optics groups,
RELION 5, subtomograms, EMPIAR-10076) gave the same blocks, and the particle files read
back exactly after ``write_particles``.

Why not ``starfile.read``: it reads every line through ``linecache``, copies the loop's lines
into a list, joins them, swaps quotes and hands the text to pandas as a ``StringIO`` — about
seven times the file's size at its peak: 2.0 GB of memory for a 236 MB STAR of 1,000,000
particles (``bench/star_io.py``). Here the file is memory-mapped, the block boundaries are
found by one regular-expression scan, and each loop's bytes go to pandas' C parser once.
"""

from __future__ import annotations

import io
import mmap
import os
import re
import shlex
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

__all__ = ["read_star_blocks"]

_NAME = re.compile(rb"\S*")
_VALUE = re.compile(rb"\S")
_MISSING = ["nan", "NaN", "<NA>"]
# pandas 2's default float parser is off by an ulp at times; pandas 3's is exact (and warns
# that the option is going away).
_EXACT_FLOATS = {"float_precision": "round_trip"} if pd.__version__[0] == "2" else {}


def read_star_blocks(
    path: str | os.PathLike, string_labels: Iterable[str] = ()
) -> dict[str, pd.DataFrame | dict]:
    """The blocks of the STAR file ``path`` by name (``data_optics`` → ``"optics"``), in file
    order. Raises ``ValueError`` for a loop whose rows do not have one value per label."""
    strings = set(string_labels)
    with open(path, "rb") as handle:
        if os.fstat(handle.fileno()).st_size == 0:
            return {}
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            heads = _block_heads(data)
            blocks: dict[str, pd.DataFrame | dict] = {}
            for i, (_, body, name) in enumerate(heads):
                end = heads[i + 1][0] if i + 1 < len(heads) else len(data)
                blocks[name] = _block(data, body, end, strings, Path(path))
    return blocks


def _block_heads(data: mmap.mmap) -> list[tuple[int, int, str]]:
    """(start of the line, end of the name, name) of each ``data_NAME`` that begins a line
    (after spaces or tabs). Found with ``find``, which runs at memory speed: a multiline
    regular expression took 0.26 s to scan 200,000 particles (47 MB), half of the whole read."""
    heads = []
    at = data.find(b"data_")
    while at >= 0:
        line = data.rfind(b"\n", 0, at) + 1
        if not data[line:at].strip(b" \t"):
            name = _NAME.match(data, at + 5)
            heads.append((line, name.end(), name.group().decode()))
        at = data.find(b"data_", at + 5)
    return heads


def _lines(data: mmap.mmap, pos: int, end: int):
    """(stripped text, offset of the next line) of each line from ``pos`` up to ``end``."""
    while pos < end:
        stop = data.find(b"\n", pos, end)
        stop = end if stop < 0 else stop
        yield data[pos:stop].decode().strip(), stop + 1
        pos = stop + 1


def _block(data: mmap.mmap, pos: int, end: int, strings: set[str], path: Path):
    pairs: dict = {}
    newline = data.find(b"\n", pos, end)  # the rest of the data_ line is not read
    lines = _lines(data, end if newline < 0 else newline + 1, end)
    for text, after in lines:
        if text.startswith("loop_"):
            return _loop(data, lines, after, end, strings, path)
        if text.startswith("_"):
            label, value = shlex.split(text)
            pairs[label[1:]] = value if label[1:] in strings else _number(value)
    return pairs


def _loop(data, lines, pos: int, end: int, strings: set[str], path: Path) -> pd.DataFrame:
    labels: list[str] = []
    for text, after in lines:
        if text.startswith("_"):
            labels.append(text.split()[0][1:])
            pos = after
        elif text and not text.startswith("#"):
            break
        else:
            pos = after
    if _VALUE.search(data, pos, end) is None:
        return pd.DataFrame({label: pd.Series(dtype=float) for label in labels})
    if data.find(b"'", pos, end) >= 0:  # the C parser takes one quote character
        source = io.BytesIO(data[pos:end].replace(b"'", b'"'))
    elif end == len(data):  # the last block (the particles, as a rule): no copy
        data.seek(pos)
        source = data
    else:
        source = io.BytesIO(data[pos:end])
    index = {label: i for i, label in enumerate(labels)}
    frame = pd.read_csv(
        source,
        sep=r"\s+",
        header=None,
        comment="#",
        quotechar='"',
        dtype={index[s]: str for s in strings if s in index},
        keep_default_na=False,
        na_values=_MISSING,
        engine="c",
        **_EXACT_FLOATS,
    )
    if frame.shape[1] != len(labels):
        raise ValueError(
            f"{path}: loop with {len(labels)} labels has rows of {frame.shape[1]} values"
        )
    frame.columns = labels
    for label in labels:
        if label not in strings and frame[label].dtype.kind not in "iufb":
            try:
                numbers = pd.to_numeric(frame[label])
            except (ValueError, TypeError):
                continue
            if not numbers.isna().all():  # a column of "" stays text, as starfile keeps it
                frame[label] = numbers
    return frame


def _number(value: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value
