"""Normal modes of a reference model: the :class:`Modes` object, its file, and how to compute it.

Conventions (CONVENTIONS.md): each mode is a unit-norm vector over the 3N coordinates of
the N reference atoms (or pseudoatoms), modes are numbered from 1 by increasing eigenvalue,
modes 1–6 are rigid-body motions, amplitudes ``q_k`` are dimensionless and the deformed
model is ``r_i + Σ_k q_k v_k,i`` (Å). Each mode's sign is fixed so that its largest-magnitude
component is positive.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from deephemnma.errors import InputError
from deephemnma.nma.network import (
    Network,
    anm_hessian,
    build_network,
    default_cutoff,
    is_pseudoatomic,
    rigid_body_basis,
)
from deephemnma.nma.rtb import (
    basis_matrix,
    block_basis,
    expand_to_atoms,
    residue_blocks,
    rtb_hessian,
    spatial_blocks,
)
from deephemnma.nma.solvers import (
    DENSE_MAX_DIM,
    SHIFT_RELATIVE,
    lobpcg_lowest,
    lowest_eigenpairs,
    rayleigh_sorted,
    shift_invert_lowest,
    two_level_preconditioner,
)
from deephemnma.structure import Structure

FILE_FORMAT = "deephemnma-modes"
FILE_FORMAT_VERSION = 1
N_RIGID = 6
# An eigenvalue below this fraction of the mean Hessian diagonal is a zero mode. Rigid-body
# modes come out at ~1e-16 of it; the softest real modes of a ribosome at ~1e-4.
ZERO_MODE_RELATIVE = 1e-9
# LOBPCG residual tolerance, relative to the mean Hessian diagonal: gives eigenvalues within
# ~1e-9 (relative) of a direct shift-invert solve on the ribosome CA+P network.
LOBPCG_TOL_RELATIVE = 1e-6
# Full ANM up to this many DOF is solved directly (SuperLU shift-invert, exact and < 1 s at
# 5,000 DOF); beyond, SuperLU's fill-in grows fast (38 s, 3 GB at 42,657 DOF) and LOBPCG
# with a two-level preconditioner takes over.
ANM_DIRECT_MAX_DIM = 15000
# Nodes per coarse block in the full-ANM preconditioner.
PRECONDITIONER_BLOCK_NODES = 10.0

_STRUCTURE_ARRAYS = (
    "element",
    "atom_name",
    "residue_name",
    "residue_seq",
    "chain_id",
    "b_factor_A2",
)


@dataclass(frozen=True)
class Modes:
    """K normal modes of a reference model.

    structure: the N reference atoms (or pseudoatoms) the vectors refer to.
    mode_numbers: (K,) int, 1-based (1–6 are rigid-body modes).
    eigenvalues: (K,) float64, in the units of the spring constant gamma (energy/Å²).
    vectors: (K, N, 3) float64, each unit-norm over its 3N components, mutually orthogonal.
    parameters: how they were computed (method, cutoff_A, gamma, block_residues, …, versions).
    """

    structure: Structure
    mode_numbers: np.ndarray
    eigenvalues: np.ndarray
    vectors: np.ndarray
    parameters: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        k = len(self.mode_numbers)
        if self.vectors.shape != (k, self.structure.n_atoms, 3) or len(self.eigenvalues) != k:
            raise ValueError(
                f"Modes: vectors {self.vectors.shape}, eigenvalues {len(self.eigenvalues)}, "
                f"mode_numbers {k}, atoms {self.structure.n_atoms} do not agree"
            )

    @property
    def n_modes(self) -> int:
        return int(len(self.mode_numbers))

    @property
    def n_atoms(self) -> int:
        return self.structure.n_atoms

    def index_of(self, mode_numbers: Iterable[int]) -> np.ndarray:
        """Positions (in this object) of the given 1-based mode numbers."""
        wanted = [int(m) for m in mode_numbers]
        have = {int(m): i for i, m in enumerate(self.mode_numbers)}
        missing = [m for m in wanted if m not in have]
        if missing:
            raise InputError(
                f"mode {_format_numbers(missing)} not available: these modes hold "
                f"{_format_numbers(self.mode_numbers)}",
                field="modes",
                expected=f"mode numbers within {_format_numbers(self.mode_numbers)} "
                "(compute more with --n-modes)",
                found=_format_numbers(missing),
            )
        return np.array([have[m] for m in wanted], dtype=np.int64)

    def select(self, mode_numbers: Iterable[int]) -> Modes:
        """The given modes (1-based numbers, kept in the order given)."""
        index = self.index_of(mode_numbers)
        return replace(
            self,
            mode_numbers=self.mode_numbers[index],
            eigenvalues=self.eigenvalues[index],
            vectors=self.vectors[index],
        )

    def vector_matrix(self) -> np.ndarray:
        """(3N, K) matrix whose columns are the modes (x1, y1, z1, x2, … order)."""
        return self.vectors.reshape(self.n_modes, -1).T


def deform(modes: Modes, amplitudes: np.ndarray) -> np.ndarray:
    """Deformed coordinates ``r + Σ_k q_k v_k`` (Å).

    amplitudes: (..., K) dimensionless, one per mode of ``modes`` in its order.
    Returns (..., N, 3) float64.
    """
    q = np.asarray(amplitudes, dtype=np.float64)
    if q.shape[-1:] != (modes.n_modes,):
        raise InputError(
            "one amplitude per mode is needed",
            expected=f"{modes.n_modes} amplitudes (modes {_format_numbers(modes.mode_numbers)})",
            found=f"shape {q.shape}",
        )
    return modes.structure.coords_A + np.einsum("...k,kna->...na", q, modes.vectors)


def parse_mode_numbers(text: str, available: Iterable[int] | None = None) -> list[int]:
    """Parse ``"7-9,11"`` into ``[7, 8, 9, 11]``; check against ``available`` if given."""
    numbers: list[int] = []
    for part in str(text).replace(" ", "").split(","):
        if not part:
            continue
        try:
            if "-" in part:
                first, last = (int(v) for v in part.split("-", 1))
                if last < first:
                    raise ValueError
                numbers.extend(range(first, last + 1))
            else:
                numbers.append(int(part))
        except ValueError:
            raise InputError(
                "cannot read the mode list",
                field="modes",
                expected="numbers and ranges such as 7-9,11",
                found=repr(text),
            ) from None
    if not numbers or min(numbers) < 1:
        raise InputError(
            "mode numbers start at 1",
            field="modes",
            expected="numbers ≥ 1 such as 7-9",
            found=repr(text),
        )
    if available is not None:
        have = sorted(int(m) for m in available)
        missing = [m for m in numbers if m not in set(have)]
        if missing:
            raise InputError(
                f"mode {_format_numbers(missing)} is beyond the modes computed "
                f"({_format_numbers(have)})",
                field="modes",
                expected=f"modes within {_format_numbers(have)} (or raise --n-modes)",
                found=str(text),
            )
    return list(dict.fromkeys(numbers))


def _format_numbers(numbers: Iterable[int]) -> str:
    """Compact "7-9,11" form of a list of mode numbers."""
    values = sorted({int(v) for v in numbers})
    if not values:
        return "none"
    runs, start, prev = [], values[0], values[0]
    for v in values[1:] + [None]:
        if v is not None and v == prev + 1:
            prev = v
            continue
        runs.append(f"{start}" if start == prev else f"{start}-{prev}")
        if v is not None:
            start = prev = v
    return ",".join(runs)


# --------------------------------------------------------------------------- file


def save_modes(path: str | Path, modes: Modes) -> Path:
    """Write a self-describing ``.npz``: reference atoms, eigenvalues, vectors, parameters.

    Arrays: ``coords_A`` (N, 3), atom identities (``element``, ``atom_name``,
    ``residue_name``, ``residue_seq``, ``chain_id``, ``b_factor_A2``), ``mode_numbers``
    (K,), ``eigenvalues`` (K,), ``vectors`` (K, N, 3); ``metadata``: a JSON string with the
    format name and version, units, parameters and the structure's metadata. Readable with
    plain ``numpy.load`` (no pickles). Written to a temporary file, then renamed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    s = modes.structure
    metadata = {
        "format": FILE_FORMAT,
        "format_version": FILE_FORMAT_VERSION,
        "units": {
            "coords_A": "Å",
            "vectors": "unit norm over 3N (dimensionless)",
            "eigenvalues": "units of gamma (energy/Å²)",
            "amplitudes": "dimensionless; deformed = coords_A + Σ q_k vectors[k]",
        },
        "parameters": modes.parameters,
        "structure_metadata": s.metadata,
    }
    arrays = {
        "coords_A": np.asarray(s.coords_A, dtype=np.float64),
        "mode_numbers": np.asarray(modes.mode_numbers, dtype=np.int64),
        "eigenvalues": np.asarray(modes.eigenvalues, dtype=np.float64),
        "vectors": np.asarray(modes.vectors, dtype=np.float64),
        "metadata": np.array(json.dumps(metadata, default=_json_default)),
    }
    for name in _STRUCTURE_ARRAYS:
        value = np.asarray(getattr(s, name))
        arrays[name] = value if value.dtype.kind in "iuf" else value.astype(str)
    from deephemnma.io.atomic import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        # A file handle, not a name: numpy would append ".npz" to a name without it.
        np.savez(handle, **arrays)
    return path


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def load_modes(path: str | Path) -> Modes:
    """Read a file written by :func:`save_modes`."""
    path = Path(path)
    if not path.is_file():
        raise InputError("modes file not found", path=path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except Exception as exc:  # zip / npy errors: not our file
        raise InputError(
            f"not a readable modes file ({exc})",
            path=path,
            expected="a .npz written by 'deephemnma nma'",
        ) from None
    required = {
        "coords_A",
        "mode_numbers",
        "eigenvalues",
        "vectors",
        "metadata",
        *_STRUCTURE_ARRAYS,
    }
    missing = sorted(required - set(arrays))
    if missing:
        raise InputError(
            "modes file lacks arrays",
            path=path,
            expected=", ".join(sorted(required)),
            found=f"missing {missing}",
        )
    metadata = json.loads(str(arrays["metadata"]))
    if metadata.get("format") != FILE_FORMAT:
        raise InputError(
            "not a deephemnma modes file",
            path=path,
            field="metadata.format",
            expected=FILE_FORMAT,
            found=str(metadata.get("format")),
        )
    if int(metadata.get("format_version", 0)) > FILE_FORMAT_VERSION:
        raise InputError(
            "modes file written by a newer deephemnma",
            path=path,
            expected=f"format_version ≤ {FILE_FORMAT_VERSION}",
            found=str(metadata.get("format_version")),
        )
    structure = Structure(
        coords_A=arrays["coords_A"].astype(np.float64),
        element=arrays["element"],
        atom_name=arrays["atom_name"],
        residue_name=arrays["residue_name"],
        residue_seq=arrays["residue_seq"].astype(np.int64),
        chain_id=arrays["chain_id"],
        b_factor_A2=arrays["b_factor_A2"].astype(np.float64),
        metadata=metadata.get("structure_metadata") or {},
    )
    return Modes(
        structure=structure,
        mode_numbers=arrays["mode_numbers"].astype(np.int64),
        eigenvalues=arrays["eigenvalues"].astype(np.float64),
        vectors=arrays["vectors"].astype(np.float64),
        parameters=metadata.get("parameters") or {},
    )


# --------------------------------------------------------------------------- computing


def resolve_method(structure: Structure, method: str) -> str:
    """ "auto" → "anm" for pseudoatoms (no residues to block), "rtb" for atomic models."""
    method = method.lower()
    if method == "auto":
        return "anm" if is_pseudoatomic(structure) else "rtb"
    if method not in ("rtb", "anm"):
        raise InputError(
            "unknown normal-mode method", field="method", expected="rtb, anm or auto", found=method
        )
    return method


def compute_modes(
    structure: Structure,
    n_modes: int = 20,
    method: str = "auto",
    cutoff_A: float | None = None,
    gamma: float = 1.0,
    block_residues: int = 10,
    progress: bool = True,
) -> Modes:
    """Normal modes 1..``n_modes`` of an elastic network over all atoms of ``structure``.

    structure: N atoms or pseudoatoms (select atoms beforehand, e.g. heavy, CA, CA+P).
    n_modes: number of modes including the six rigid-body modes (ContinuousFlex counts the
        same way: 20 → modes 1–20, of which 7–20 are flexible).
    method: "rtb" (rotation–translation blocks of ``block_residues`` consecutive residues,
        Tama et al. 2000; ContinuousFlex's method for atoms), "anm" (full Hessian), or
        "auto" (anm for pseudoatoms, rtb otherwise).
    cutoff_A: spring cut-off (Å); None → :func:`~deephemnma.nma.network.default_cutoff`
        (8 Å for atoms, 15 Å for CA, 20 Å for CA+P, 95th-percentile rule for pseudoatoms).
    gamma: uniform spring constant (sets the eigenvalue scale only).
    Raises :class:`InputError` for an empty or too small selection, a disconnected network,
    more than six zero modes, or more modes than degrees of freedom.
    """
    report = _Reporter(progress)
    method = resolve_method(structure, method)
    if int(n_modes) < N_RIGID + 1:
        raise InputError(
            "too few modes requested: modes 1–6 are rigid-body motions",
            field="n_modes",
            expected="at least 7",
            found=str(n_modes),
        )
    n_modes = int(n_modes)
    cutoff_rule = "given"
    if cutoff_A is None:
        cutoff_A, cutoff_rule = default_cutoff(structure)
    coords_A = np.asarray(structure.coords_A, dtype=np.float64)
    timings: dict[str, float] = {}
    with report.step(
        f"elastic network: {structure.n_atoms:,} nodes, cut-off {cutoff_A:.3g} Å",
        timings,
        "network",
    ):
        network = build_network(coords_A, cutoff_A, gamma)
    info = {"n_nodes": structure.n_atoms, "n_springs": network.n_springs}
    if method == "rtb":
        values, vectors, extra = _rtb_modes(
            structure, network, n_modes, block_residues, report, timings
        )
    else:
        values, vectors, extra = _anm_modes(coords_A, network, n_modes, report, timings)
    info.update(extra)
    mean_diag = 2.0 * float(network.gamma.sum()) / (3 * structure.n_atoms)
    _check_zero_modes(values, vectors, network, mean_diag, structure)
    vectors = _finalize_vectors(coords_A, vectors)
    # Modes 1–6 keep the solver's eigenvalues (numerical zeros, ~1e-16 of the scale): the
    # analytic rigid basis that replaces their vectors spans the same zero eigenspace.
    parameters = {
        "method": method,
        "cutoff_A": float(cutoff_A),
        "cutoff_rule": cutoff_rule,
        "gamma": float(gamma),
        "potential": "Tirion/ANM, uniform spring constant, springs for distance ≤ cutoff",
        "block_residues": int(block_residues) if method == "rtb" else None,
        "n_modes": n_modes,
        "selection": structure.metadata.get("selection"),
        "source": structure.metadata.get("path") or structure.metadata.get("source"),
        "timings_s": timings,
        "versions": _versions(),
        **info,
    }
    return Modes(
        structure=structure,
        mode_numbers=np.arange(1, n_modes + 1, dtype=np.int64),
        eigenvalues=values,
        vectors=vectors,
        parameters=parameters,
    )


def _rtb_modes(structure, network, n_modes, block_residues, report, timings):
    coords_A = structure.coords_A
    with report.step(f"RTB blocks of {block_residues} residues", timings, "blocks"):
        basis = block_basis(coords_A, residue_blocks(structure, block_residues, network=network))
    if n_modes > basis.n_dof:
        raise InputError(
            f"more modes requested than the RTB model has degrees of freedom "
            f"({basis.n_blocks} blocks, {basis.n_dof} DOF)",
            field="n_modes",
            expected=f"at most {basis.n_dof} (or smaller --block-residues)",
            found=str(n_modes),
        )
    with report.step(f"projected Hessian ({basis.n_dof:,} block DOF)", timings, "projection"):
        reduced = rtb_hessian(coords_A, network, basis)
    with report.step(f"lowest {n_modes} eigenpairs", timings, "eigensolver"):
        values, reduced_vectors = lowest_eigenpairs(reduced, n_modes)
    with report.step("expanding block motions to atoms", timings, "expand"):
        vectors = expand_to_atoms(basis, coords_A, reduced_vectors)
    solver = "dense eigh" if basis.n_dof <= DENSE_MAX_DIM else "shift-invert Lanczos (SuperLU)"
    return values, vectors, {"n_blocks": basis.n_blocks, "n_dof": basis.n_dof, "solver": solver}


def _anm_modes(coords_A, network, n_modes, report, timings):
    n_dof = 3 * network.n_nodes
    if n_modes > n_dof:
        raise InputError(
            "more modes requested than degrees of freedom (3 × atoms)",
            field="n_modes",
            expected=f"at most {n_dof}",
            found=str(n_modes),
        )
    with report.step("Hessian", timings, "hessian"):
        hessian = anm_hessian(network)
    if n_dof <= DENSE_MAX_DIM:
        with report.step(f"lowest {n_modes} eigenpairs (dense)", timings, "eigensolver"):
            values, flat = lowest_eigenpairs(hessian, n_modes)
        return values, flat.T.reshape(n_modes, -1, 3), {"n_dof": n_dof, "solver": "dense eigh"}
    if n_dof <= ANM_DIRECT_MAX_DIM:
        with report.step(f"lowest {n_modes} eigenpairs (shift-invert)", timings, "eigensolver"):
            values, flat = rayleigh_sorted(hessian, shift_invert_lowest(hessian, n_modes))
        return (
            values,
            flat.T.reshape(n_modes, -1, 3),
            {"n_dof": n_dof, "solver": "shift-invert Lanczos (SuperLU)"},
        )
    mean_diag = float(hessian.diagonal().mean())
    shift = SHIFT_RELATIVE * mean_diag
    with report.step("coarse space and preconditioner", timings, "preconditioner"):
        basis = block_basis(coords_A, spatial_blocks(coords_A, PRECONDITIONER_BLOCK_NODES))
        coarse = rtb_hessian(coords_A, network, basis)
        p_matrix = basis_matrix(basis, coords_A)
        _, coarse_vectors = lowest_eigenpairs(coarse, min(n_modes, basis.n_dof))
        start = p_matrix @ coarse_vectors[:, N_RIGID:]
        preconditioner = two_level_preconditioner(hessian, p_matrix, coarse, shift)
    rigid = rigid_body_basis(coords_A).reshape(N_RIGID, -1).T
    tol = LOBPCG_TOL_RELATIVE * mean_diag
    with report.step(f"lowest {n_modes} eigenpairs (LOBPCG)", timings, "eigensolver"):
        flex_values, flex, residual = lobpcg_lowest(hessian, start, rigid, preconditioner, tol)
    solver = "LOBPCG, two-level preconditioner"
    if not np.all(residual <= 10 * tol):
        # Not converged (rare: e.g. clustered eigenvalues); fall back to the direct solver.
        with report.step("LOBPCG did not converge: shift-invert Lanczos", timings, "fallback"):
            values, flat = rayleigh_sorted(hessian, shift_invert_lowest(hessian, n_modes))
        return (
            values,
            flat.T.reshape(n_modes, -1, 3),
            {"n_dof": n_dof, "solver": "shift-invert Lanczos (SuperLU)"},
        )
    rigid_values = np.einsum("ik,ik->k", rigid, hessian @ rigid)
    values = np.concatenate([rigid_values, flex_values])
    flat = np.concatenate([rigid, flex], axis=1)
    return (
        values,
        flat.T.reshape(n_modes, -1, 3),
        {
            "n_dof": n_dof,
            "solver": solver,
            "coarse_blocks": basis.n_blocks,
        },
    )


def _check_zero_modes(values, vectors, network: Network, mean_diag: float, structure) -> None:
    """More than six zero eigenvalues: floppy parts. Say which nodes are under-connected."""
    n_zero = int(np.sum(values < ZERO_MODE_RELATIVE * mean_diag))
    if n_zero <= N_RIGID:
        return
    degree = np.bincount(network.pairs.ravel(), minlength=network.n_nodes)
    weak = np.flatnonzero(degree < 3)
    if weak.size == 0:
        # Name the atoms that move most in the first extra zero mode.
        extra = vectors[N_RIGID]
        weak = np.argsort(-np.einsum("na,na->n", extra, extra))[:3]
    names = ", ".join(
        f"{structure.chain_id[i]}:{structure.residue_name[i]}{structure.residue_seq[i]}:"
        f"{structure.atom_name[i]} ({degree[i]} springs)"
        for i in weak[:5]
    )
    count = f"at least {n_zero}" if n_zero == len(values) else str(n_zero)
    raise InputError(
        f"the elastic network has {count} zero modes instead of six: parts of it can move "
        f"without stretching any spring at cut-off {network.cutoff_A:g} Å (e.g. {names}); "
        "use a larger --cutoff, or remove loosely attached atoms (ions, ligands)",
        found=f"{n_zero} zero eigenvalues",
    )


def _finalize_vectors(coords_A: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Canonical rigid modes, exact orthonormality, deterministic signs.

    Modes 1–6 (a degenerate zero eigenspace, in which a solver returns an arbitrary basis)
    are replaced by the analytic rigid-body basis; the flexible modes are re-orthonormalized
    against it in order (Gram–Schmidt via QR), which changes them only at round-off level.
    """
    k, n, _ = vectors.shape
    flat = vectors.reshape(k, -1).T.copy()
    flat[:, :N_RIGID] = rigid_body_basis(coords_A).reshape(N_RIGID, -1).T
    q, r = np.linalg.qr(flat)
    q *= np.sign(np.diag(r))[None, :]
    return fix_signs(q.T.reshape(k, n, 3))


def fix_signs(vectors: np.ndarray) -> np.ndarray:
    """Flip each mode (K, N, 3) so that its largest-magnitude component is positive."""
    flat = vectors.reshape(vectors.shape[0], -1)
    pivot = flat[np.arange(flat.shape[0]), np.argmax(np.abs(flat), axis=1)]
    return vectors * np.where(pivot < 0, -1.0, 1.0)[:, None, None]


def _versions() -> dict:
    import scipy

    from deephemnma import __version__

    return {"deephemnma": __version__, "numpy": np.__version__, "scipy": scipy.__version__}


class _Reporter:
    """Status lines on stderr (rich) for steps that can take seconds; silent when disabled."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._console = None
        if enabled:
            from rich.console import Console

            self._console = Console(stderr=True, highlight=False)

    @contextmanager
    def step(self, message: str, timings: dict, key: str) -> Iterator[None]:
        start = time.perf_counter()
        if self._console is not None:
            with self._console.status(f"[nma] {message} …"):
                yield
        else:
            yield
        elapsed = time.perf_counter() - start
        timings[key] = round(timings.get(key, 0.0) + elapsed, 4)
        if self._console is not None:
            self._console.print(f"[dim]\\[nma][/dim] {message}: {elapsed:.2f} s")
