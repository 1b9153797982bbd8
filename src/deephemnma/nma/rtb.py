"""Rotation–translation blocks (RTB; Tama, Gadea, Marques & Sanejouand 2000).

Consecutive residues are grouped into rigid blocks of ``block_residues`` residues; each block
may only translate and rotate about its centroid, so the 3N-dimensional problem shrinks to
(at most) 6 degrees of freedom per block. With P the 3N × 6B matrix whose columns are the
rigid motions of each block, orthonormalized block by block, the low modes are
``P x`` where ``(Pᵀ H P) x = λ x``.

The projected Hessian is accumulated spring by spring without ever forming H or P: a spring
between atoms i (block a) and j (block b) along the unit vector u stretches by
``u·(δ_j − δ_i) = g_jᵀ ξ_b − g_iᵀ ξ_a`` with ``g = S_blockᵀ [u, (r − c_block) × u]``
(S_block orthonormalizes the block's six generators), so it adds ``γ g gᵀ`` terms to the
four 6×6 blocks (a,a), (b,b), (a,b), (b,a). Springs inside a block never stretch under a
rigid motion and drop out, which is why RTB at 165,000 atoms is cheap.

Nodes have unit weight (as in ANM): block centers are centroids and the modes are
orthonormal in plain Cartesian space, so they are unit-norm 3N vectors as CONVENTIONS asks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.spatial import cKDTree

from deephemnma.errors import InputError
from deephemnma.nma.network import Network

# Two consecutive residues belong to the same chain segment only if some pair of their atoms
# is this close (Å): a peptide or phosphodiester bond is ~1.3–1.6 Å, consecutive CA ~3.8 Å,
# consecutive P ≤ ~7.5 Å. Ions and ligands numbered after a chain, or chain breaks, start new
# blocks instead of being welded rigidly to distant residues.
SEGMENT_LINK_A = 8.0

# Chunk of springs processed at once when accumulating the projected Hessian (memory bound).
_CHUNK = 250_000


@dataclass(frozen=True)
class BlockBasis:
    """Orthonormal rigid-body generators of each block.

    block_of_atom: (N,) int block index of each atom.
    center_A: (B, 3) block centroids (Å).
    n_atoms: (B,) atoms per block.
    rot_axes: (B, 3, 3) columns are rotation generators scaled by 1/√(moment) (1/Å);
        zero for rotations that move nothing (one atom, or the axis of a straight block).
    dof_index: (B, 6) column of each block DOF in the reduced matrix, −1 where dropped.
    n_dof: number of kept DOFs (columns of the reduced problem).
    """

    block_of_atom: np.ndarray
    center_A: np.ndarray
    n_atoms: np.ndarray
    rot_axes: np.ndarray
    dof_index: np.ndarray
    n_dof: int

    @property
    def n_blocks(self) -> int:
        return int(self.center_A.shape[0])


def residue_blocks(
    structure,
    block_residues: int,
    link_A: float = SEGMENT_LINK_A,
    network: Network | None = None,
) -> np.ndarray:
    """(N,) block index of each atom: runs of ``block_residues`` consecutive residues.

    A new run starts at each chain change and wherever two consecutive residues have no pair
    of atoms within ``link_A`` (chain break, ion or ligand), so a block is always a piece of
    one connected chain segment. ``network`` (optional) supplies the atom pairs when its
    cut-off covers ``link_A``, saving a second neighbour search.
    """
    if block_residues < 1:
        raise InputError(
            "the RTB block size must be at least one residue", found=str(block_residues)
        )
    residue = structure.residue_keys()
    n_res = int(residue[-1]) + 1
    chain = np.asarray(structure.chain_id).astype(str)
    first_atom = np.searchsorted(residue, np.arange(n_res))
    if network is not None and network.cutoff_A >= link_A:
        pairs = network.pairs[network.length_A <= link_A]
    else:
        pairs = cKDTree(structure.coords_A).query_pairs(link_A, output_type="ndarray")
    linked = _linked_to_previous(pairs, residue, n_res)
    same_chain = np.ones(n_res, dtype=bool)
    same_chain[1:] = chain[first_atom[1:]] == chain[first_atom[:-1]]
    new_segment = ~(linked & same_chain)
    new_segment[0] = True
    segment = np.cumsum(new_segment) - 1
    segment_start = np.flatnonzero(new_segment)
    position = np.arange(n_res) - segment_start[segment]
    block_key = np.stack([segment, position // block_residues], axis=1)
    change = np.ones(n_res, dtype=bool)
    change[1:] = np.any(block_key[1:] != block_key[:-1], axis=1)
    block_of_residue = np.cumsum(change) - 1
    return block_of_residue[residue]


def _linked_to_previous(pairs: np.ndarray, residue: np.ndarray, n_res: int) -> np.ndarray:
    """(R,) bool: residue r has an atom paired (in ``pairs``) with an atom of residue r − 1."""
    ri, rj = residue[pairs[:, 0]], residue[pairs[:, 1]]
    step = np.abs(ri - rj) == 1
    linked = np.zeros(n_res, dtype=bool)
    linked[np.maximum(ri[step], rj[step])] = True
    return linked


def block_basis(coords_A: np.ndarray, block_of_atom: np.ndarray) -> BlockBasis:
    """Orthonormal translation/rotation generators of each block (see :class:`BlockBasis`).

    For a block with centroid c and atoms x_i = r_i − c, the translations have Gram matrix
    n·I and the rotations the inertia tensor Σ(|x|² I − x xᵀ); translations and rotations
    are orthogonal. Rotations about the inertia eigenvectors q_k scaled by 1/√μ_k are
    orthonormal; those with μ_k ≈ 0 (no motion) are dropped.
    """
    coords_A = np.asarray(coords_A, dtype=np.float64)
    n_blocks = int(block_of_atom.max()) + 1
    n_atoms = np.bincount(block_of_atom, minlength=n_blocks).astype(np.float64)
    center_A = (
        np.stack([np.bincount(block_of_atom, coords_A[:, a], n_blocks) for a in range(3)], axis=1)
        / n_atoms[:, None]
    )
    x = coords_A - center_A[block_of_atom]
    # Inertia tensor per block: Σ (|x|² δ_ab − x_a x_b).
    outer = np.zeros((n_blocks, 3, 3))
    for a in range(3):
        for b in range(a, 3):
            outer[:, a, b] = outer[:, b, a] = np.bincount(
                block_of_atom, x[:, a] * x[:, b], n_blocks
            )
    inertia = np.trace(outer, axis1=1, axis2=2)[:, None, None] * np.eye(3) - outer
    moments, axes = np.linalg.eigh(inertia)
    scale = np.maximum(moments.max(axis=1, keepdims=True), 1e-12)
    keep_rot = moments > 1e-8 * scale
    rot_axes = np.where(
        keep_rot[:, None, :], axes / np.sqrt(np.where(keep_rot, moments, 1.0))[:, None, :], 0.0
    )
    keep = np.concatenate([np.ones((n_blocks, 3), dtype=bool), keep_rot], axis=1)
    dof_index = np.full((n_blocks, 6), -1, dtype=np.int64)
    dof_index[keep] = np.arange(int(keep.sum()))
    return BlockBasis(
        block_of_atom=np.asarray(block_of_atom, dtype=np.int64),
        center_A=center_A,
        n_atoms=n_atoms,
        rot_axes=rot_axes,
        dof_index=dof_index,
        n_dof=int(keep.sum()),
    )


def _generators(
    basis: BlockBasis, coords_A: np.ndarray, atoms: np.ndarray, unit: np.ndarray
) -> np.ndarray:
    """(P, 6) projection of a unit spring direction at each atom onto its block's DOFs."""
    block = basis.block_of_atom[atoms]
    trans = unit / np.sqrt(basis.n_atoms[block])[:, None]
    lever = np.cross(coords_A[atoms] - basis.center_A[block], unit)
    rot = np.einsum("pak,pa->pk", basis.rot_axes[block], lever)
    return np.concatenate([trans, rot], axis=1)


def rtb_hessian(coords_A: np.ndarray, network: Network, basis: BlockBasis) -> sp.csr_matrix:
    """Projected Hessian Pᵀ H P (n_dof, n_dof), sparse, from the springs of ``network``."""
    coords_A = np.asarray(coords_A, dtype=np.float64)
    blk = basis.block_of_atom
    inter = np.flatnonzero(blk[network.pairs[:, 0]] != blk[network.pairs[:, 1]])
    n_blocks = basis.n_blocks
    a_all = blk[network.pairs[inter, 0]]
    b_all = blk[network.pairs[inter, 1]]
    lo, hi = np.minimum(a_all, b_all), np.maximum(a_all, b_all)
    # Accumulate the 6×6 blocks per (row block, column block) key; the off-diagonal block
    # of a pair of blocks is stored once, as (lower, higher).
    keys = np.concatenate([a_all * n_blocks + a_all, b_all * n_blocks + b_all, lo * n_blocks + hi])
    unique_keys, slot = np.unique(keys, return_inverse=True)
    del keys
    n_inter = inter.size
    acc = np.zeros((unique_keys.size, 36))
    for start in range(0, n_inter, _CHUNK):
        stop = min(start + _CHUNK, n_inter)
        springs = inter[start:stop]
        i, j = network.pairs[springs, 0], network.pairs[springs, 1]
        u = network.direction[springs]
        w = network.gamma[springs]
        gi = _generators(basis, coords_A, i, u)
        gj = _generators(basis, coords_A, j, u)
        swap = (a_all[start:stop] > b_all[start:stop])[:, None]
        g_lo, g_hi = np.where(swap, gj, gi), np.where(swap, gi, gj)
        parts = (
            (slot[start:stop], gi, gi, w),
            (slot[n_inter + start : n_inter + stop], gj, gj, w),
            (slot[2 * n_inter + start : 2 * n_inter + stop], g_lo, g_hi, -w),
        )
        count = stop - start
        for where, left, right, weight in parts:
            outer = ((left * weight[:, None])[:, :, None] * right[:, None, :]).reshape(count, 36)
            # Summing rows by key is a sparse (keys × springs) indicator times the products.
            indicator = sp.csr_matrix(
                (np.ones(count), (where, np.arange(count))), shape=(unique_keys.size, count)
            )
            acc += indicator @ outer
    acc = acc.reshape(-1, 6, 6)
    row_block, col_block = np.divmod(unique_keys, n_blocks)
    rows = basis.dof_index[row_block][:, :, None].repeat(6, axis=2)
    cols = basis.dof_index[col_block][:, None, :].repeat(6, axis=1)
    off = row_block != col_block
    rows_all = np.concatenate([rows.ravel(), cols[off].ravel()])
    cols_all = np.concatenate([cols.ravel(), rows[off].ravel()])
    vals_all = np.concatenate([acc.ravel(), acc[off].ravel()])
    kept = (rows_all >= 0) & (cols_all >= 0)
    return sp.csr_matrix(
        (vals_all[kept], (rows_all[kept], cols_all[kept])), shape=(basis.n_dof, basis.n_dof)
    )


def basis_matrix(basis: BlockBasis, coords_A: np.ndarray) -> sp.csr_matrix:
    """P, the (3N, n_dof) sparse matrix of orthonormal rigid-block motions."""
    coords_A = np.asarray(coords_A, dtype=np.float64)
    n = coords_A.shape[0]
    atoms = np.arange(n)
    rows, cols, vals = [], [], []
    for a in range(3):
        axis = np.zeros((n, 3))
        axis[:, a] = 1.0
        # Component a of each generator at each atom = projection of e_a onto the DOFs.
        g = _generators(basis, coords_A, atoms, axis)
        for d in range(6):
            col = basis.dof_index[basis.block_of_atom, d]
            keep = (col >= 0) & (g[:, d] != 0.0)
            rows.append(3 * atoms[keep] + a)
            cols.append(col[keep])
            vals.append(g[keep, d])
    return sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(3 * n, basis.n_dof),
    )


def spatial_blocks(coords_A: np.ndarray, nodes_per_block: float = 10.0) -> np.ndarray:
    """(N,) block index from a cubic grid with about ``nodes_per_block`` nodes per cell.

    Used for the coarse space of the full-ANM preconditioner, where blocks need not follow
    residues (pseudoatoms have none). The cell edge is adjusted a few times so that the
    mean occupancy of non-empty cells matches the target.
    """
    coords_A = np.asarray(coords_A, dtype=np.float64)
    n = coords_A.shape[0]
    low = coords_A.min(0)
    dist_A, _ = cKDTree(coords_A).query(coords_A, k=2)
    edge_A = max(float(np.median(dist_A[:, 1])), 1e-3) * nodes_per_block ** (1 / 3)
    for _ in range(4):
        cell = np.floor((coords_A - low) / edge_A).astype(np.int64)
        _, block = np.unique(cell, axis=0, return_inverse=True)
        occupancy = n / (int(block.max()) + 1)
        edge_A *= (nodes_per_block / occupancy) ** (1 / 3)
    return block.ravel().astype(np.int64)


def expand_to_atoms(basis: BlockBasis, coords_A: np.ndarray, reduced: np.ndarray) -> np.ndarray:
    """Atomic displacements (K, N, 3) of reduced vectors ``reduced`` (n_dof, K).

    Each block moves rigidly: δ_i = t_b + ω_b × (r_i − c_b) with t = ξ_trans/√n and
    ω = Σ_k ξ_rot,k q_k/√μ_k.
    """
    coords_A = np.asarray(coords_A, dtype=np.float64)
    n_modes = reduced.shape[1]
    xi = np.zeros((basis.n_blocks, 6, n_modes))
    kept = basis.dof_index >= 0
    xi[kept] = reduced[basis.dof_index[kept]]
    trans = xi[:, :3, :] / np.sqrt(basis.n_atoms)[:, None, None]  # (B, 3, K)
    omega = np.einsum("bak,bkm->bam", basis.rot_axes, xi[:, 3:, :])  # (B, 3, K)
    blk = basis.block_of_atom
    x = coords_A - basis.center_A[blk]  # (N, 3)
    out = np.empty((n_modes, coords_A.shape[0], 3))
    for m in range(n_modes):
        out[m] = trans[blk, :, m] + np.cross(omega[blk, :, m], x)
    return out
