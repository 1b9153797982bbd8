"""Score estimated parameters against ground truth (or another estimate) with the paper's metrics.

Paper §3.1.1, Tables 1–4 (BENCHMARK.md "Metrics"):

- **Amplitudes**: absolute error ``|q̂_k − q_k|`` per mode (dimensionless); mean, std, median
  per mode and the mean over modes of the per-mode means.
- **Angles**: the paper's metric, the mean over the three coordinate axes of the angle between
  the axis rotated by the estimate and by the truth (:func:`deephemnma.geometry.
  angular_error_deg`), in degrees; also the geodesic angle ``arccos((tr(Â Aᵀ) − 1)/2)``, and
  the fraction of gross failures (axes metric above ``gross_threshold_deg``, 10° by default).
- **Shifts**: absolute error of ``rlnOriginXAngst`` and ``rlnOriginYAngst`` (Å).
- **RMSD** (Å) of the reference atoms displaced with estimated vs true parameters, one
  parameter type at a time, per image, then mean / std / median over images:

  * amplitudes only: ``sqrt(1/N Σ_i |Σ_k (q̂_k − q_k) v_k,i|²)``;
  * rotation only: the *undeformed* reference rotated by ``Â`` vs by ``A`` (projection
    matrices, rotation about the origin of the model frame, i.e. the box center):
    ``sqrt(1/N Σ_i |(Â − A) r_i|²)``;
  * shift only: every atom moves by the in-plane shift, so the RMSD is ``|ŝ − s|``.

  The amplitude and rotation RMSDs need the reference and its modes (``modes``); they are
  computed exactly through 3 × 3 and K × K second-moment matrices (no N-atom arrays per image).

Standard deviations are population values (``ddof=0``), as NumPy computes them by default.

**Row matching.** When both tables have ``rlnImageName``, rows are matched by image: the
1-based index and the stack path resolved against each table's folder (so a table written to
another folder still matches). The metrics are computed on the rows present in both; the
count of predicted rows without a match is reported (``n_unmatched``). When no image name
matches (e.g. predictions on preprocessed stacks scored against the raw simulation), rows are
matched by order, which requires equal row counts; otherwise :class:`InputError`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from deephemnma.errors import InputError
from deephemnma.geometry import angular_error_deg, euler_to_matrix, geodesic_distance_deg
from deephemnma.io.star import (
    ANGLES,
    IMAGE_NAME,
    ORIGINS_A,
    POSE_SPREAD,
    ParticleTable,
    absolute_image_names,
    amplitude_columns,
    amplitudes,
    angles_deg,
    optional_column,
    shifts_A,
)

GROSS_THRESHOLD_DEG = 10.0

__all__ = [
    "Comparison",
    "GROSS_THRESHOLD_DEG",
    "PAPER_ROWS",
    "compare",
    "evaluate",
    "format_table",
    "match_rows",
    "plot_helix",
    "plot_scatter",
    "summarize",
    "table_text",
    "write_evaluation",
]


# --------------------------------------------------------------------------------------------
# Row matching


def image_keys(table: ParticleTable) -> pd.Index:
    """Every row's image name with its stack path made absolute: the same image gives the
    same key from tables in different folders."""
    names = absolute_image_names(table.particles[IMAGE_NAME], table.folder, table.path)
    return pd.Index(names.to_numpy())


def match_rows(
    predicted: ParticleTable, truth: ParticleTable
) -> tuple[np.ndarray, np.ndarray, str]:
    """Rows of ``predicted`` and ``truth`` that describe the same image.

    Returns ``(predicted_rows, truth_rows, how)`` (0-based int arrays of equal length, in the
    predicted table's order) with ``how`` ``"rlnImageName"`` or ``"order"`` (module docstring).
    """
    n_pred, n_true = len(predicted), len(truth)
    if IMAGE_NAME in predicted.particles.columns and IMAGE_NAME in truth.particles.columns:
        keys_true = image_keys(truth)
        keys_pred = image_keys(predicted)
        if keys_true.has_duplicates:
            first = keys_true[keys_true.duplicated()][0]
            raise InputError(
                "the same image appears twice",
                path=truth.path,
                field=IMAGE_NAME,
                expected="one row per image",
                found=first,
            )
        where = keys_true.get_indexer(keys_pred)
        found = where >= 0
        if found.any():
            rows = np.flatnonzero(found)
            return rows, where[found].astype(np.int64), IMAGE_NAME
    if n_pred != n_true:
        raise InputError(
            "cannot match rows: no image name in common and different numbers of rows",
            path=predicted.path,
            field=IMAGE_NAME,
            expected=f"{n_true} rows (as {truth.path}) or shared rlnImageName values; score "
            "against a STAR of the same images (preprocess keeps the ground-truth columns)",
            found=f"{n_pred} rows",
        )
    rows = np.arange(n_pred, dtype=np.int64)
    return rows, rows.copy(), "order"


# --------------------------------------------------------------------------------------------
# Per-image comparison


@dataclass(frozen=True)
class Comparison:
    """Matched estimates and truths, and the per-image errors (one row per matched image).

    Fields that a table lacks are None. Arrays: ``amplitudes_*`` (n, K) dimensionless with
    ``mode_numbers`` (K,); ``angles_*`` (n, 3) rot, tilt, psi in degrees; ``shifts_*`` (n, 2)
    Å; ``angle_error_deg`` and ``geodesic_deg`` (n,); ``rmsd_*_A`` (n,) in Å.
    """

    label: str
    n: int
    matched_by: str
    n_unmatched: int
    mode_numbers: np.ndarray | None
    amplitudes_predicted: np.ndarray | None
    amplitudes_truth: np.ndarray | None
    angles_predicted: np.ndarray | None
    angles_truth: np.ndarray | None
    shifts_predicted: np.ndarray | None
    shifts_truth: np.ndarray | None
    angle_error_deg: np.ndarray | None
    geodesic_deg: np.ndarray | None
    rmsd_amplitudes_A: np.ndarray | None
    rmsd_angles_A: np.ndarray | None
    rmsd_shifts_A: np.ndarray | None
    spread_deg: np.ndarray | None = None


def _has(table: ParticleTable, labels: Sequence[str]) -> bool:
    return all(label in table.particles.columns for label in labels)


def _common_modes(
    predicted: ParticleTable, truth: ParticleTable, predicted_suffix: str, truth_suffix: str
) -> list[int]:
    have_pred = amplitude_columns(predicted, predicted_suffix)
    have_true = amplitude_columns(truth, truth_suffix)
    return [m for m in have_pred if m in have_true]


def amplitude_rmsd_A(delta_q: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """RMSD (Å) between the reference displaced by ``q̂`` and by ``q``, per row.

    delta_q: (n, K) amplitude differences; vectors: (K, N, 3) mode vectors in Å per unit
    amplitude. ``RMSD² = Δqᵀ G Δq / N`` with the Gram matrix ``G_kl = Σ_i v_k,i · v_l,i``.
    """
    k = vectors.shape[0]
    flat = vectors.reshape(k, -1).astype(np.float64)
    gram = flat @ flat.T
    msd = np.einsum("nk,kl,nl->n", delta_q, gram, delta_q) / vectors.shape[1]
    return np.sqrt(np.clip(msd, 0.0, None))


def rotation_rmsd_A(
    matrices_predicted: np.ndarray, matrices_truth: np.ndarray, coords_A: np.ndarray
) -> np.ndarray:
    """RMSD (Å) between the atoms ``coords_A`` (N, 3) rotated by ``Â`` and by ``A``, per row.

    matrices: (n, 3, 3) projection matrices; a point ``r`` goes to ``A r``.
    ``RMSD² = tr(D C Dᵀ) / N`` with ``D = Â − A`` and ``C = Σ_i r_i r_iᵀ``.
    """
    coords = np.asarray(coords_A, dtype=np.float64)
    second_moment = coords.T @ coords
    d = np.asarray(matrices_predicted, np.float64) - np.asarray(matrices_truth, np.float64)
    msd = np.einsum("nij,jk,nik->n", d, second_moment, d) / coords.shape[0]
    return np.sqrt(np.clip(msd, 0.0, None))


def compare(
    predicted: ParticleTable,
    truth: ParticleTable,
    modes=None,
    predicted_suffix: str = "",
    truth_suffix: str = "",
    label: str = "predicted vs truth",
) -> Comparison:
    """Match rows (:func:`match_rows`) and compute every per-image error that the columns allow.

    modes: a :class:`deephemnma.nma.modes.Modes` holding the reference and (at least) the
    compared modes, for the RMSD metrics; without it only the shift RMSD is computed.
    Amplitudes are compared for the modes present in both tables (``deephemnmaAmplitudeNN``
    plus the suffix).
    """
    rows_p, rows_t, how = match_rows(predicted, truth)
    from deephemnma.io.star import select

    pred = select(predicted, rows_p)
    true = select(truth, rows_t)
    n = len(rows_p)

    mode_numbers = amp_p = amp_t = rmsd_amp = None
    common = _common_modes(pred, true, predicted_suffix, truth_suffix)
    if common:
        numbers_p, values_p = amplitudes(pred, predicted_suffix)
        numbers_t, values_t = amplitudes(true, truth_suffix)
        amp_p = values_p[:, [list(numbers_p).index(m) for m in common]]
        amp_t = values_t[:, [list(numbers_t).index(m) for m in common]]
        mode_numbers = np.asarray(common, dtype=np.int64)
        if modes is not None:
            vectors = modes.vectors[modes.index_of(common)]
            rmsd_amp = amplitude_rmsd_A(amp_p - amp_t, vectors)

    ang_p = ang_t = err = geo = rmsd_rot = None
    if _has(pred, ANGLES) and _has(true, ANGLES):
        ang_p, ang_t = angles_deg(pred), angles_deg(true)
        mat_p = euler_to_matrix(torch.as_tensor(ang_p, dtype=torch.float64))
        mat_t = euler_to_matrix(torch.as_tensor(ang_t, dtype=torch.float64))
        err = angular_error_deg(mat_p, mat_t).numpy()
        geo = geodesic_distance_deg(mat_p, mat_t).numpy()
        if modes is not None:
            rmsd_rot = rotation_rmsd_A(mat_p.numpy(), mat_t.numpy(), modes.structure.coords_A)

    sh_p = sh_t = rmsd_sh = None
    if _has(pred, ORIGINS_A) and _has(true, ORIGINS_A):
        sh_p, sh_t = shifts_A(pred), shifts_A(true)
        rmsd_sh = np.linalg.norm(sh_p - sh_t, axis=1)

    return Comparison(
        label=label,
        n=n,
        matched_by=how,
        n_unmatched=len(predicted) - n,
        mode_numbers=mode_numbers,
        amplitudes_predicted=amp_p,
        amplitudes_truth=amp_t,
        angles_predicted=ang_p,
        angles_truth=ang_t,
        shifts_predicted=sh_p,
        shifts_truth=sh_t,
        angle_error_deg=err,
        geodesic_deg=geo,
        rmsd_amplitudes_A=rmsd_amp,
        rmsd_angles_A=rmsd_rot,
        rmsd_shifts_A=rmsd_sh,
        spread_deg=optional_column(pred, POSE_SPREAD),
    )


# --------------------------------------------------------------------------------------------
# Summary


def _stats(values: np.ndarray | None) -> dict | None:
    if values is None or len(values) == 0:
        return None
    values = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(values.mean()),
        "std": float(values.std()),
        "median": float(np.median(values)),
    }


def summarize(comparison: Comparison, gross_threshold_deg: float = GROSS_THRESHOLD_DEG) -> dict:
    """The paper's table entries from a :class:`Comparison` (JSON-ready dict).

    Keys: ``label``, ``n``, ``matched_by``, ``n_unmatched``; ``amplitudes``
    (``modes``: list of ``{mode, mean, std, median}`` of |q̂ − q|; ``mean_over_modes``);
    ``angles`` (``axes``: stats of the axes metric in °, ``geodesic``: stats in °,
    ``gross_fraction``, ``gross_threshold_deg``); ``shifts`` (``x``, ``y``: stats of the
    absolute errors in Å); ``rmsd`` (``amplitudes``, ``angles``, ``shifts``: stats in Å).
    A part whose columns are missing is None. Stats are ``{mean, std, median}``.
    """
    c = comparison
    result: dict = {
        "label": c.label,
        "n": int(c.n),
        "matched_by": c.matched_by,
        "n_unmatched": int(c.n_unmatched),
        "amplitudes": None,
        "angles": None,
        "shifts": None,
        "rmsd": None,
    }
    if c.mode_numbers is not None and c.n:
        errors = np.abs(c.amplitudes_predicted - c.amplitudes_truth)
        per_mode = [{"mode": int(m), **_stats(errors[:, k])} for k, m in enumerate(c.mode_numbers)]
        result["amplitudes"] = {
            "modes": per_mode,
            "mean_over_modes": float(np.mean([p["mean"] for p in per_mode])),
        }
    if c.angle_error_deg is not None and c.n:
        result["angles"] = {
            "axes": _stats(c.angle_error_deg),
            "geodesic": _stats(c.geodesic_deg),
            "gross_fraction": float(np.mean(c.angle_error_deg > gross_threshold_deg)),
            "gross_threshold_deg": float(gross_threshold_deg),
        }
    if c.shifts_predicted is not None and c.n:
        errors = np.abs(c.shifts_predicted - c.shifts_truth)
        result["shifts"] = {"x": _stats(errors[:, 0]), "y": _stats(errors[:, 1])}
    rmsd = {
        "amplitudes": _stats(c.rmsd_amplitudes_A),
        "angles": _stats(c.rmsd_angles_A),
        "shifts": _stats(c.rmsd_shifts_A),
    }
    if any(v is not None for v in rmsd.values()):
        result["rmsd"] = rmsd
    if c.spread_deg is not None and c.n:
        result["confidence"] = confidence_by_spread(c, gross_threshold_deg)
    return result


CONFIDENCE_FRACTIONS = (0.5, 0.75, 0.9, 1.0)


def confidence_text(result: dict) -> str:
    """One line on a result's ``confidence`` part ("" when it has none)."""
    confidence = result.get("confidence")
    if not confidence:
        return ""
    kept = confidence["kept_lowest_spread"]
    rho = confidence["spearman_spread_vs_angle_error"]
    parts = [f"{result['label']}: pose spread (TTA) vs angle error, Spearman "
             + ("–" if rho is None else f"{rho:.2f}")]  # fmt: skip
    head = " / ".join(f"{r['fraction']:.0%}" for r in kept)
    for key, name, scale, unit in (
        ("angle_mean_deg", "angle", 1, "°"),
        ("gross_fraction", "> 10°", 100, "%"),
        ("amplitude_mae", "amplitude MAE", 1, ""),
    ):
        if key in kept[0]:
            values = " / ".join(f"{scale * r[key]:.2f}" for r in kept)
            parts.append(f"{name} {values}{unit}")
    return f"{parts[0]}; keeping the lowest-spread {head}: " + ", ".join(parts[1:])


def confidence_by_spread(
    comparison: Comparison, gross_threshold_deg: float = GROSS_THRESHOLD_DEG
) -> dict:
    """How well the test-time-augmentation spread (``deephemnmaPoseSpreadDeg``) ranks the
    errors: the Spearman correlation of spread and angle error, and the errors of the
    particles kept when only the fraction with the lowest spread is kept (what a user who
    filters on the spread gets)."""
    from scipy.stats import spearmanr

    c = comparison
    order = np.argsort(c.spread_deg, kind="stable")
    kept = []
    for fraction in CONFIDENCE_FRACTIONS:
        take = order[: max(1, int(round(fraction * c.n)))]
        row = {"fraction": fraction, "n": int(len(take))}
        row["spread_max_deg"] = float(c.spread_deg[take].max())
        if c.angle_error_deg is not None:
            row["angle_mean_deg"] = float(c.angle_error_deg[take].mean())
            row["gross_fraction"] = float(np.mean(c.angle_error_deg[take] > gross_threshold_deg))
        if c.mode_numbers is not None:
            errors = np.abs(c.amplitudes_predicted[take] - c.amplitudes_truth[take])
            row["amplitude_mae"] = float(errors.mean())
        kept.append(row)
    rho = None
    if c.angle_error_deg is not None and c.n > 2:
        rho = float(spearmanr(c.spread_deg, c.angle_error_deg).statistic)
    return {"spearman_spread_vs_angle_error": rho, "kept_lowest_spread": kept}


def evaluate(
    predicted: ParticleTable,
    truth: ParticleTable,
    modes=None,
    predicted_suffix: str = "",
    truth_suffix: str = "",
    label: str = "predicted vs truth",
    gross_threshold_deg: float = GROSS_THRESHOLD_DEG,
) -> dict:
    """Paper metrics of ``predicted`` against ``truth`` (see the module docstring and
    :func:`summarize` for the keys). ``modes`` (reference + modes) enables the amplitude and
    rotation RMSDs."""
    comparison = compare(predicted, truth, modes, predicted_suffix, truth_suffix, label)
    return summarize(comparison, gross_threshold_deg)


def write_evaluation(result: dict | Sequence[dict], path_json: str | os.PathLike) -> Path:
    """Write a result (or a list of results) as indented JSON, atomically; returns the path."""
    from deephemnma.io.atomic import atomic_write_text

    return atomic_write_text(path_json, json.dumps(result, indent=2, allow_nan=False) + "\n")


def write_evaluation_folder(
    comparisons: Sequence[Comparison],
    out: str | os.PathLike,
    title: str,
    paper_rows: Sequence[dict] = (),
    figure_names: Sequence[str] = (),
    record: dict | None = None,
    gross_threshold_deg: float = GROSS_THRESHOLD_DEG,
    plots: bool = True,
    helix_index: int = 0,
):
    """Summarize ``comparisons`` into ``out``: evaluation.json (``record`` + results + paper
    rows), table.txt, a scatter figure per comparison named by ``figure_names``, and
    helix.png of comparison ``helix_index``. Returns the rich Table."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = [summarize(c, gross_threshold_deg) for c in comparisons]
    table = format_table(results, title, list(paper_rows))
    payload = {**(record or {}), "results": results, "paper": list(paper_rows)}
    write_evaluation(payload, out / "evaluation.json")
    from deephemnma.io.atomic import atomic_write_text

    notes = [line for r in results if (line := confidence_text(r))]
    if notes:
        table.caption = "\n".join(notes)
        table.caption_justify = "left"
    atomic_write_text(out / "table.txt", table_text(table))
    if plots:
        for comparison, name in zip(comparisons, figure_names, strict=False):
            if comparison.n:
                plot_scatter(comparison, out / name)
        if comparisons and comparisons[helix_index].n:
            plot_helix(comparisons[helix_index], out / "helix.png")
    return table


# --------------------------------------------------------------------------------------------
# The paper's numbers, in the same shape as a result


def _paper_row(label, n, amp, angle, shift, rmsd=None) -> dict:
    """amp: (mean over modes, [(mode, mean, std), …]); angle: (mean, std); shift: ((x mean,
    x std), (y mean, y std)); rmsd: ((amp mean, std), (angle mean, std), (shift mean, std))."""

    def stats(mean, std):
        return {"mean": mean, "std": std, "median": None}

    return {
        "label": label,
        "n": n,
        "matched_by": "paper",
        "n_unmatched": 0,
        "amplitudes": {
            "modes": [{"mode": m, **stats(a, s)} for m, a, s in amp[1]],
            "mean_over_modes": amp[0],
        },
        "angles": {
            "axes": stats(*angle),
            "geodesic": None,
            "gross_fraction": None,
            "gross_threshold_deg": GROSS_THRESHOLD_DEG,
        },
        "shifts": {"x": stats(*shift[0]), "y": stats(*shift[1])},
        "rmsd": None
        if rmsd is None
        else {"amplitudes": stats(*rmsd[0]), "angles": stats(*rmsd[1]), "shifts": stats(*rmsd[2])},
    }


PAPER_ROWS: dict[str, dict] = {
    "table1": _paper_row(
        "paper T1/T2 small test: inferred vs truth",
        2000,
        (7.5, [(7, 5.4, 6.5), (8, 8.2, 9.2), (9, 8.9, 10.5)]),
        (2.5, 3.3),
        ((0.2, 0.1), (0.2, 0.1)),
        ((0.4, 0.2), (0.9, 1.0), (0.3, 0.2)),
    ),
    "table1_hemnma": _paper_row(
        "paper T1: inferred vs HEMNMA",
        2000,
        (6.9, [(7, 5.4, 6.7), (8, 7.3, 9.0), (9, 7.9, 9.6)]),
        (1.9, 3.4),
        ((0.2, 0.1), (0.2, 0.1)),
    ),
    "table1_hemnma_truth": _paper_row(
        "paper T1: HEMNMA vs truth",
        2000,
        (6.6, [(7, 5.7, 8.4), (8, 6.2, 7.2), (9, 7.8, 7.2)]),
        (1.0, 0.9),
        ((0.2, 0.2), (0.2, 0.2)),
    ),
    "table3": _paper_row(
        "paper T3/T4 large test: inferred vs truth",
        50000,
        (7.8, [(7, 6.6, 8.7), (8, 9.5, 10.6), (9, 7.3, 9.9)]),
        (2.6, 3.4),
        ((0.2, 0.2), (0.2, 0.2)),
        ((0.4, 0.2), (0.9, 1.2), (0.3, 0.2)),
    ),
}
"""The paper's Tables 1–4 (synthetic AK, modes 7–9) as result dicts, for :func:`format_table`."""


# --------------------------------------------------------------------------------------------
# Tables


def _fmt(stats: dict | None, digits: int = 1, std: bool = True) -> str:
    if stats is None or stats.get("mean") is None:
        return "–"
    text = f"{stats['mean']:.{digits}f}"
    if std and stats.get("std") is not None:
        text += f" ± {stats['std']:.{digits}f}"
    return text


def _row_cells(result: dict, mode_numbers: list[int]) -> list[str]:
    amp = result.get("amplitudes")
    by_mode = {} if amp is None else {p["mode"]: p for p in amp["modes"]}
    cells = [result.get("label", ""), str(result.get("n", ""))]
    cells.append("–" if amp is None else f"{amp['mean_over_modes']:.2f}")
    cells += [_fmt(by_mode.get(m), 1) for m in mode_numbers]
    ang = result.get("angles")
    if ang is None:
        cells += ["–", "–", "–"]
    else:
        axes = ang["axes"]
        extra = "–" if axes.get("median") is None else f"{axes['median']:.2f}"
        gross = ang.get("gross_fraction")
        cells += [
            _fmt(axes, 2),
            extra,
            "–" if gross is None else f"{100 * gross:.2f}%",
        ]
    sh = result.get("shifts")
    cells += ["–", "–"] if sh is None else [_fmt(sh["x"], 2), _fmt(sh["y"], 2)]
    rmsd = result.get("rmsd") or {}
    cells += [_fmt(rmsd.get(k), 2) for k in ("amplitudes", "angles", "shifts")]
    return cells


def format_table(
    result: dict | Sequence[dict],
    title: str = "DeepHEMNMA evaluation",
    paper_rows: Mapping[str, dict] | Sequence[dict] | None = None,
):
    """A rich Table in the layout of the paper's Tables 1–4: one row per result, then the
    paper's rows (e.g. ``PAPER_ROWS.values()``) for comparison. Cells are ``mean ± std``."""
    from rich.table import Table

    results = [result] if isinstance(result, Mapping) else list(result)
    if isinstance(paper_rows, Mapping):
        paper = list(paper_rows.values())
    else:
        paper = list(paper_rows or [])
    mode_numbers = sorted(
        {
            p["mode"]
            for r in results + paper
            if r.get("amplitudes")
            for p in r["amplitudes"]["modes"]
        }
    )
    table = Table(title=title)
    table.add_column("comparison", style="bold")
    table.add_column("n", justify="right")
    table.add_column("amp. MAE\nmean over modes", justify="right")
    for m in mode_numbers:
        table.add_column(f"mode {m}\nMAE", justify="right")
    table.add_column("angle [°]\n(axes)", justify="right")
    table.add_column("angle\nmedian [°]", justify="right")
    table.add_column("> 10°", justify="right")
    table.add_column("shift X\n[Å]", justify="right")
    table.add_column("shift Y\n[Å]", justify="right")
    table.add_column("RMSD amp.\n[Å]", justify="right")
    table.add_column("RMSD angle\n[Å]", justify="right")
    table.add_column("RMSD shift\n[Å]", justify="right")
    for r in results:
        table.add_row(*_row_cells(r, mode_numbers))
    if paper:
        table.add_section()
        for r in paper:
            table.add_row(*_row_cells(r, mode_numbers), style="dim")
    return table


def table_text(table, width: int = 200) -> str:
    """Plain text of a rich Table (for files and logs)."""
    import io

    from rich.console import Console

    console = Console(width=width, record=True, file=io.StringIO())
    console.print(table)
    return console.export_text()


# --------------------------------------------------------------------------------------------
# Figures


def _wrap360(values: np.ndarray) -> np.ndarray:
    return np.mod(values, 360.0)


def _panel(ax, x, y, title, unit, hexbin_above: int):
    finite = np.isfinite(x) & np.isfinite(y)
    x, y = x[finite], y[finite]
    lo = float(min(x.min(), y.min())) if len(x) else 0.0
    hi = float(max(x.max(), y.max())) if len(x) else 1.0
    if len(x) > hexbin_above:
        ax.hexbin(x, y, gridsize=60, bins="log", cmap="viridis", extent=(lo, hi, lo, hi))
    else:
        ax.scatter(x, y, s=4, alpha=0.5, linewidths=0)
    ax.plot([lo, hi], [lo, hi], color="red", lw=0.8)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(f"truth {unit}", fontsize=8)
    ax.set_ylabel(f"estimate {unit}", fontsize=8)
    ax.tick_params(labelsize=7)


def plot_scatter(comparison: Comparison, path: str | os.PathLike, hexbin_above: int = 3000) -> Path:
    """Estimate vs truth for every parameter (hexbin density above ``hexbin_above`` points),
    plus the histogram of angular errors; PNG written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from deephemnma.io.atomic import atomic_path

    c = comparison
    panels = []
    if c.mode_numbers is not None:
        for k, m in enumerate(c.mode_numbers):
            panels.append(
                (c.amplitudes_truth[:, k], c.amplitudes_predicted[:, k], f"amplitude mode {m}", "")
            )
    if c.angles_truth is not None:
        for i, name in enumerate(("rot", "tilt", "psi")):
            t, p = c.angles_truth[:, i], c.angles_predicted[:, i]
            if name != "tilt":
                t, p = _wrap360(t), _wrap360(p)
            panels.append((t, p, f"{name} (RELION)", "[°]"))
    if c.shifts_truth is not None:
        for i, name in enumerate(("shift X", "shift Y")):
            panels.append((c.shifts_truth[:, i], c.shifts_predicted[:, i], name, "[Å]"))
    n_panels = len(panels) + (c.angle_error_deg is not None)
    cols = min(4, max(1, n_panels))
    rows = max(1, -(-n_panels // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
    flat = axes.ravel()
    for ax, (t, p, title, unit) in zip(flat, panels, strict=False):
        _panel(ax, np.asarray(t), np.asarray(p), title, unit, hexbin_above)
    if c.angle_error_deg is not None:
        ax = flat[len(panels)]
        err = c.angle_error_deg
        ax.hist(np.clip(err, 0, 30), bins=60, color="gray")
        ax.axvline(GROSS_THRESHOLD_DEG, color="red", lw=0.8)
        ax.set_title(f"angular error (axes), median {np.median(err):.2f}°", fontsize=9)
        ax.set_xlabel("[°] (clipped at 30)", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in flat[n_panels:]:
        ax.axis("off")
    fig.suptitle(f"{c.label} (n = {c.n})", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def plot_helix(
    comparison: Comparison, path: str | os.PathLike, max_points: int = 5000, seed: int = 0
) -> Path | None:
    """Paper Fig. 6: estimated and true amplitudes of the first three compared modes as a 3D
    scatter (the helical ground-truth trajectory). None when fewer than three modes."""
    c = comparison
    if c.mode_numbers is None or len(c.mode_numbers) < 3 or c.n == 0:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from deephemnma.io.atomic import atomic_path

    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(c.n, size=min(c.n, max_points), replace=False))
    t, p = c.amplitudes_truth[pick, :3], c.amplitudes_predicted[pick, :3]
    fig = plt.figure(figsize=(6, 5.5))
    ax = fig.add_subplot(projection="3d")
    ax.scatter(*p.T, s=3, alpha=0.5, color="tab:blue", label="estimate", depthshade=False)
    ax.scatter(*t.T, s=3, alpha=0.8, color="tab:red", label="truth", depthshade=False)
    m = c.mode_numbers
    ax.set_xlabel(f"mode {m[0]}")
    ax.set_ylabel(f"mode {m[1]}")
    ax.set_zlabel(f"mode {m[2]}")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(f"{c.label}: amplitudes (n = {len(pick)})", fontsize=10)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
