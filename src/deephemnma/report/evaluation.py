"""The paper's Tables 1–4 as report tables: our evaluation rows, then the published values.

Rows are result dicts as :func:`deephemnma.evaluate.summarize` writes them (and as
:data:`deephemnma.evaluate.PAPER_ROWS` holds the paper's): Tables 1 and 3 of the paper are
the parameter errors (amplitude MAE per mode, angular error, shift error), Tables 2 and 4 the
RMSD in Å of the reference displaced with one parameter type at a time.
"""

from __future__ import annotations

from collections.abc import Sequence

from deephemnma.report.format import DASH, count, mean_std, number, percent
from deephemnma.report.model import Table


def _mode_numbers(rows: Sequence[dict]) -> list[int]:
    found = set()
    for row in rows:
        amplitudes = row.get("amplitudes") or {}
        for entry in amplitudes.get("modes") or []:
            if isinstance(entry, dict) and "mode" in entry:
                found.add(int(entry["mode"]))
    return sorted(found)


def _error_cells(row: dict, modes: list[int]) -> tuple[str, ...]:
    amplitudes = row.get("amplitudes") or {}
    by_mode = {int(e["mode"]): e for e in amplitudes.get("modes") or [] if "mode" in e}
    cells = [str(row.get("label", "")), count(row.get("n"))]
    cells.append(number(amplitudes.get("mean_over_modes"), 2) if amplitudes else DASH)
    cells += [mean_std(by_mode.get(m), 1) for m in modes]
    angles = row.get("angles") or {}
    axes = angles.get("axes")
    cells.append(mean_std(axes, 2))
    cells.append(number((axes or {}).get("median"), 2))
    gross = angles.get("gross_fraction")
    cells.append(DASH if gross is None else percent(gross, 2))
    shifts = row.get("shifts") or {}
    cells += [mean_std(shifts.get("x"), 2), mean_std(shifts.get("y"), 2)]
    return tuple(cells)


def _rmsd_cells(row: dict) -> tuple[str, ...]:
    rmsd = row.get("rmsd") or {}
    return (
        str(row.get("label", "")),
        count(row.get("n")),
        *(mean_std(rmsd.get(k), 2) for k in ("amplitudes", "angles", "shifts")),
    )


def paper_tables(results: Sequence[dict], paper: Sequence[dict]) -> list[Table]:
    """Two tables: parameter errors (paper Tables 1 and 3) and RMSD (Tables 2 and 4).
    ``results`` first, then the ``paper`` rows (row class ``paper``)."""
    rows = list(results) + list(paper)
    classes = ("",) * len(results) + ("paper",) * len(paper)
    modes = _mode_numbers(rows)
    errors = Table(
        header=(
            "comparison",
            "images",
            "amplitude MAE, all modes",
            *(f"mode {m} MAE" for m in modes),
            "angle (°)",
            "angle median (°)",
            "> 10°",
            "shift X (Å)",
            "shift Y (Å)",
        ),
        rows=tuple(_error_cells(r, modes) for r in rows),
        caption="Parameter errors, mean ± std over images (paper Tables 1 and 3): amplitude "
        "absolute error (dimensionless), angular error as the mean angle between the "
        "coordinate axes rotated by the estimate and by the truth, absolute shift errors. "
        "Shaded rows: the paper's published values.",
        row_classes=classes,
    )
    with_rmsd = [(r, c) for r, c in zip(rows, classes, strict=True) if r.get("rmsd")]
    tables = [errors]
    if with_rmsd:
        tables.append(
            Table(
                header=(
                    "comparison",
                    "images",
                    "RMSD, amplitudes (Å)",
                    "RMSD, angles (Å)",
                    "RMSD, shifts (Å)",
                ),
                rows=tuple(_rmsd_cells(r) for r, _ in with_rmsd),
                caption="RMSD in Å between the reference displaced with the estimated and "
                "with the true parameters, one parameter type at a time, mean ± std over "
                "images (paper Tables 2 and 4). Shaded rows: the paper's published values.",
                row_classes=tuple(c for _, c in with_rmsd),
            )
        )
    return tables
