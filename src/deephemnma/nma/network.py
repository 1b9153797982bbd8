"""Elastic network (Tirion 1996 / ANM, Atilgan et al. 2001): contacts, cutoff, sparse Hessian.

Every pair of nodes (atoms or pseudoatoms) closer than ``cutoff_A`` is joined by a Hookean
spring of stiffness ``gamma`` whose rest length is the distance in the reference. With a
uniform ``gamma`` the Tirion potential and the anisotropic network model (ANM) are the same
model, ``E = Σ_pairs (γ/2) (|r_ij| − |r⁰_ij|)²``, and its Hessian is made of 3×3 blocks
``H_ij = −γ u_ij u_ijᵀ`` (``u_ij`` the unit vector from i to j) with ``H_ii = −Σ_j H_ij``.
Eigenvalues are in the units of ``gamma`` (energy/Å²); the modes do not depend on ``gamma``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from deephemnma.errors import InputError

# ContinuousFlex (Scipion) defaults: an absolute cut-off of 8 Å for atoms; for pseudoatoms the
# "relative" cut-off, the 95th percentile of the distances from each node to its nearest
# neighbours (Xmipp ``pdb_analysis --operation distance_histogram``, 3 nearest neighbours).
CONTINUOUSFLEX_CUTOFF_A = 8.0
CONTINUOUSFLEX_CUTOFF_PERCENTILE = 95.0
CONTINUOUSFLEX_N_NEAREST = 3
# Coarse-grained models (one node per residue: CA, CA+P) need a longer range than atoms:
# 15 Å is the usual ANM value for CA (ProDy's default); the paper's CA+P ribosome used 20 Å.
COARSE_CUTOFF_A = 15.0
COARSE_NUCLEIC_CUTOFF_A = 20.0

MIN_NODES = 4


@dataclass(frozen=True)
class Network:
    """Springs of an elastic network.

    pairs: (P, 2) int64 node indices, i < j.
    direction: (P, 3) float64 unit vectors from node i to node j (dimensionless).
    length_A: (P,) float64 rest lengths (Å).
    gamma: (P,) float64 spring constants (energy/Å²).
    n_nodes: number of nodes.
    cutoff_A: the interaction radius used.
    """

    pairs: np.ndarray
    direction: np.ndarray
    length_A: np.ndarray
    gamma: np.ndarray
    n_nodes: int
    cutoff_A: float

    @property
    def n_springs(self) -> int:
        return int(self.pairs.shape[0])


def is_pseudoatomic(structure) -> bool:
    """True for a pseudoatom model (map → Gaussians): flagged in metadata or Xmipp's "DENS"."""
    if structure.metadata.get("pseudoatoms"):
        return True
    # Xmipp names them DENS; a PDB round trip keeps the atom name but cuts the residue name
    # to its 3 columns (DEN).
    atoms = np.char.strip(np.asarray(structure.atom_name).astype(str))
    residues = np.char.strip(np.asarray(structure.residue_name).astype(str))
    return bool(atoms.size) and bool(
        np.all(residues == "DENS") or np.all((atoms == "DENS") & np.isin(residues, ["DEN", "DENS"]))
    )


def is_coarse_grained(structure) -> bool:
    """True when the model has about one node per residue (CA, CA+P traces)."""
    n_residues = int(structure.residue_keys()[-1]) + 1 if structure.n_atoms else 0
    return structure.n_atoms > 0 and structure.n_atoms <= 1.5 * n_residues


def percentile_cutoff_A(
    coords_A: np.ndarray,
    percentile: float = CONTINUOUSFLEX_CUTOFF_PERCENTILE,
    n_nearest: int = CONTINUOUSFLEX_N_NEAREST,
) -> float:
    """ContinuousFlex's relative cut-off: the given percentile of the distances (Å) from every
    node to its ``n_nearest`` nearest neighbours. coords_A: (N, 3)."""
    coords_A = np.asarray(coords_A, dtype=np.float64)
    k = min(n_nearest, coords_A.shape[0] - 1)
    if k < 1:
        raise InputError("need at least 2 nodes to derive a cut-off from neighbour distances")
    dist_A, _ = cKDTree(coords_A).query(coords_A, k=k + 1)
    return float(np.percentile(dist_A[:, 1:], percentile))


def default_cutoff(structure) -> tuple[float, str]:
    """The cut-off used when none is given (Å), and the name of the rule that chose it.

    * pseudoatoms: ContinuousFlex's relative rule, the 95th percentile of the distances
      from each node to its 3 nearest neighbours;
    * one node per residue with nucleotides (CA+P): 20 Å, the paper's ribosome value
      (P atoms are ~6–7 Å apart; at 15 Å a flipped-out nucleotide of 6ZU5 keeps 2 springs);
    * one node per residue, protein only (CA): 15 Å, the usual ANM value (ProDy's default);
    * atoms: ContinuousFlex's absolute default, 8 Å.
    """
    if is_pseudoatomic(structure):
        return percentile_cutoff_A(structure.coords_A), "continuousflex-relative-95th-percentile"
    if is_coarse_grained(structure):
        if np.any(np.char.strip(np.asarray(structure.atom_name).astype(str)) == "P"):
            return COARSE_NUCLEIC_CUTOFF_A, "coarse-grained-with-P-20A"
        return COARSE_CUTOFF_A, "coarse-grained-15A"
    return CONTINUOUSFLEX_CUTOFF_A, "continuousflex-absolute-8A"


def default_cutoff_A(structure) -> float:
    """The cut-off (Å) used when none is given; see :func:`default_cutoff`."""
    return default_cutoff(structure)[0]


def check_nodes(coords_A: np.ndarray, what: str = "selection") -> np.ndarray:
    """Validate node coordinates (N, 3): at least 4 nodes, finite, not all on a line."""
    coords_A = np.asarray(coords_A, dtype=np.float64)
    if coords_A.ndim != 2 or coords_A.shape[1] != 3:
        raise InputError("coordinates must be an (N, 3) array", found=str(coords_A.shape))
    n = coords_A.shape[0]
    if n == 0:
        raise InputError(
            f"the {what} is empty: no atoms to build an elastic network from",
            expected="at least 4 atoms (check --selection and the chains in the model)",
            found="0",
        )
    if n < MIN_NODES:
        raise InputError(
            f"the {what} has too few atoms for normal-mode analysis",
            expected=f"at least {MIN_NODES} atoms",
            found=str(n),
        )
    if not np.all(np.isfinite(coords_A)):
        raise InputError(f"the {what} has non-finite coordinates (NaN or inf)")
    spread = np.linalg.svd(coords_A - coords_A.mean(0), compute_uv=False)
    if spread[1] <= 1e-6 * max(spread[0], 1e-12):
        raise InputError(
            f"the {what}'s atoms lie on a line: a rigid rotation about that line is not defined",
            found=f"{n} collinear atoms",
        )
    return coords_A


def build_network(
    coords_A: np.ndarray, cutoff_A: float, gamma: float = 1.0, check_connected: bool = True
) -> Network:
    """All springs of the network: pairs within ``cutoff_A`` (distance ≤ cutoff, as ProDy).

    coords_A: (N, 3) Å. Raises :class:`InputError` for fewer than 4 nodes, duplicate atoms
    (zero-length springs), or a disconnected network (which would have more than six zero
    modes) with a suggestion to use a larger cut-off.
    """
    coords_A = check_nodes(coords_A)
    if not np.isfinite(cutoff_A) or cutoff_A <= 0:
        raise InputError(
            "the cut-off must be a positive distance", expected="> 0 Å", found=f"{cutoff_A}"
        )
    if not np.isfinite(gamma) or gamma <= 0:
        raise InputError("the spring constant gamma must be positive", found=f"{gamma}")
    n = coords_A.shape[0]
    pairs = cKDTree(coords_A).query_pairs(float(cutoff_A), output_type="ndarray")
    pairs = pairs.astype(np.int64, copy=False).reshape(-1, 2)
    # Sorted pairs keep the Hessian and the RTB accumulation deterministic.
    order = np.lexsort((pairs[:, 1], pairs[:, 0]))
    pairs = pairs[order]
    delta_A = coords_A[pairs[:, 1]] - coords_A[pairs[:, 0]]
    length_A = np.sqrt(np.einsum("pk,pk->p", delta_A, delta_A))
    if np.any(length_A < 1e-6):
        i, j = pairs[np.argmin(length_A)]
        raise InputError(
            "two atoms sit at the same position (a zero-length spring)",
            found=f"atoms {i} and {j}; remove duplicates or alternate locations",
        )
    if check_connected:
        check_connectivity(n, pairs, cutoff_A)
    return Network(
        pairs=pairs,
        direction=delta_A / length_A[:, None],
        length_A=length_A,
        gamma=np.full(pairs.shape[0], float(gamma)),
        n_nodes=n,
        cutoff_A=float(cutoff_A),
    )


def check_connectivity(n_nodes: int, pairs: np.ndarray, cutoff_A: float) -> None:
    """Raise :class:`InputError` if the contact graph has more than one component."""
    graph = sp.coo_matrix(
        (np.ones(pairs.shape[0], dtype=np.int8), (pairs[:, 0], pairs[:, 1])),
        shape=(n_nodes, n_nodes),
    )
    n_comp, label = connected_components(graph, directed=False)
    if n_comp > 1:
        sizes = np.sort(np.bincount(label))[::-1]
        shown = ", ".join(str(s) for s in sizes[:5]) + (", …" if n_comp > 5 else "")
        raise InputError(
            f"the elastic network is disconnected at cut-off {cutoff_A:g} Å: {n_comp} separate "
            f"pieces (sizes {shown}) would give {6 * n_comp} zero modes instead of six; "
            "use a larger --cutoff or select fewer, connected chains",
            found=f"{n_comp} components",
        )


def anm_hessian(network: Network) -> sp.csr_matrix:
    """The (3N, 3N) sparse Hessian of the network (symmetric, positive semi-definite)."""
    n = network.n_nodes
    i, j = network.pairs[:, 0], network.pairs[:, 1]
    u = network.direction
    # Off-diagonal super-element −γ u uᵀ for each spring (P, 3, 3); it is symmetric, so the
    # (j, i) block is the same matrix.
    block = -network.gamma[:, None, None] * (u[:, :, None] * u[:, None, :])
    flat = block.reshape(-1, 9)
    diag = np.stack(
        [-(np.bincount(i, flat[:, c], n) + np.bincount(j, flat[:, c], n)) for c in range(9)],
        axis=1,
    ).reshape(n, 3, 3)
    # Assemble 3×3 blocks in block-row order (BSR), then convert: cheaper than 9 COO entries
    # per block through a general sparse constructor.
    block_row = np.concatenate([i, j, np.arange(n)])
    block_col = np.concatenate([j, i, np.arange(n)])
    order = np.argsort(block_row * n + block_col, kind="stable")
    data = np.concatenate([block, block, diag])[order]
    indptr = np.concatenate([[0], np.cumsum(np.bincount(block_row, minlength=n))])
    return sp.bsr_matrix((data, block_col[order], indptr), shape=(3 * n, 3 * n)).tocsr()


def rayleigh_quotients(network: Network, vectors: np.ndarray, chunk: int = 500_000) -> np.ndarray:
    """Rayleigh quotients vᵀHv / vᵀv of displacements (K, N, 3), summed spring by spring.

    Equals Σ_springs γ (u·(v_j − v_i))² / |v|² — the elastic energy without forming H, so it
    checks eigenvalues of any method (for RTB modes, P orthonormal makes it the RTB
    eigenvalue).
    """
    out = np.zeros(vectors.shape[0])
    for start in range(0, network.n_springs, chunk):
        stop = min(start + chunk, network.n_springs)
        i, j = network.pairs[start:stop, 0], network.pairs[start:stop, 1]
        stretch = np.einsum(
            "kpa,pa->kp", vectors[:, j] - vectors[:, i], network.direction[start:stop]
        )
        out += (stretch**2) @ network.gamma[start:stop]
    return out / np.einsum("kna,kna->k", vectors, vectors)


def rigid_body_basis(coords_A: np.ndarray) -> np.ndarray:
    """Orthonormal basis (6, N, 3) of rigid-body motions of N nodes with unit weights.

    Translations along x, y, z, then rotations about the principal axes of the node cloud
    through its centroid (smallest moment first), each unit-norm over 3N. Translations are
    orthogonal to rotations because the centroid is the origin; rotations about principal
    axes are mutually orthogonal because the inertia tensor is diagonal in that frame.
    """
    coords_A = np.asarray(coords_A, dtype=np.float64)
    n = coords_A.shape[0]
    x = coords_A - coords_A.mean(0)
    basis = np.zeros((6, n, 3))
    for a in range(3):
        basis[a, :, a] = 1.0 / np.sqrt(n)
    inertia = np.eye(3) * np.einsum("ik,ik->", x, x) - x.T @ x
    moments, axes = np.linalg.eigh(inertia)
    for k in range(3):
        axis = axes[:, k] * np.sign(axes[np.argmax(np.abs(axes[:, k])), k])
        basis[3 + k] = np.cross(axis[None, :], x) / np.sqrt(max(moments[k], 1e-300))
    return basis
