"""What normal modes say: collectivity, overlap with an observed change, subspace similarity.

Definitions used throughout (and in the CLI table):

* collectivity (Brüschweiler 1995): ``κ = exp(−Σ_i u_i² ln u_i²) / N`` with
  ``u_i² = |v_i|² / Σ_j |v_j|²`` (unit weights, as the network). κ = 1 when all N nodes move
  equally, 1/N when one node moves.
* overlap of mode k with a displacement d (Tama & Sanejouand 2001):
  ``O_k = |v_k · d| / (|v_k| |d|)`` on the matched atoms, the mode restricted to those atoms
  (and renormalized) when the modes were computed on more atoms (e.g. all heavy atoms,
  compared on CA).
* cumulative overlap of modes 1..k: the norm of the projection of d/|d| onto the span of the
  restricted modes. For orthonormal modes it is ``sqrt(Σ O_k²)`` (ProDy's calcCumulOverlap);
  restricted modes are not exactly orthogonal, and the projection keeps it ≤ 1.
* subspace overlap between two sets of K modes: the root mean square inner product
  ``RMSIP = sqrt(Σ_ij (a_i·b_j)² / K)`` (Amadei et al. 1999) — 1 for the same subspace;
  equal to the square root of the mean squared cosine of the principal angles.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from deephemnma.errors import InputError
from deephemnma.structure import Structure


def collectivity(vectors: np.ndarray) -> np.ndarray:
    """Brüschweiler collectivity of modes (K, N, 3) → (K,) in [1/N, 1]."""
    vectors = np.asarray(vectors, dtype=np.float64)
    sq = np.einsum("kna,kna->kn", vectors, vectors)
    u2 = sq / sq.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(u2 > 0, u2 * np.log(u2), 0.0).sum(axis=1)
    return np.exp(entropy) / vectors.shape[1]


def atom_keys(structure: Structure, use_chain: bool = True) -> np.ndarray:
    """(N,) strings "chain:resseq:atom" identifying atoms across two models."""
    parts = [
        np.char.strip(np.asarray(structure.residue_seq).astype(str)),
        np.char.strip(np.asarray(structure.atom_name).astype(str)),
    ]
    if use_chain:
        parts.insert(0, np.char.strip(np.asarray(structure.chain_id).astype(str)))
    key = parts[0]
    for part in parts[1:]:
        key = np.char.add(np.char.add(key, ":"), part)
    return key


def match_atoms(
    reference: Structure,
    target: Structure,
    atom_names: tuple[str, ...] | None = ("CA",),
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (ref_index, target_index) of atoms present in both, matched by chain, residue
    number and atom name (first occurrence wins, e.g. alternate locations).

    atom_names: restrict to these atom names (None: all matching atoms). If no atom matches
    with chains and each model has a single chain, chains are ignored (so chain A of one
    file can be compared with chain B of another).
    """
    ref_idx, tgt_idx = _match(reference, target, atom_names, use_chain=True)
    single = np.unique(reference.chain_id).size == 1 and np.unique(target.chain_id).size == 1
    if ref_idx.size == 0 and single:
        ref_idx, tgt_idx = _match(reference, target, atom_names, use_chain=False)
    if ref_idx.size < 3:
        names = "any" if atom_names is None else "/".join(atom_names)
        raise InputError(
            f"the target shares too few {names} atoms with the reference to superpose them "
            "(atoms are matched by chain, residue number and atom name)",
            expected="at least 3 matching atoms",
            found=str(ref_idx.size),
        )
    return ref_idx, tgt_idx


def _match(reference, target, atom_names, use_chain):
    ref_keys = atom_keys(reference, use_chain)
    tgt_keys = atom_keys(target, use_chain)
    ref_sel = np.arange(reference.n_atoms)
    if atom_names is not None:
        wanted = {a.strip() for a in atom_names}
        ref_sel = ref_sel[np.isin(np.char.strip(reference.atom_name.astype(str)), list(wanted))]
    first_in_target: dict[str, int] = {}
    for i, key in enumerate(tgt_keys):
        first_in_target.setdefault(str(key), i)
    seen: set[str] = set()
    pairs = []
    for i in ref_sel:
        key = str(ref_keys[i])
        if key in first_in_target and key not in seen:
            seen.add(key)
            pairs.append((i, first_in_target[key]))
    if not pairs:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    arr = np.asarray(pairs, dtype=np.int64)
    return arr[:, 0], arr[:, 1]


def kabsch(mobile_A: np.ndarray, fixed_A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation R (3, 3) and translation t (3,) minimizing ‖mobile Rᵀ + t − fixed‖ (M, 3)."""
    mobile_A = np.asarray(mobile_A, dtype=np.float64)
    fixed_A = np.asarray(fixed_A, dtype=np.float64)
    cm, cf = mobile_A.mean(0), fixed_A.mean(0)
    u, _, vt = np.linalg.svd((mobile_A - cm).T @ (fixed_A - cf))
    d = np.sign(np.linalg.det(vt.T @ u.T))  # no reflection
    rotation = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    return rotation, cf - cm @ rotation.T


def displacement_to_target(
    reference: Structure,
    target: Structure,
    atom_names: tuple[str, ...] | None = ("CA",),
) -> tuple[np.ndarray, np.ndarray]:
    """The change reference → target on matched atoms, after superposing the target onto
    the reference (Kabsch on those atoms). Returns (ref_index (M,), displacement_A (M, 3))."""
    ref_idx, tgt_idx = match_atoms(reference, target, atom_names)
    ref_xyz = reference.coords_A[ref_idx]
    rotation, shift = kabsch(target.coords_A[tgt_idx], ref_xyz)
    moved = target.coords_A[tgt_idx] @ rotation.T + shift
    return ref_idx, moved - ref_xyz


def mode_overlaps(vectors: np.ndarray, atom_index: np.ndarray, displacement_A: np.ndarray):
    """|cos| between each mode (K, N, 3), restricted to ``atom_index``, and a displacement
    (M, 3). Returns (K,)."""
    sub = np.asarray(vectors)[:, atom_index, :].reshape(len(vectors), -1)
    d = np.asarray(displacement_A, dtype=np.float64).ravel()
    norms = np.linalg.norm(sub, axis=1) * np.linalg.norm(d)
    return np.abs(sub @ d) / np.where(norms > 0, norms, np.inf)


def cumulative_overlaps(vectors: np.ndarray, atom_index: np.ndarray, displacement_A: np.ndarray):
    """Cumulative overlap after each mode (K,): ‖projection of d̂ on span(modes 1..k)‖."""
    sub = np.asarray(vectors)[:, atom_index, :].reshape(len(vectors), -1).T  # (3M, K)
    d = np.asarray(displacement_A, dtype=np.float64).ravel()
    d = d / np.linalg.norm(d)
    q, r = np.linalg.qr(sub)
    # Columns with no new direction (zero on the selected atoms) add nothing.
    coeff = np.where(np.abs(np.diag(r)) > 1e-12, q.T @ d, 0.0)
    return np.sqrt(np.cumsum(coeff**2))


def subspace_overlap(a: np.ndarray, b: np.ndarray) -> float:
    """RMSIP between two sets of K modes, each (K, N, 3) or (K, 3N), same atoms."""
    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    inner = a @ b.T
    return float(np.sqrt((inner**2).sum() / min(len(a), len(b))))


@dataclass(frozen=True)
class TargetComparison:
    """Overlap of modes with the change reference → target (see module docstring).

    mode_numbers, overlap, cumulative: (K,). n_matched: atoms compared.
    rmsd_A: RMSD after superposition on those atoms.
    """

    mode_numbers: np.ndarray
    overlap: np.ndarray
    cumulative: np.ndarray
    n_matched: int
    rmsd_A: float
    atom_names: tuple[str, ...] | None


def compare_with_target(
    modes,
    target: Structure,
    atom_names: tuple[str, ...] | None = ("CA",),
    mode_numbers=None,
) -> TargetComparison:
    """Per-mode and cumulative overlap of ``modes`` (a :class:`~deephemnma.nma.Modes`) with
    the displacement toward ``target``, on matched ``atom_names`` (CA by default).

    The cumulative overlap runs over the flexible modes in the order given (rigid modes 1–6
    are skipped: the superposition removed rigid motion).
    """
    if mode_numbers is not None:
        modes = modes.select(mode_numbers)
    ref_idx, disp = displacement_to_target(modes.structure, target, atom_names)
    flexible = modes.mode_numbers > 6
    overlap = mode_overlaps(modes.vectors, ref_idx, disp)
    cumulative = np.full(modes.n_modes, np.nan)
    if flexible.any():
        cumulative[flexible] = cumulative_overlaps(modes.vectors[flexible], ref_idx, disp)
    return TargetComparison(
        mode_numbers=modes.mode_numbers.copy(),
        overlap=overlap,
        cumulative=cumulative,
        n_matched=int(ref_idx.size),
        rmsd_A=float(np.sqrt(np.mean(np.sum(disp**2, axis=1)))),
        atom_names=atom_names,
    )


def interpolate_vectors(
    vectors: np.ndarray,
    coords_A: np.ndarray,
    points_A: np.ndarray,
    sigma_A: float = 2.0,
    n_neighbours: int = 16,
) -> np.ndarray:
    """Mode vectors (K, N, 3) given on atoms at ``coords_A`` (N, 3), carried to other points
    (M, 3) as Gaussian-weighted (σ = ``sigma_A``) averages over the nearest atoms, then
    renormalized to unit norm over 3M. Used to compare atomic and pseudoatomic modes."""
    coords_A = np.asarray(coords_A, dtype=np.float64)
    points_A = np.asarray(points_A, dtype=np.float64)
    k = min(n_neighbours, coords_A.shape[0])
    dist_A, idx = cKDTree(coords_A).query(points_A, k=k)
    dist_A, idx = dist_A.reshape(len(points_A), k), idx.reshape(len(points_A), k)
    # Subtract the nearest distance so far points still get a well-defined average.
    weight = np.exp(-0.5 * ((dist_A - dist_A[:, :1]) / sigma_A) ** 2)
    weight /= weight.sum(axis=1, keepdims=True)
    out = np.einsum("mj,kmja->kma", weight, np.asarray(vectors)[:, idx, :])
    norms = np.linalg.norm(out.reshape(len(out), -1), axis=1)
    return out / np.where(norms > 0, norms, 1.0)[:, None, None]
