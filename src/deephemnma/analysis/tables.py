"""Particle tables for the analysis: amplitudes, scores, ground truth, combined spaces.

The combined space of the paper (§2.3, last paragraph; §3.2.5) joins particles whose
amplitudes were predicted by the network and particles aligned by Stage 1. Its table keeps
the columns every source has (in the first table's order), adds ``deephemnmaSource`` (the
source name of each row) and rewrites relative image paths so that the table can be written
to another folder and still point at the same stacks.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from deephemnma.errors import InputError
from deephemnma.io.star import (
    IMAGE_NAME,
    OPTICS_GROUP,
    OPTICS_GROUP_NAME,
    ParticleTable,
    amplitudes,
    relocated_image_names,
)

SCORE = "deephemnmaScore"
SOURCE = "deephemnmaSource"


def score_column(table: ParticleTable) -> np.ndarray:
    """``deephemnmaScore`` (Stage-1 alignment cost) of every row (N,) float32; NaN if absent."""
    if SCORE not in table.particles.columns:
        return np.full(len(table), np.nan, dtype=np.float32)
    return pd.to_numeric(table.particles[SCORE], errors="coerce").to_numpy(np.float32)


def common_amplitudes(
    tables: Sequence[ParticleTable], suffixes: Sequence[str]
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Mode numbers (M,) shared by every table and each table's amplitudes (N_i, M).

    InputError if the tables hold amplitudes of different modes.
    """
    numbers, values = [], []
    for table, suffix in zip(tables, suffixes, strict=True):
        m, v = amplitudes(table, suffix)
        numbers.append(m)
        values.append(v)
    for table, m in zip(tables[1:], numbers[1:], strict=True):
        if not np.array_equal(m, numbers[0]):
            raise InputError(
                "the tables hold amplitudes of different modes",
                path=table.path,
                field="deephemnmaAmplitudeNN",
                expected="modes " + ",".join(str(int(x)) for x in numbers[0]),
                found=",".join(str(int(x)) for x in m),
            )
    return numbers[0].astype(np.int32), values


def _optics_key(row: pd.Series) -> tuple:
    return tuple(
        (k, row[k]) for k in sorted(row.index) if k not in (OPTICS_GROUP, OPTICS_GROUP_NAME)
    )


def combine_tables(
    tables: Sequence[ParticleTable], names: Sequence[str], folder: str | os.PathLike
) -> ParticleTable:
    """One table of all rows of ``tables`` (in order), to be written in ``folder``.

    Optics groups with the same settings are merged, the others renumbered; particle columns
    are those every table has, plus ``deephemnmaSource`` (``names[i]`` for rows of table i).
    The result has ``path=None``: write it with ``write_particles(..., relocate_images=False)``
    into ``folder`` (its image paths are already relative to it).
    """
    folder = Path(folder)
    optics_rows: list[pd.Series] = []
    keys: list[tuple] = []
    parts = []
    shared = [
        c for c in tables[0].particles.columns if all(c in t.particles.columns for t in tables[1:])
    ]
    optics_columns = list(tables[0].optics.columns)
    for table in tables[1:]:
        if set(table.optics.columns) != set(optics_columns):
            raise InputError(
                "the optics tables have different columns; cannot combine",
                path=table.path,
                field="data_optics",
                expected=", ".join(optics_columns),
                found=", ".join(table.optics.columns),
            )
    for table, name in zip(tables, names, strict=True):
        renumber = {}
        for _, row in table.optics.iterrows():
            key = _optics_key(row[optics_columns])
            if key not in keys:
                keys.append(key)
                new = row[optics_columns].copy()
                new[OPTICS_GROUP] = len(keys)
                if OPTICS_GROUP_NAME in new.index:
                    new[OPTICS_GROUP_NAME] = f"opticsGroup{len(keys)}"
                optics_rows.append(new)
            renumber[row[OPTICS_GROUP]] = keys.index(key) + 1
        particles = table.particles[shared].copy()
        particles[OPTICS_GROUP] = table.particles[OPTICS_GROUP].map(renumber).astype(int)
        if IMAGE_NAME in particles.columns:
            particles[IMAGE_NAME] = relocated_image_names(
                particles[IMAGE_NAME], table.folder, folder
            )
        particles[SOURCE] = name
        parts.append(particles)
    optics = pd.DataFrame(optics_rows).reset_index(drop=True)
    optics[OPTICS_GROUP] = optics[OPTICS_GROUP].astype(int)
    particles = pd.concat(parts, ignore_index=True)
    return ParticleTable(optics=optics, particles=particles, path=None)


def truth_amplitudes(
    tables: Sequence[ParticleTable],
    truth: ParticleTable,
    mode_numbers: np.ndarray,
    suffix: str = "",
) -> tuple[np.ndarray, list[str]]:
    """Ground-truth amplitudes (N, M) float32 for the rows of ``tables`` (concatenated),
    matched to ``truth`` by rlnImageName (or by order, see :func:`deephemnma.evaluate.
    match_rows`); NaN where a row has no match. Returns the array and one note per table
    that could not be matched. InputError if no row matches at all or the truth lacks a mode.
    """
    from deephemnma.evaluate import match_rows

    true_modes, true_values = amplitudes(truth, suffix)
    missing = [int(m) for m in mode_numbers if int(m) not in set(true_modes.tolist())]
    if missing:
        raise InputError(
            "the truth lacks amplitudes of some modes",
            path=truth.path,
            field="deephemnmaAmplitudeNN" + suffix,
            expected="modes " + ",".join(str(int(m)) for m in mode_numbers),
            found="missing " + ",".join(map(str, missing)),
        )
    columns = [int(np.flatnonzero(true_modes == m)[0]) for m in mode_numbers]
    true_values = true_values[:, columns]
    out, notes = [], []
    for table in tables:
        block = np.full((len(table), len(mode_numbers)), np.nan, dtype=np.float32)
        try:
            rows, truth_rows, _ = match_rows(table, truth)
            block[rows] = true_values[truth_rows]
        except InputError as exc:
            notes.append(f"{table.path}: no ground truth ({exc.message})")
        out.append(block)
    values = np.concatenate(out)
    if np.isnan(values).all():
        raise InputError(
            "no particle matches a row of the truth table",
            path=truth.path,
            field=IMAGE_NAME,
            expected="the same images (rlnImageName) or the same number of rows",
        )
    return values, notes
