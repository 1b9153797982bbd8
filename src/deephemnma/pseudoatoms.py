"""EM map → pseudoatoms (Jonić & Sorzano 2016): a map as a sum of isotropic 3D Gaussians.

HEMNMA needs an elastic network for a reference that is only a map (paper §2.1). The map is
represented by N Gaussians of one fixed width σ with free positions ``r_n`` and weights
``w_n ≥ 0``::

    V̂(x) = Σ_n w_n (2πσ²)^(-3/2) exp(−|x − r_n|² / 2σ²)

(``w_n`` is the integral of Gaussian n, in map units × Å³; each Gaussian is integrated exactly
over every voxel, as :func:`deephemnma.project.density_map` does for atoms). The voxels above a
threshold form the mask; the representation error is the relative L2 error inside it,
``‖V − V̂‖ / ‖V‖`` over the mask. The fit alternates:

1. *seed* atoms where the residual ``V − V̂`` (inside the mask) is largest — matching
   pursuit: put a Gaussian whose peak equals the residual at its maximum, subtract it, repeat
   (in batches of local maxima, one pass over the box per batch);
2. *refine* all positions and weights together by L-BFGS (strong-Wolfe line search) on
   ``‖V̂ − V·mask‖²`` over the working box (weights as ``exp(u)``, so they stay positive);
3. if the error is above the target, grow by 30 % (Xmipp's default growth) and go to 1.

It stops at the target error (default 5 %), at ``max_atoms``, or when two growth rounds in a
row improve the error by less than 2 % (relative): a floor that more atoms cannot lower,
which happens when the map holds detail finer than σ (a sum of positive Gaussians of width σ
cannot be sharper than one of them) — then use a smaller σ. Atoms whose weight ended below
1 % of the median are removed at the end.

Frames and files (CONVENTIONS.md): volumes are ``[z, y, x]``, pseudoatom coordinates (x, y, z)
are in Å relative to the map center (voxel index ``n // 2`` on each axis), as Xmipp writes them
and as :func:`~deephemnma.project.density_map` renders them. A pseudoatom :class:`Structure`
has atom and residue name ``DENS``, element ``C``, one residue per pseudoatom (chains A, B, …
per 9,999), and B-factor ``8π²σ²`` (the Debye–Waller factor whose blur is the Gaussian:
``σ = sqrt(B / 8π²)``); its metadata hold ``pseudoatoms: True``, ``pseudoatom_sigma_A`` and
``pseudoatom_weights`` (which a PDB file cannot hold: the CLI writes them to a JSON file
beside it).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from deephemnma.errors import InputError
from deephemnma.progress import StatusLog
from deephemnma.project import density_map, window_half_width_px
from deephemnma.structure import Structure

DEFAULT_SIGMA_VOXELS = 1.5  # Xmipp's default Gaussian width, in voxels
DEFAULT_TARGET_ERROR = 0.05
DEFAULT_MAX_ATOMS = 20000
GROWTH = 0.3  # Xmipp growSeeds: add 30 % more atoms per round
STAGNATION = 0.02  # relative improvement below which a growth round counts as useless
PRUNE_FRACTION = 0.01  # remove atoms lighter than this fraction of the median weight
# Initial number of atoms: mask volume / (2σ)³ / 6 — about half of what a 5 % representation
# of a protein map needs, so the count grows from below in a few rounds.
INITIAL_ATOMS_PER_CUBE = 1.0 / 6.0
RESIDUES_PER_CHAIN = 9999  # PDB residue-number field
_B_PER_SIGMA2 = 8.0 * math.pi**2


# --------------------------------------------------------------------------- rendering


def gaussian_map(
    coords_A: torch.Tensor,
    weight: torch.Tensor,
    sigma_A: torch.Tensor | float,
    box_size: int,
    voxel_size_A: float,
) -> torch.Tensor:
    """Sum of isotropic Gaussians averaged over each voxel, (Z, Y, X) = (box,)*3, per Å³.

    coords_A: (N, 3) x, y, z relative to the box center (voxel index ``box // 2``).
    weight: (N,) integral of each Gaussian. sigma_A: scalar or (N,) width (Å).
    The same values as :func:`deephemnma.project.density_map` with one Gaussian per point
    (differentiable in coordinates, weights and widths); it picks the faster of two exact
    evaluations: density_map's windows around each point, or one dense separable product
    ``V = Σ_n w_n g_z(n) ⊗ g_y(n) ⊗ g_x(n)`` (two matrix products, faster on small boxes).
    """
    n = coords_A.shape[0]
    sigma = torch.as_tensor(sigma_A, dtype=coords_A.dtype, device=coords_A.device)
    sigma = sigma.expand(n) if sigma.ndim == 0 else sigma
    if n == 0:
        return coords_A.new_zeros(box_size, box_size, box_size)
    window = 2 * window_half_width_px(sigma, voxel_size_A) + 1
    # Measured on CPU: a dense multiply-add costs ~1/80 of a windowed voxel.
    if box_size**3 > 64 * window**3:
        return density_map(coords_A, weight[:, None], sigma[:, None], box_size, voxel_size_A)
    center = box_size // 2
    pos = coords_A / voxel_size_A + center
    sigma_px = sigma / voxel_size_A
    gx, gy, gz = (_profiles(pos[:, axis], sigma_px, box_size) for axis in range(3))
    zy = (weight[:, None] * gz)[:, :, None] * gy[:, None, :]  # (N, Z, Y)
    volume = zy.reshape(n, -1).transpose(0, 1) @ gx  # (Z·Y, X)
    return volume.reshape(box_size, box_size, box_size) / voxel_size_A**3


def _profiles(position_px: torch.Tensor, sigma_px: torch.Tensor, size: int) -> torch.Tensor:
    """(N, size) integrals of unit 1D Gaussians over pixels [j − ½, j + ½]."""
    edges = torch.arange(size + 1, dtype=position_px.dtype, device=position_px.device) - 0.5
    t = (edges - position_px[:, None]) / (math.sqrt(2.0) * sigma_px[:, None])
    cdf = torch.erf(t)
    return 0.5 * (cdf[:, 1:] - cdf[:, :-1])


# --------------------------------------------------------------------------- structures


def pseudoatom_structure(
    coords_A: np.ndarray,
    sigma_A: float,
    weights: np.ndarray | None = None,
    metadata: dict | None = None,
) -> Structure:
    """A pseudoatom :class:`Structure`: names ``DENS``, element C, B = 8π²σ² (Å²).

    coords_A: (N, 3) Å relative to the map center; weights: (N,) Gaussian integrals (kept in
    ``metadata["pseudoatom_weights"]``). One residue per pseudoatom, numbered 1..9999 in
    chain A, then again in chain B, … (PDB's residue field has 4 digits).
    """
    coords_A = np.asarray(coords_A, dtype=np.float64).reshape(-1, 3)
    n = coords_A.shape[0]
    index = np.arange(n)
    chains = np.array([_chain_name(i) for i in range(n // RESIDUES_PER_CHAIN + 1)])
    meta = {"pseudoatoms": True, "pseudoatom_sigma_A": float(sigma_A)}
    if weights is not None:
        meta["pseudoatom_weights"] = [float(w) for w in np.asarray(weights).ravel()]
    meta.update(metadata or {})
    return Structure(
        coords_A=coords_A,
        element=np.full(n, "C"),
        atom_name=np.full(n, "DENS"),
        residue_name=np.full(n, "DENS"),
        residue_seq=(index % RESIDUES_PER_CHAIN + 1).astype(np.int64),
        chain_id=chains[index // RESIDUES_PER_CHAIN],
        b_factor_A2=np.full(n, _B_PER_SIGMA2 * float(sigma_A) ** 2),
        metadata=meta,
    )


def _chain_name(i: int) -> str:
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return letters[i] if i < 26 else letters[i // 26 - 1] + letters[i % 26]


def pseudoatom_sigma_A(structure: Structure) -> np.ndarray:
    """(N,) Gaussian width of each pseudoatom (Å), from metadata or from B = 8π²σ²."""
    sigma = structure.metadata.get("pseudoatom_sigma_A")
    if sigma is not None:
        return np.full(structure.n_atoms, float(sigma))
    b = np.asarray(structure.b_factor_A2, dtype=np.float64)
    if np.any(b <= 0):
        raise InputError(
            "pseudoatoms without a Gaussian width: the B-factor column must hold 8π²σ² (Å²)",
            field="b_factor",
            expected="> 0",
            found=f"{int(np.sum(b <= 0))} pseudoatoms with B ≤ 0",
        )
    return np.sqrt(b / _B_PER_SIGMA2)


def pseudoatom_weights(structure: Structure) -> np.ndarray:
    """(N,) Gaussian integrals from metadata; ones when unknown (e.g. read from a PDB)."""
    weights = structure.metadata.get("pseudoatom_weights")
    if weights is not None and len(weights) == structure.n_atoms:
        return np.asarray(weights, dtype=np.float64)
    return np.ones(structure.n_atoms)


def pseudoatom_cutoff_A(coords_A: np.ndarray, min_neighbours: int = 12) -> tuple[float, str]:
    """Elastic-network cut-off (Å) for pseudoatoms, derived from their spacing.

    The larger of (a) ContinuousFlex's relative rule, the 95th percentile of the distances
    from each node to its 3 nearest neighbours, and (b) the median distance to the
    ``min_neighbours``-th nearest neighbour, so a typical pseudoatom has at least 12 springs.
    Rule (a) alone gives ~1.2 × the typical spacing: for pseudoatoms as sparse as a 5 % map
    representation makes them (one per ~250 Å³, 4–5 Å apart) that leaves isolated nodes and
    floppy local modes; rule (b) puts the modes 7–9 of 4AKE pseudoatoms at an overlap of
    0.98 with the atomic ones (see docs/nma.md). Returns (cut-off, rule name).
    """
    from scipy.spatial import cKDTree

    from deephemnma.nma.network import percentile_cutoff_A

    coords_A = np.asarray(coords_A, dtype=np.float64)
    percentile = percentile_cutoff_A(coords_A)
    k = min(min_neighbours, coords_A.shape[0] - 1)
    dist_A, _ = cKDTree(coords_A).query(coords_A, k=k + 1)
    median_k = float(np.median(dist_A[:, k]))
    if median_k > percentile:
        return median_k, f"median-distance-to-{min_neighbours}th-neighbour"
    return percentile, "continuousflex-relative-95th-percentile"


RIGIDITY_STEP = 1.1  # cut-off growth per retry when the network is not rigid
RIGIDITY_TRIES = 8  # up to 1.1^7 ≈ 1.95 × the spacing rule


def pseudoatom_modes(
    structure: Structure,
    n_modes: int = 20,
    cutoff_A: float | None = None,
    gamma: float = 1.0,
    progress: bool = True,
):
    """Normal modes of pseudoatoms (full ANM) with a cut-off derived from their spacing.

    With ``cutoff_A`` None: start from :func:`pseudoatom_cutoff_A` and, while the network is
    not rigid (disconnected, or more than six zero modes: thin protrusions held by a few
    collinear springs), raise the cut-off by 10 % and recompute (at most 7 times). The 6ZU5
    ribosome map's 4,204 pseudoatoms (3 Å voxels) need 17 Å where the spacing rule gives
    14.7 Å. ``parameters["cutoff_rule"]`` says which rule and how many raises. A given
    ``cutoff_A`` is used as is. Returns :class:`~deephemnma.nma.Modes`.
    """
    from dataclasses import replace

    from deephemnma.nma.modes import compute_modes

    def compute(cutoff):
        return compute_modes(
            structure,
            n_modes=n_modes,
            method="anm",
            cutoff_A=cutoff,
            gamma=gamma,
            progress=progress,
        )

    if cutoff_A is not None:
        return compute(cutoff_A)
    cutoff, rule = pseudoatom_cutoff_A(structure.coords_A)
    for attempt in range(RIGIDITY_TRIES):
        try:
            modes = compute(cutoff)
        except InputError as exc:
            if "zero modes instead of six" not in str(exc) or attempt == RIGIDITY_TRIES - 1:
                raise
            cutoff *= RIGIDITY_STEP
            continue
        if attempt:
            rule += f", raised ×{RIGIDITY_STEP:g}^{attempt} until the network was rigid"
        return replace(modes, parameters={**modes.parameters, "cutoff_rule": rule})
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- thresholds


def auto_threshold(volume: np.ndarray) -> float:
    """Density threshold separating the molecule from the background.

    The background is the outer shell of the box (the six faces, ``max(2, n // 16)`` voxels
    thick); threshold = its mean + max(3 × its standard deviation, 1 % of (map maximum −
    its mean)). The 1 % floor matters for noise-free (simulated) maps, whose shell is 0.
    """
    volume = np.asarray(volume, dtype=np.float64)
    shell = np.zeros(volume.shape, dtype=bool)
    for axis, n in enumerate(volume.shape):
        t = max(2, n // 16)
        index = [slice(None)] * 3
        index[axis] = np.r_[0:t, n - t : n]
        shell[tuple(index)] = True
    background = volume[shell]
    mean, std = float(background.mean()), float(background.std())
    return mean + max(3.0 * std, 0.01 * (float(volume.max()) - mean))


# --------------------------------------------------------------------------- the fit


@dataclass(frozen=True)
class PseudoatomInfo:
    """How a map was turned into pseudoatoms.

    representation_error: ‖V − V̂‖/‖V‖ over the mask (voxels above ``threshold``), final.
    history: (n_atoms, error) after each round. weights: (N,) Gaussian integrals.
    converged: error ≤ target_error. message: why it stopped.
    """

    n_atoms: int
    sigma_A: float
    voxel_size_A: float
    threshold: float
    threshold_rule: str
    target_error: float
    representation_error: float
    converged: bool
    message: str
    n_mask_voxels: int
    map_shape: tuple[int, int, int]
    history: tuple[tuple[int, float], ...]
    weights: np.ndarray = field(repr=False)
    timings_s: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready dictionary (weights as a list)."""
        out = asdict(self)
        out["weights"] = [float(w) for w in self.weights]
        out["history"] = [[int(n), float(e)] for n, e in self.history]
        out["map_shape"] = list(self.map_shape)
        out["units"] = {
            "coordinates": "Å, relative to the map center (voxel n//2 on each axis)",
            "weights": "integral of each Gaussian: map units × Å³",
            "representation_error": "‖V − V̂‖ / ‖V‖ over the voxels above threshold",
        }
        return out


def map_to_pseudoatoms(
    volume: np.ndarray,
    voxel_size_A: float | None,
    threshold: float | None = None,
    sigma_A: float | None = None,
    target_error: float = DEFAULT_TARGET_ERROR,
    max_atoms: int = DEFAULT_MAX_ATOMS,
    iterations: int = 60,
    progress: bool = True,
) -> tuple[Structure, PseudoatomInfo]:
    """Represent a map by Gaussian pseudoatoms until the error is below ``target_error``.

    volume: [z, y, x] map (any box shape). voxel_size_A: Å per voxel (required).
    threshold: voxels above it are the molecule (mask); None → :func:`auto_threshold`.
    sigma_A: Gaussian width (Å); None → 1.5 voxels (Xmipp's default). Choose it near the
        map's resolution/4: a map sharper than σ cannot be represented to a small error.
    target_error: relative L2 error inside the mask at which to stop (0.05 = 5 %).
    max_atoms: stop growing beyond this many pseudoatoms.
    iterations: L-BFGS iterations per round.
    Returns the pseudoatoms (a :class:`Structure`, coordinates relative to the map center)
    and a :class:`PseudoatomInfo`. Deterministic. Raises :class:`InputError` for a missing or
    non-positive voxel size, a non-3D or non-finite map, or nothing above the threshold.
    """
    start_time = time.perf_counter()
    volume = _check_volume(volume, voxel_size_A)
    voxel_size_A = float(voxel_size_A)
    sigma_A = DEFAULT_SIGMA_VOXELS * voxel_size_A if sigma_A is None else float(sigma_A)
    if not np.isfinite(sigma_A) or sigma_A <= 0:
        raise InputError("the pseudoatom width must be positive", field="sigma", found=str(sigma_A))
    if not 0 < target_error < 1:
        raise InputError(
            "the target representation error is a fraction",
            field="target_error",
            expected="between 0 and 1 (0.05 = 5 %)",
            found=str(target_error),
        )
    threshold_rule = "given"
    if threshold is None:
        threshold, threshold_rule = auto_threshold(volume), "auto: background shell"
    threshold = float(threshold)
    mask = volume > threshold
    if not mask.any():
        raise InputError(
            "the map has nothing above the threshold: no density to represent",
            field="threshold",
            expected=f"a threshold below the map maximum {float(volume.max()):.4g}",
            found=f"{threshold:.4g}",
        )
    log = StatusLog("pseudoatoms", progress)

    # Work in a cube around the mask, margin = the Gaussians' reach.
    margin = window_half_width_px(torch.tensor(sigma_A), voxel_size_A)
    target_np, cube_mask, offset_A = _working_cube(volume, mask, margin, voxel_size_A)
    box = target_np.shape[0]
    target = torch.as_tensor(target_np, dtype=torch.float32)
    mask_t = torch.as_tensor(cube_mask)
    norm = float(target[mask_t].norm())

    def render(coords, log_w):
        return gaussian_map(coords, log_w.exp(), sigma_A, box, voxel_size_A)

    def error_of(coords, log_w) -> float:
        with torch.no_grad():
            return float((render(coords, log_w) - target)[mask_t].norm()) / norm

    n_mask = int(mask.sum())
    n_new = max(
        4, math.ceil(n_mask * voxel_size_A**3 / (2 * sigma_A) ** 3 * INITIAL_ATOMS_PER_CUBE)
    )
    coords = torch.zeros(0, 3)
    log_w = torch.zeros(0)
    history: list[tuple[int, float]] = []
    message = ""
    stalled = 0
    while True:
        with torch.no_grad():
            residual = (target - render(coords, log_w)).numpy() * cube_mask
        n_new = min(n_new, max_atoms - coords.shape[0])
        seeds = _seed(residual, n_new, sigma_A, voxel_size_A)
        coords = torch.cat([coords, torch.as_tensor(seeds[:, :3], dtype=torch.float32)])
        log_w = torch.cat([log_w, torch.as_tensor(np.log(seeds[:, 3]), dtype=torch.float32)])
        coords, log_w = _refine(coords, log_w, render, target, norm, iterations)
        error = error_of(coords, log_w)
        history.append((int(coords.shape[0]), error))
        log.line(
            f"{coords.shape[0]:,} pseudoatoms, error {100 * error:.2f} % "
            f"({time.perf_counter() - start_time:.1f} s)"
        )
        if error <= target_error:
            message = f"error {100 * error:.2f} % ≤ target {100 * target_error:g} %"
            break
        if coords.shape[0] >= max_atoms:
            message = f"stopped at max_atoms = {max_atoms} above the target error"
            break
        if seeds.shape[0] == 0:
            message = "stopped: no positive residual left to place atoms on"
            break
        if len(history) > 1 and error > (1 - STAGNATION) * history[-2][1]:
            stalled += 1
        else:
            stalled = 0
        if stalled >= 2:
            message = (
                f"the error stalls at {100 * error:.1f} % as atoms are added: noise above "
                f"the threshold or detail finer than σ = {sigma_A:.2f} Å (raise the "
                "threshold or use a smaller width)"
            )
            break
        n_new = max(1, math.ceil(GROWTH * coords.shape[0]))

    # Remove atoms that faded out (weights driven towards 0).
    weights = log_w.exp()
    keep = weights >= PRUNE_FRACTION * weights.median()
    if not bool(keep.all()):
        coords, log_w = coords[keep], log_w[keep]
        error = error_of(coords, log_w)
        history.append((int(coords.shape[0]), error))
    converged = error <= target_error
    coords_A = coords.double().numpy() + offset_A
    weights_np = log_w.double().exp().numpy()
    info = PseudoatomInfo(
        n_atoms=int(coords_A.shape[0]),
        sigma_A=sigma_A,
        voxel_size_A=voxel_size_A,
        threshold=threshold,
        threshold_rule=threshold_rule,
        target_error=float(target_error),
        representation_error=float(error),
        converged=bool(converged),
        message=message,
        n_mask_voxels=n_mask,
        map_shape=tuple(int(s) for s in volume.shape),
        history=tuple(history),
        weights=weights_np,
        timings_s={"total": round(time.perf_counter() - start_time, 3)},
    )
    structure = pseudoatom_structure(
        coords_A,
        sigma_A,
        weights_np,
        metadata={
            "source": "map",
            "voxel_size_A": voxel_size_A,
            "map_shape": list(info.map_shape),
            "threshold": threshold,
            "representation_error": float(error),
        },
    )
    return structure, info


def _check_volume(volume, voxel_size_A) -> np.ndarray:
    if voxel_size_A is None or not np.isfinite(voxel_size_A) or float(voxel_size_A) <= 0:
        raise InputError(
            "the map's voxel size is unknown: pseudoatom widths and positions need it",
            field="voxel size",
            expected="> 0 Å (set it in the MRC header or give --voxel-size)",
            found=str(voxel_size_A),
        )
    volume = np.asarray(volume, dtype=np.float64)
    if volume.ndim != 3 or min(volume.shape) < 2:
        raise InputError("not a 3D map", expected="[z, y, x]", found=str(volume.shape))
    if not np.all(np.isfinite(volume)):
        raise InputError("the map has non-finite values (NaN or inf)")
    return volume


def _working_cube(
    volume: np.ndarray, mask: np.ndarray, margin: int, voxel_size_A: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The masked map in an even cube around the mask (zeros outside the map and the mask).

    Returns (cube [z, y, x], cube mask, offset_A (x, y, z)): a point at x Å from the map
    center is at x − offset_A from the cube center (cube index m // 2).
    """
    idx = np.argwhere(mask)
    lo, hi = idx.min(0), idx.max(0)
    center = (lo + hi + 1) // 2
    size = int((hi - lo + 1).max()) + 2 * margin
    size += size % 2
    start = center - size // 2
    cube = np.zeros((size,) * 3)
    cube_mask = np.zeros((size,) * 3, dtype=bool)
    src = tuple(
        slice(max(s, 0), min(s + size, n)) for s, n in zip(start, volume.shape, strict=True)
    )
    dst = tuple(slice(sl.start - s, sl.stop - s) for sl, s in zip(src, start, strict=True))
    cube[dst] = np.where(mask[src], volume[src], 0.0)
    cube_mask[dst] = mask[src]
    offset_A = (center - np.array(volume.shape) // 2)[::-1] * voxel_size_A
    return cube, cube_mask, offset_A.astype(np.float64)


def _seed(residual: np.ndarray, count: int, sigma_A: float, voxel_size_A: float) -> np.ndarray:
    """Seeds (count, 4): x, y, z (Å from the cube center) and weight.

    Matching pursuit in batches: the residual's local maxima (within ±σ) are taken in
    decreasing order, each with the weight whose Gaussian peak equals the residual there,
    and each Gaussian is subtracted (on a ±3σ window) before the next batch is searched. One
    pass over the box per batch, not per atom, so thousands of seeds stay cheap.
    """
    from scipy.ndimage import maximum_filter

    residual = residual.copy()
    size = residual.shape[0]
    center = size // 2
    reach = int(math.ceil(3 * sigma_A / voxel_size_A))
    spacing = max(1, int(math.ceil(sigma_A / voxel_size_A)))
    peak_per_weight = (2 * math.pi * sigma_A**2) ** -1.5
    seeds: list[tuple[float, float, float, float]] = []
    while len(seeds) < count:
        peaks = (residual == maximum_filter(residual, size=2 * spacing + 1)) & (residual > 0)
        index = np.flatnonzero(peaks)
        if index.size == 0:
            break
        index = index[np.argsort(-residual.flat[index], kind="stable")][: count - len(seeds)]
        for flat in index.tolist():
            value = float(residual.flat[flat])
            if value <= 0:  # lowered by a neighbour placed in this batch
                continue
            zyx = np.unravel_index(flat, residual.shape)
            window = tuple(slice(max(i - reach, 0), min(i + reach + 1, size)) for i in zyx)
            gz, gy, gx = (
                np.exp(-0.5 * ((np.arange(w.start, w.stop) - i) * voxel_size_A / sigma_A) ** 2)
                for w, i in zip(window, zyx, strict=True)
            )
            residual[window] -= value * gz[:, None, None] * gy[None, :, None] * gx[None, None, :]
            z, y, x = ((int(i) - center) * voxel_size_A for i in zyx)
            seeds.append((x, y, z, value / peak_per_weight))
    return np.array(seeds, dtype=np.float64).reshape(-1, 4)


def _refine(coords, log_w, render, target, norm, iterations):
    """L-BFGS on positions (Å) and log-weights together; returns detached tensors."""
    coords = coords.clone().requires_grad_(True)
    log_w = log_w.clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [coords, log_w],
        lr=1.0,
        max_iter=iterations,
        history_size=20,
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
        line_search_fn="strong_wolfe",
    )
    scale = 1.0 / norm**2

    def closure():
        optimizer.zero_grad()
        loss = (render(coords, log_w) - target).square().sum() * scale
        loss.backward()
        return loss

    optimizer.step(closure)
    return coords.detach(), log_w.detach()
