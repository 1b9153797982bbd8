"""Normal-mode analysis: elastic network, RTB, solvers, file, analysis, exports.

Each rule is checked against an independent construction: ProDy's ANM (stored reference and,
when installed, live), a Hessian written out pair by pair, analytic rigid-body motions, the
4AKE → 1AKE conformational change, and the full ANM as the reference for RTB.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from deephemnma.errors import InputError
from deephemnma.io.pdb import package_data_path, read_structure
from deephemnma.nma import compute_modes, deform, load_modes, parse_mode_numbers, save_modes
from deephemnma.nma import modes as modes_module
from deephemnma.nma.analysis import (
    collectivity,
    compare_with_target,
    cumulative_overlaps,
    displacement_to_target,
    interpolate_vectors,
    kabsch,
    mode_overlaps,
    subspace_overlap,
)
from deephemnma.nma.network import (
    build_network,
    default_cutoff,
    percentile_cutoff_A,
    rayleigh_quotients,
)
from deephemnma.structure import Structure

DATA = Path(__file__).parent / "data"
AKE_4 = package_data_path("4ake_A.pdb")
AKE_1 = package_data_path("1ake.pdb")
RIBOSOME = DATA / "6zu5.cif.gz"
# RTB vs full ANM on all heavy atoms: the same 8 Å network for both (ContinuousFlex's default
# absolute cut-off for atoms), so only the block approximation differs.
RTB_VS_ANM_CUTOFF_A = 8.0


@pytest.fixture(scope="module")
def ca_4ake() -> Structure:
    return read_structure(AKE_4, selection="ca")


@pytest.fixture(scope="module")
def heavy_4ake() -> Structure:
    return read_structure(AKE_4, selection="heavy")


@pytest.fixture(scope="module")
def target_1ake() -> Structure:
    return read_structure(AKE_1, selection="heavy", chains=["A"])


@pytest.fixture(scope="module")
def anm_ca(ca_4ake):
    return compute_modes(
        ca_4ake, n_modes=20, method="anm", cutoff_A=15.0, gamma=1.0, progress=False
    )


@pytest.fixture(scope="module")
def rtb_heavy(heavy_4ake):
    return compute_modes(
        heavy_4ake,
        n_modes=20,
        method="rtb",
        cutoff_A=RTB_VS_ANM_CUTOFF_A,
        block_residues=10,
        progress=False,
    )


@pytest.fixture(scope="module")
def anm_heavy(heavy_4ake):
    return compute_modes(
        heavy_4ake, n_modes=20, method="anm", cutoff_A=RTB_VS_ANM_CUTOFF_A, progress=False
    )


def naive_hessian(coords_A: np.ndarray, cutoff_A: float, gamma: float) -> np.ndarray:
    """Dense ANM Hessian written out pair by pair (Atilgan et al. 2001), O(N²) loops."""
    n = len(coords_A)
    hessian = np.zeros((3 * n, 3 * n))
    for i in range(n):
        for j in range(i + 1, n):
            d = coords_A[j] - coords_A[i]
            r2 = d @ d
            if r2 > cutoff_A**2:
                continue
            block = -gamma * np.outer(d, d) / r2
            hessian[3 * i : 3 * i + 3, 3 * j : 3 * j + 3] = block
            hessian[3 * j : 3 * j + 3, 3 * i : 3 * i + 3] = block
            hessian[3 * i : 3 * i + 3, 3 * i : 3 * i + 3] -= block
            hessian[3 * j : 3 * j + 3, 3 * j : 3 * j + 3] -= block
    return hessian


def small_rigid_motion(coords_A: np.ndarray, rng) -> np.ndarray:
    """δ = t + ω × r for a random t and ω: an infinitesimal rigid-body displacement."""
    t, omega = rng.normal(size=3), rng.normal(size=3)
    return t + np.cross(omega, coords_A)


# ------------------------------------------------------------------ ProDy reference


def test_anm_ca_matches_stored_prody_reference(ca_4ake, anm_ca):
    ref = np.load(DATA / "prody_anm_4ake_ca.npz")
    assert "ProDy" in json.loads(str(ref["provenance"]))["tool"]
    # Same atoms as ProDy used.
    np.testing.assert_allclose(ca_4ake.coords_A, ref["coords_A"], atol=1e-3)
    ours = anm_ca.select(range(7, 21)).eigenvalues
    np.testing.assert_allclose(ours, ref["eigenvalues_7_20"], rtol=1e-6)
    assert subspace_overlap(anm_ca.select(range(7, 17)).vectors, ref["vectors_7_16"]) >= 0.999
    # Distinct eigenvalues: each mode matches individually, up to sign.
    cos = np.abs(np.einsum("kna,kna->k", anm_ca.select(range(7, 17)).vectors, ref["vectors_7_16"]))
    assert cos.min() > 0.999


def test_anm_ca_matches_live_prody(ca_4ake, anm_ca):
    prody = pytest.importorskip("prody")
    prody.confProDy(verbosity="none")
    anm = prody.ANM("4ake CA")
    anm.buildHessian(ca_4ake.coords_A, cutoff=15.0, gamma=1.0)
    anm.calcModes(n_modes=20, zeros=True)
    np.testing.assert_allclose(anm_ca.eigenvalues[6:], anm.getEigvals()[6:20], rtol=1e-6)
    theirs = anm.getEigvecs().T.reshape(20, -1, 3)[6:16]
    assert subspace_overlap(anm_ca.vectors[6:16], theirs) >= 0.999


def test_anm_hessian_matches_pairwise_construction(ca_4ake, anm_ca):
    hessian = naive_hessian(ca_4ake.coords_A, 15.0, 1.0)
    values = np.linalg.eigvalsh(hessian)
    np.testing.assert_allclose(anm_ca.eigenvalues[6:], values[6:20], rtol=1e-8)
    # Each returned vector is an eigenvector of the independent Hessian.
    v = anm_ca.vector_matrix()
    residual = hessian @ v - v * anm_ca.eigenvalues[None, :]
    assert np.abs(residual).max() < 1e-8 * values[-1]


# ------------------------------------------------------------------ the AK transition


@pytest.mark.parametrize("which", ["anm_ca", "rtb_heavy"])
def test_overlap_with_4ake_to_1ake_transition(which, request, target_1ake):
    modes = request.getfixturevalue(which)
    comparison = compare_with_target(modes, target_1ake, atom_names=("CA",))
    assert comparison.n_matched == 214
    assert 6.5 < comparison.rmsd_A < 7.7  # 4AKE/1AKE CA RMSD is ~7.1 Å
    by_number = dict(zip(comparison.mode_numbers.tolist(), range(modes.n_modes), strict=True))
    best = max(comparison.overlap[by_number[m]] for m in range(7, 13))
    assert best >= 0.75
    assert comparison.cumulative[by_number[16]] >= 0.90


def test_overlap_definitions_against_direct_formulas(anm_ca, target_1ake):
    ref_idx, disp = displacement_to_target(anm_ca.structure, target_1ake, ("CA",))
    d = disp.ravel() / np.linalg.norm(disp)
    v = anm_ca.vector_matrix()  # CA model: every atom is compared, modes stay orthonormal
    direct = np.abs(v.T @ d)
    np.testing.assert_allclose(mode_overlaps(anm_ca.vectors, ref_idx, disp), direct, atol=1e-12)
    flexible = anm_ca.vectors[6:]
    np.testing.assert_allclose(
        cumulative_overlaps(flexible, ref_idx, disp),
        np.sqrt(np.cumsum(direct[6:] ** 2)),
        atol=1e-10,
    )


def test_superposition_removes_rigid_motion(anm_ca):
    """A rotated and shifted copy deformed along mode 7: overlap with mode 7 is 1."""
    s = anm_ca.structure
    angle = np.deg2rad(40.0)
    rot = np.array(
        [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    )
    moved = deform(anm_ca.select([7]), [30.0]) @ rot.T + np.array([5.0, -3.0, 12.0])
    comparison = compare_with_target(anm_ca, s.with_coords(moved), atom_names=("CA",))
    assert comparison.overlap[6] > 0.999
    r, t = kabsch(moved, s.coords_A)
    np.testing.assert_allclose(r, rot.T, atol=0.05)


# ------------------------------------------------------------------ rigid body, orthonormality


@pytest.mark.parametrize("which", ["anm_ca", "rtb_heavy", "anm_heavy"])
def test_six_zero_modes_span_rigid_motion_and_modes_orthonormal(which, request):
    modes = request.getfixturevalue(which)
    values = modes.eigenvalues
    assert np.all(np.abs(values[:6]) < 1e-10 * values[6])
    assert np.all(values[6:] > 1e-6 * values[-1])
    v = modes.vector_matrix()
    np.testing.assert_allclose(v.T @ v, np.eye(modes.n_modes), atol=1e-10)
    rng = np.random.default_rng(1)
    for _ in range(3):
        rigid = small_rigid_motion(modes.structure.coords_A, rng).ravel()
        rigid /= np.linalg.norm(rigid)
        in_rigid_span = np.linalg.norm(v[:, :6].T @ rigid)
        assert in_rigid_span == pytest.approx(1.0, abs=1e-10)
        assert np.abs(v[:, 6:].T @ rigid).max() < 1e-8


def test_rtb_all_atom_modes_span_full_anm_modes(rtb_heavy, anm_heavy):
    overlap = subspace_overlap(
        rtb_heavy.select([7, 8, 9]).vectors, anm_heavy.select([7, 8, 9]).vectors
    )
    assert overlap >= 0.9
    # Rayleigh–Ritz in a subspace can only raise eigenvalues (Cauchy interlacing).
    assert np.all(rtb_heavy.eigenvalues[6:] >= anm_heavy.eigenvalues[6:] * (1 - 1e-9))


@pytest.mark.parametrize("which", ["rtb_heavy", "anm_heavy"])
def test_eigenvalues_equal_spring_energy_of_modes(which, request):
    """λ = Σ_springs γ (u·(v_j − v_i))² for unit v, computed spring by spring without any
    Hessian: checks the RTB projection (P orthonormal) and the full ANM alike."""
    modes = request.getfixturevalue(which)
    network = build_network(modes.structure.coords_A, RTB_VS_ANM_CUTOFF_A)
    energy = rayleigh_quotients(network, modes.vectors)
    np.testing.assert_allclose(energy[6:], modes.eigenvalues[6:], rtol=1e-9)
    assert np.all(np.abs(energy[:6]) < 1e-12 * modes.eigenvalues[6])


def test_rtb_with_one_residue_blocks_on_ca_is_exact_anm(ca_4ake, anm_ca):
    """One CA per block: the block basis spans all 3N coordinates, so RTB = ANM."""
    rtb = compute_modes(
        ca_4ake, n_modes=20, method="rtb", cutoff_A=15.0, block_residues=1, progress=False
    )
    np.testing.assert_allclose(rtb.eigenvalues[6:], anm_ca.eigenvalues[6:], rtol=1e-9)
    np.testing.assert_allclose(rtb.vectors[6:], anm_ca.vectors[6:], atol=1e-8)


def test_lobpcg_solver_matches_direct_solver(heavy_4ake, anm_heavy, monkeypatch):
    monkeypatch.setattr(modes_module, "ANM_DIRECT_MAX_DIM", 0)
    lob = compute_modes(
        heavy_4ake, n_modes=20, method="anm", cutoff_A=RTB_VS_ANM_CUTOFF_A, progress=False
    )
    assert lob.parameters["solver"].startswith("LOBPCG")
    assert anm_heavy.parameters["solver"].startswith("shift-invert")
    np.testing.assert_allclose(lob.eigenvalues[6:], anm_heavy.eigenvalues[6:], rtol=1e-8)
    cos = np.abs(np.einsum("kna,kna->k", lob.vectors[6:], anm_heavy.vectors[6:]))
    assert cos.min() > 1 - 1e-7


# ------------------------------------------------------------------ determinism, file


def test_signs_are_deterministic_and_follow_convention(ca_4ake, anm_ca):
    again = compute_modes(ca_4ake, n_modes=20, method="anm", cutoff_A=15.0, progress=False)
    np.testing.assert_array_equal(again.vectors, anm_ca.vectors)
    flat = anm_ca.vectors.reshape(anm_ca.n_modes, -1)
    pivots = flat[np.arange(len(flat)), np.argmax(np.abs(flat), axis=1)]
    assert np.all(pivots > 0)


def test_save_load_round_trip(tmp_path, rtb_heavy):
    path = save_modes(tmp_path / "sub" / "modes.npz", rtb_heavy)
    assert sorted(p.name for p in path.parent.iterdir()) == ["modes.npz"]  # no temp left
    loaded = load_modes(path)
    np.testing.assert_array_equal(loaded.vectors, rtb_heavy.vectors)
    np.testing.assert_array_equal(loaded.eigenvalues, rtb_heavy.eigenvalues)
    np.testing.assert_array_equal(loaded.mode_numbers, rtb_heavy.mode_numbers)
    s, t = loaded.structure, rtb_heavy.structure
    np.testing.assert_array_equal(s.coords_A, t.coords_A)
    for name in ("element", "atom_name", "residue_name", "residue_seq", "chain_id", "b_factor_A2"):
        np.testing.assert_array_equal(getattr(s, name), getattr(t, name))
    assert loaded.parameters["method"] == "rtb"
    assert loaded.parameters["cutoff_A"] == RTB_VS_ANM_CUTOFF_A
    assert loaded.parameters["block_residues"] == 10
    assert "numpy" in loaded.parameters["versions"]
    # Plain numpy can read it: no pickles.
    with np.load(path, allow_pickle=False) as raw:
        meta = json.loads(str(raw["metadata"]))
    assert meta["format"] == "deephemnma-modes"


def test_load_rejects_other_files(tmp_path):
    bad = tmp_path / "other.npz"
    np.savez(bad, x=np.zeros(3))
    with pytest.raises(InputError, match="lacks arrays"):
        load_modes(bad)
    with pytest.raises(InputError, match="not found"):
        load_modes(tmp_path / "missing.npz")


def test_deform_is_reference_plus_weighted_vectors(anm_ca):
    sub = anm_ca.select([7, 8, 9])
    q = np.array([-200.0, 50.0, 120.0])
    expected = sub.structure.coords_A.copy()
    for k in range(3):
        expected += q[k] * sub.vectors[k]
    np.testing.assert_allclose(deform(sub, q), expected, atol=1e-12)
    batch = deform(sub, np.stack([q, -q]))
    assert batch.shape == (2, sub.n_atoms, 3)
    with pytest.raises(InputError, match="one amplitude per mode"):
        deform(sub, [1.0, 2.0])


def test_select_keeps_order_and_rejects_missing(anm_ca):
    sub = anm_ca.select([9, 7])
    assert sub.mode_numbers.tolist() == [9, 7]
    np.testing.assert_array_equal(sub.vectors[0], anm_ca.vectors[8])
    with pytest.raises(InputError, match="not available"):
        anm_ca.select([7, 25])


def test_parse_mode_numbers():
    assert parse_mode_numbers("7-9,11") == [7, 8, 9, 11]
    assert parse_mode_numbers(" 7 , 9-10 ") == [7, 9, 10]
    for bad in ("", "a-b", "9-7", "0-3", "7,,x"):
        with pytest.raises(InputError):
            parse_mode_numbers(bad)
    with pytest.raises(InputError, match="beyond the modes computed"):
        parse_mode_numbers("7-30", available=range(1, 21))


# ------------------------------------------------------------------ bad input


def _atoms(coords_A: np.ndarray, residue_per_atom: bool = True) -> Structure:
    n = len(coords_A)
    return Structure(
        coords_A=np.asarray(coords_A, dtype=np.float64).reshape(-1, 3),
        element=np.array(["C"] * n),
        atom_name=np.array(["CA"] * n),
        residue_name=np.array(["ALA"] * n),
        residue_seq=np.arange(1, n + 1),
        chain_id=np.array(["A"] * n),
        b_factor_A2=np.zeros(n),
        metadata={},
    )


def test_empty_selection_is_an_input_error():
    with pytest.raises(InputError, match="empty"):
        compute_modes(_atoms(np.zeros((0, 3))), method="anm", cutoff_A=10.0, progress=False)


def test_fewer_than_four_nodes_is_an_input_error():
    with pytest.raises(InputError, match="too few atoms"):
        compute_modes(_atoms(np.eye(3)), method="anm", cutoff_A=10.0, progress=False)


def test_disconnected_network_is_an_input_error(ca_4ake):
    far = ca_4ake.coords_A + np.array([300.0, 0.0, 0.0])
    two = _atoms(np.concatenate([ca_4ake.coords_A, far]))
    with pytest.raises(InputError, match=r"disconnected.*2 separate pieces.*--cutoff"):
        compute_modes(two, method="anm", cutoff_A=15.0, progress=False)


def test_floppy_network_with_more_than_six_zero_modes_is_an_input_error():
    # A zig-zag of 8 nodes where only consecutive nodes are in range: connected, but each
    # node has ≤ 2 springs, so many motions stretch nothing.
    x = np.arange(8) * 3.0
    zigzag = np.stack([x, np.where(np.arange(8) % 2, 1.5, 0.0), 0.2 * np.arange(8) ** 1.5], 1)
    with pytest.raises(InputError, match=r"zero modes instead of six.*--cutoff"):
        compute_modes(_atoms(zigzag), n_modes=7, method="anm", cutoff_A=3.6, progress=False)


def test_too_many_modes_and_bad_parameters_are_input_errors(heavy_4ake):
    with pytest.raises(InputError, match="degrees of freedom"):
        compute_modes(heavy_4ake, n_modes=500, method="rtb", progress=False)
    with pytest.raises(InputError, match="at least 7"):
        compute_modes(heavy_4ake, n_modes=3, progress=False)
    with pytest.raises(InputError, match="method"):
        compute_modes(heavy_4ake, method="nope", progress=False)
    with pytest.raises(InputError, match="cut-off"):
        compute_modes(heavy_4ake, cutoff_A=-1.0, progress=False)


# ------------------------------------------------------------------ defaults, pseudoatoms


def test_default_cutoffs(ca_4ake, heavy_4ake):
    assert default_cutoff(heavy_4ake) == (8.0, "continuousflex-absolute-8A")
    assert default_cutoff(ca_4ake)[0] == 15.0
    modes = compute_modes(heavy_4ake, n_modes=9, progress=False)
    assert modes.parameters["method"] == "rtb"
    assert modes.parameters["cutoff_A"] == 8.0


def pseudoatoms_of(structure: Structure, spacing_A: float = 3.0) -> Structure:
    """Jittered grid points inside the model, as "DENS" pseudoatoms (one residue each)."""
    rng = np.random.default_rng(0)
    low, high = structure.coords_A.min(0) - 2, structure.coords_A.max(0) + 2
    axes = [np.arange(lo, hi, spacing_A) for lo, hi in zip(low, high, strict=True)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    from scipy.spatial import cKDTree

    dist, _ = cKDTree(structure.coords_A).query(grid)
    points = grid[dist < 2.0] + rng.normal(0, 0.3, size=(int((dist < 2.0).sum()), 3))
    n = len(points)
    return Structure(
        coords_A=points,
        element=np.array(["C"] * n),
        atom_name=np.array(["DENS"] * n),
        residue_name=np.array(["DENS"] * n),
        residue_seq=np.arange(1, n + 1),
        chain_id=np.array(["A"] * n),
        b_factor_A2=np.ones(n),
        metadata={"pseudoatoms": True},
    )


def test_pseudoatoms_use_full_anm_and_percentile_cutoff(heavy_4ake, anm_heavy):
    pseudo = pseudoatoms_of(heavy_4ake)
    # Percentile rule against brute-force distances to the 3 nearest neighbours.
    dist = np.linalg.norm(pseudo.coords_A[:, None] - pseudo.coords_A[None], axis=-1)
    nearest3 = np.sort(dist, axis=1)[:, 1:4]
    assert percentile_cutoff_A(pseudo.coords_A) == pytest.approx(np.percentile(nearest3, 95))
    assert default_cutoff(pseudo)[1] == "continuousflex-relative-95th-percentile"
    modes = compute_modes(pseudo, n_modes=9, cutoff_A=8.0, progress=False)
    assert modes.parameters["method"] == "anm"
    # The pseudoatoms' modes 7–9 resemble the atomic ones carried to the same points.
    carried = interpolate_vectors(
        anm_heavy.select([7, 8, 9]).vectors, anm_heavy.structure.coords_A, pseudo.coords_A
    )
    assert subspace_overlap(modes.select([7, 8, 9]).vectors, carried) > 0.7


# ------------------------------------------------------------------ collectivity


def test_collectivity_limits():
    n = 50
    translation = np.zeros((1, n, 3))
    translation[0, :, 0] = 1 / np.sqrt(n)
    single = np.zeros((1, n, 3))
    single[0, 3, 1] = 1.0
    assert collectivity(translation)[0] == pytest.approx(1.0)
    assert collectivity(single)[0] == pytest.approx(1.0 / n)


# ------------------------------------------------------------------ ribosome scale (slow)


@pytest.mark.slow
def test_ribosome_ca_p_full_anm_at_paper_cutoff():
    structure = read_structure(RIBOSOME, selection="ca+p")
    assert structure.n_atoms == 14219
    start = time.perf_counter()
    modes = compute_modes(structure, n_modes=20, method="anm", progress=False)
    elapsed = time.perf_counter() - start
    assert modes.parameters["cutoff_A"] == 20.0  # CA+P default: the paper's ribosome
    v = modes.vector_matrix()
    np.testing.assert_allclose(v.T @ v, np.eye(20), atol=1e-8)
    assert np.all(np.abs(modes.eigenvalues[:6]) < 1e-8 * modes.eigenvalues[6])
    assert elapsed < 120  # ≤ 60 s is the target on 2 cores (bench/bench_nma.py)


@pytest.mark.slow
def test_ribosome_ca_p_at_15A_has_a_floppy_nucleotide():
    structure = read_structure(RIBOSOME, selection="ca+p")
    with pytest.raises(InputError, match=r"7 zero modes.*L50:C770:P \(2 springs\)"):
        compute_modes(structure, n_modes=20, method="anm", cutoff_A=15.0, progress=False)


@pytest.mark.slow
def test_ribosome_all_atom_rtb():
    structure = read_structure(RIBOSOME, selection="heavy")
    assert structure.n_atoms == 165175
    start = time.perf_counter()
    modes = compute_modes(structure, n_modes=20, method="rtb", progress=False)
    elapsed = time.perf_counter() - start
    v = modes.vector_matrix()
    np.testing.assert_allclose(v.T @ v, np.eye(20), atol=1e-8)
    assert np.all(np.abs(modes.eigenvalues[:6]) < 1e-8 * modes.eigenvalues[6])
    assert elapsed < 120
