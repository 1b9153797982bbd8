"""Lowest eigenpairs of symmetric positive semi-definite matrices (Hessians).

Regimes, picked by size (timings on 2 CPU cores in docs/nma.md):

* dimension ≤ ``DENSE_MAX_DIM``: dense LAPACK ``eigh`` restricted to the wanted indices.
* larger, RTB-reduced matrices (≤ ~10⁴): shift-invert Lanczos (ARPACK ``eigsh``) around a
  small negative shift σ, with ``K − σI`` (positive definite) factored by SuperLU in
  symmetric mode (minimum-degree ordering on AᵀA+A, diagonal pivots). 0.3 s for the
  8,750-DOF ribosome RTB matrix; a dense Cholesky took 8 s.
* full ANM of large systems: LOBPCG in the complement of the rigid-body motions, started from
  RTB modes and preconditioned by a two-level V-cycle (3×3 block Jacobi + a rigid-block
  coarse space), see :func:`two_level_preconditioner`. On the ribosome's 14,219 CA+P nodes
  at 20 Å: 4 s and 0.8 GB, eigenvalues within 1e-9 of a direct shift-invert solve, which
  itself needs 38 s and 3 GB (SuperLU fill-in on the 42,657 × 42,657 Hessian).

Eigenvalues are returned as Rayleigh quotients with the original matrix.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.linalg as la
import scipy.sparse as sp
from scipy.sparse.linalg import LinearOperator, eigsh, lobpcg, splu

DENSE_MAX_DIM = 3000
# Shift for shift-invert, relative to the mean diagonal: small enough that the wanted
# eigenvalues dominate after inversion, large enough that K − σI is well conditioned.
SHIFT_RELATIVE = 1e-5


def lowest_eigenpairs(matrix, n: int, shift_relative: float = SHIFT_RELATIVE):
    """The ``n`` lowest eigenpairs of a symmetric PSD matrix (dense or scipy sparse).

    Returns (values (n,), vectors (dim, n)) in increasing order, vectors orthonormal.
    """
    dim = matrix.shape[0]
    n = min(n, dim)
    if dim <= DENSE_MAX_DIM:
        dense = matrix.toarray() if sp.issparse(matrix) else np.asarray(matrix)
        _, vectors = la.eigh(dense, subset_by_index=[0, n - 1], driver="evr")
    else:
        vectors = shift_invert_lowest(sp.csr_matrix(matrix), n, shift_relative)
    return rayleigh_sorted(matrix, vectors)


def sparse_factor(matrix: sp.spmatrix, shift: float) -> Callable[[np.ndarray], np.ndarray]:
    """Solver for ``(matrix + shift·I) x = b`` (SPD) by SuperLU in symmetric mode."""
    dim = matrix.shape[0]
    shifted = (matrix + shift * sp.identity(dim, format="csr")).tocsc()
    lu = splu(
        shifted, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options={"SymmetricMode": True}
    )
    return lambda b: lu.solve(np.asarray(b, dtype=np.float64))


def shift_invert_lowest(matrix: sp.csr_matrix, n: int, shift_relative: float = SHIFT_RELATIVE):
    """(dim, n) eigenvectors of the ``n`` lowest eigenvalues, by shift-invert Lanczos."""
    dim = matrix.shape[0]
    sigma = -shift_relative * float(matrix.diagonal().mean())
    solve = sparse_factor(matrix, -sigma)
    v0 = np.random.default_rng(0).standard_normal(dim)  # fixed start: reproducible runs
    _, vectors = eigsh(
        matrix,
        k=n,
        sigma=sigma,
        which="LM",
        tol=0,
        v0=v0,
        OPinv=LinearOperator((dim, dim), matvec=solve, dtype=np.float64),
        ncv=min(dim, max(2 * n + 1, n + 20)),
    )
    return vectors


def rayleigh_sorted(matrix, vectors: np.ndarray):
    """Rayleigh quotients of orthonormal ``vectors`` (dim, n), sorted increasingly."""
    vectors = np.asarray(vectors)
    values = np.einsum("ik,ik->k", vectors, matrix @ vectors)
    order = np.argsort(values, kind="stable")
    return values[order], vectors[:, order]


def two_level_preconditioner(
    hessian: sp.csr_matrix,
    coarse_basis: sp.csr_matrix,
    coarse_matrix: sp.spmatrix,
    shift: float,
) -> LinearOperator:
    """Symmetric two-level V-cycle approximating ``(H + shift·I)⁻¹``, for LOBPCG.

    hessian: (3N, 3N). coarse_basis: P, (3N, D) orthonormal rigid-block motions.
    coarse_matrix: PᵀHP, (D, D). Smoother: damped 3×3 block Jacobi (pre and post). Low
    modes of an elastic network are nearly rigid-block motions, which Jacobi cannot damp; the
    coarse correction ``P (PᵀHP + shift·I)⁻¹ Pᵀ`` removes them.
    """
    dim = hessian.shape[0]
    n_nodes = dim // 3
    inv_blocks = np.linalg.inv(_diagonal_blocks(hessian, n_nodes) + shift * np.eye(3))
    omega = 0.6  # Jacobi damping keeps the smoother contractive on the stiff modes
    coarse_solve = sparse_factor(coarse_matrix, shift)
    basis_t = coarse_basis.T.tocsr()

    def smooth(r: np.ndarray) -> np.ndarray:
        shaped = r.reshape(n_nodes, 3, -1)
        return omega * np.einsum("nab,nbk->nak", inv_blocks, shaped).reshape(r.shape)

    def apply(r: np.ndarray) -> np.ndarray:
        r = np.asarray(r).reshape(dim, -1)
        x = smooth(r)
        x = x + coarse_basis @ coarse_solve(basis_t @ (r - hessian @ x - shift * x))
        return x + smooth(r - hessian @ x - shift * x)

    return LinearOperator((dim, dim), matvec=apply, matmat=apply, dtype=np.float64)


def _diagonal_blocks(hessian: sp.csr_matrix, n_nodes: int) -> np.ndarray:
    coo = hessian.tocoo()
    same = (coo.row // 3) == (coo.col // 3)
    blocks = np.zeros((n_nodes, 3, 3))
    np.add.at(blocks, (coo.row[same] // 3, coo.row[same] % 3, coo.col[same] % 3), coo.data[same])
    return blocks


def lobpcg_lowest(
    hessian: sp.csr_matrix,
    start: np.ndarray,
    constraints: np.ndarray,
    preconditioner: LinearOperator,
    tol: float,
    maxiter: int = 200,
):
    """Lowest eigenpairs of ``hessian`` orthogonal to ``constraints`` (dim, c), by LOBPCG.

    start: (dim, n) initial vectors. Returns (values (n,), vectors (dim, n), residual norms
    (n,)) with residual ``‖H v − λ v‖`` for unit v, so callers can check convergence.
    """
    _, vectors = lobpcg(
        hessian,
        np.array(start),
        M=preconditioner,
        Y=constraints,
        tol=tol,
        maxiter=maxiter,
        largest=False,
        verbosityLevel=0,
    )
    vectors, _ = np.linalg.qr(vectors)
    # Rayleigh–Ritz in the converged span gives orthonormal eigenvectors even if LOBPCG
    # returned a slightly mixed basis for close eigenvalues.
    small = vectors.T @ (hessian @ vectors)
    theta, rot = np.linalg.eigh((small + small.T) / 2)
    vectors = vectors @ rot
    residual = np.linalg.norm(hessian @ vectors - vectors * theta, axis=0)
    return theta, vectors, residual
