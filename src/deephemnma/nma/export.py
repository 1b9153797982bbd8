"""Modes in other tools' formats: NMWiz ``.nmd``, ContinuousFlex/Scipion mode files, mode
animations as multi-model PDB/mmCIF, and an eigenvalue/collectivity figure.

Every writer is atomic (temporary file, then rename) through :mod:`deephemnma.io.atomic`.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from deephemnma.errors import InputError
from deephemnma.nma.analysis import collectivity
from deephemnma.nma.modes import Modes

# ContinuousFlex's defaults: modes below this collectivity are disabled in modes.xmd, and
# animations use 10 frames at amplitude 50. The paper's AK amplitudes reach ±200.
CONTINUOUSFLEX_COLLECTIVITY_THRESHOLD = 0.15
DEFAULT_ANIMATION_AMPLITUDE = 200.0
DEFAULT_ANIMATION_FRAMES = 20


def _format_values(values: np.ndarray, fmt: str) -> str:
    """Values on one line, space-separated (np.savetxt formats a whole row at once)."""
    buffer = io.StringIO()
    np.savetxt(buffer, np.asarray(values, dtype=np.float64).reshape(1, -1), fmt=fmt)
    return buffer.getvalue().rstrip("\n")


def _format_rows(values: np.ndarray, fmt: str) -> str:
    buffer = io.StringIO()
    np.savetxt(buffer, np.asarray(values, dtype=np.float64), fmt=fmt)
    return buffer.getvalue()


def write_nmd(path: str | Path, modes: Modes, title: str | None = None) -> Path:
    """Write modes for ProDy/NMWiz (VMD) as a ``.nmd`` text file.

    Lines: title, names, resnames, chids, resids, betas, coordinates (Å), then one
    ``mode <number> <scale> <3N components>`` line per mode. The scale is ProDy's
    ``1/sqrt(eigenvalue)`` (square root of the mode's variance, units of gamma); rigid-body
    modes (eigenvalue ≈ 0) get scale 1. Vectors are the unit-norm 3N vectors.
    """
    from deephemnma.io.atomic import atomic_write_text

    s = modes.structure
    title = title or str(s.metadata.get("source") or "deephemnma modes")
    lines = [
        f"title {Path(title).name if '/' in title else title}".replace("\n", " "),
        "names " + " ".join(_nmd_token(v) for v in s.atom_name),
        "resnames " + " ".join(_nmd_token(v) for v in s.residue_name),
        "chids " + " ".join(_nmd_token(v) for v in s.chain_id),
        "resids " + " ".join(str(int(v)) for v in s.residue_seq),
        "betas " + _format_values(s.b_factor_A2, "%.2f"),
        "coordinates " + _format_values(s.coords_A, "%.3f"),
    ]
    for number, value, vector in zip(
        modes.mode_numbers, modes.eigenvalues, modes.vectors, strict=True
    ):
        scale = 1.0 / np.sqrt(value) if value > 1e-10 else 1.0
        lines.append(f"mode {int(number)} {scale:.4f} " + _format_values(vector, "%.6g"))
    return atomic_write_text(path, "\n".join(lines) + "\n")


def _nmd_token(value) -> str:
    # NMWiz splits on whitespace: blank or spaced names would shift every column.
    token = str(value).strip().replace(" ", "_")
    return token or "?"


def write_continuousflex(directory: str | Path, modes: Modes) -> Path:
    """Write modes as ContinuousFlex/Scipion expects them (HEMNMA's ``modes`` output).

    ``DIR/modes/vec.N``: one text file per mode N, one line ``x y z`` per atom in the order
    of ``DIR/atoms.pdb`` (or ``atoms.cif`` when the model cannot be PDB: more than 99,999
    atoms or chain names longer than 2 characters). ``DIR/modes.xmd``: the Xmipp metadata list
    (``_nmaModefile``, ``_order_``, ``_enabled`` (−1 for modes 1–6 and for collectivity
    < 0.15, as ContinuousFlex), ``_nmaCollectivity``, ``_nmaEigenval``). Returns DIR.
    """
    from deephemnma.io.atomic import atomic_write_text
    from deephemnma.io.pdb import write_structure

    directory = Path(directory)
    (directory / "modes").mkdir(parents=True, exist_ok=True)
    write_structure(directory / f"atoms{model_suffix(modes.structure)}", modes.structure)
    kappa = collectivity(modes.vectors)
    rows = []
    for number, value, vector, coll in zip(
        modes.mode_numbers, modes.eigenvalues, modes.vectors, kappa, strict=True
    ):
        atomic_write_text(directory / "modes" / f"vec.{int(number)}", _format_rows(vector, "%.8e"))
        enabled = 1 if number > 6 and coll >= CONTINUOUSFLEX_COLLECTIVITY_THRESHOLD else -1
        rows.append(f" modes/vec.{int(number)} {int(number)} {enabled} {coll:.6f} {value:.8e}")
    header = [
        "# XMIPP_STAR_1 *",
        "# Normal modes written by deephemnma (unit-norm 3N vectors, CONVENTIONS.md)",
        "data_noname",
        "loop_",
        " _nmaModefile",
        " _order_",
        " _enabled",
        " _nmaCollectivity",
        " _nmaEigenval",
    ]
    atomic_write_text(directory / "modes.xmd", "\n".join(header + rows) + "\n")
    return directory


def model_suffix(structure) -> str:
    """ ".pdb" when the model fits the PDB format, else ".cif" (many atoms, long chain ids)."""
    long_chain = any(len(str(c).strip()) > 2 for c in np.unique(structure.chain_id))
    return ".cif" if long_chain or structure.n_atoms > 99_999 else ".pdb"


def animation_amplitudes(amplitude: float, n_frames: int) -> np.ndarray:
    """(n_frames,) amplitudes of one loop 0 → +A → 0 → −A (sinusoidal, loops smoothly)."""
    if n_frames < 2:
        raise InputError("an animation needs at least 2 frames", found=str(n_frames))
    return amplitude * np.sin(2 * np.pi * np.arange(n_frames) / n_frames)


def write_mode_animation(
    path: str | Path,
    modes: Modes,
    mode_number: int,
    amplitude: float = DEFAULT_ANIMATION_AMPLITUDE,
    n_frames: int = DEFAULT_ANIMATION_FRAMES,
) -> Path:
    """Multi-model PDB/mmCIF of the reference deformed along one mode over ±``amplitude``
    (dimensionless, CONVENTIONS: displacement of atom i is q·v_i Å)."""
    from deephemnma.io.pdb import write_models

    index = int(modes.index_of([mode_number])[0])
    q = animation_amplitudes(amplitude, n_frames)
    frames = modes.structure.coords_A[None] + q[:, None, None] * modes.vectors[index][None]
    return write_models(path, modes.structure, frames)


def write_animations(
    directory: str | Path,
    modes: Modes,
    mode_numbers,
    amplitude: float = DEFAULT_ANIMATION_AMPLITUDE,
    n_frames: int = DEFAULT_ANIMATION_FRAMES,
) -> list[Path]:
    """``DIR/mode_NNN.pdb`` (or ``.cif``) for each mode number; returns the paths."""
    directory = Path(directory)
    suffix = model_suffix(modes.structure)
    return [
        write_mode_animation(
            directory / f"mode_{int(m):03d}{suffix}", modes, int(m), amplitude, n_frames
        )
        for m in mode_numbers
    ]


def plot_modes(path: str | Path, modes: Modes, comparison=None) -> Path:
    """PNG/PDF/SVG figure: eigenvalues (log scale) and collectivity of the flexible modes,
    plus per-mode and cumulative overlap when a
    :class:`~deephemnma.nma.analysis.TargetComparison` is given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from deephemnma.io.atomic import atomic_path

    flexible = modes.mode_numbers > 6
    numbers = modes.mode_numbers[flexible]
    if numbers.size == 0:
        raise InputError("no flexible modes (7 and above) to plot", field="modes")
    n_panels = 3 if comparison is not None else 2
    fig, axes = plt.subplots(n_panels, 1, figsize=(6.4, 2.4 * n_panels), sharex=True)
    axes[0].semilogy(numbers, modes.eigenvalues[flexible], "o-", color="C0")
    axes[0].set_ylabel("eigenvalue (γ units)")
    method = modes.parameters.get("method", "?")
    cutoff = modes.parameters.get("cutoff_A")
    cutoff_text = f", cut-off {cutoff:g} Å" if cutoff is not None else ""
    axes[0].set_title(f"{modes.n_atoms:,} nodes, {str(method).upper()}{cutoff_text}")
    axes[1].bar(numbers, collectivity(modes.vectors[flexible]), color="C1")
    axes[1].set_ylabel("collectivity")
    axes[1].set_ylim(0, 1)
    if comparison is not None:
        keep = np.isin(comparison.mode_numbers, numbers)
        axes[2].bar(
            comparison.mode_numbers[keep], comparison.overlap[keep], color="C2", label="overlap"
        )
        axes[2].plot(
            comparison.mode_numbers[keep], comparison.cumulative[keep], "k.-", label="cumulative"
        )
        axes[2].set_ylim(0, 1)
        axes[2].set_ylabel("overlap")
        axes[2].legend(loc="best", fontsize="small")
    axes[-1].set_xlabel("mode number")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=150, format=path.suffix.lstrip(".") or "png")
    plt.close(fig)
    return path
