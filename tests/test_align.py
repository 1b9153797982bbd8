"""Stage 1 alignment: recovery from a cold start, resumability, Dask equals one process,
gradients of the similarity, bad input, and the outlier filter."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from deephemnma.align.filter import keep_mask, mahalanobis_distances
from deephemnma.align.run import align_dataset
from deephemnma.align.search import rotate_images
from deephemnma.align.similarity import Level, ncc, render_filtered, rodrigues
from deephemnma.align.stage1 import AlignConfig
from deephemnma.cli.main import main
from deephemnma.errors import InputError
from deephemnma.geometry import angular_error_deg, euler_to_matrix
from deephemnma.io.star import amplitudes, angles_deg, read_particles, shifts_A
from deephemnma.project import atom_model, render_images

FAST = AlignConfig(
    sizes=(32, 64),
    steps=(15, 50),
    lrs=(1.0, 0.3),
    library_spacing_deg=15.0,
    candidates=6,  # the default: with 4 (and the compressed library) one top view in six
    # stopped 5 amplitude units short within these few steps
    max_shift_A=3.0,
)


@pytest.fixture(scope="module")
def noise_free(tmp_path_factory):
    """Six noise-free, phase-flipped 64² particles at 1.3 Å with known parameters."""
    folder = tmp_path_factory.mktemp("align")
    assert (
        main(
            [
                "simulate",
                "-n",
                "6",
                "--image-size",
                "64",
                "--pixel-size",
                "1.3",
                "--snr",
                "inf",
                "--max-shift",
                "2",
                "--seed",
                "5",
                "-o",
                str(folder / "sim"),
                "--quiet",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "preprocess",
                str(folder / "sim" / "particles.star"),
                "-o",
                str(folder / "pre"),
                "--quiet",
            ]
        )
        == 0
    )
    return folder


def _align(folder: Path, out: str, **kw) -> Path:
    return align_dataset(
        folder / "pre" / "particles.star",
        folder / "sim" / "modes.npz",
        folder / "sim" / "reference.pdb",
        folder / out,
        config=FAST,
        chunk_size=3,
        progress=False,
        **kw,
    )


@pytest.fixture(scope="module")
def aligned(noise_free):
    return _align(noise_free, "single", workers=1)


def test_cold_start_recovers_the_truth_on_noise_free_images(noise_free, aligned):
    estimate = read_particles(aligned)
    truth = read_particles(noise_free / "sim" / "particles.star")
    errors = angular_error_deg(
        euler_to_matrix(torch.as_tensor(angles_deg(estimate))),
        euler_to_matrix(torch.as_tensor(angles_deg(truth))),
    )
    assert float(errors.max()) < 0.5, errors
    amp_error = np.abs(amplitudes(estimate)[1] - amplitudes(truth)[1])
    assert amp_error.max() < 3.0 and amp_error.mean() < 2.0, amp_error
    assert np.abs(shifts_A(estimate) - shifts_A(truth)).max() < 0.1
    assert (estimate.particles["deephemnmaScore"] > 0.95).all()
    assert (noise_free / "single" / "summary.json").exists()


def test_resume_after_interruption_gives_identical_output(noise_free, aligned):
    chunk = noise_free / "single" / "chunks" / "chunk_00001.npz"
    chunk.unlink()
    again = _align(noise_free, "single", workers=1)
    assert again.read_text() == aligned.read_text()


def test_a_rerun_on_other_particles_of_the_same_name_is_refused(tmp_path, noise_free):
    # Re-extracted particles written over the STAR of a finished or interrupted run: its
    # chunks must not be taken for theirs.
    from deephemnma.io.star import select, write_particles

    table = read_particles(noise_free / "pre" / "particles.star")
    star = tmp_path / "particles.star"
    write_particles(star, select(table, [0, 1, 2]))
    job = (star, noise_free / "sim" / "modes.npz", noise_free / "sim" / "reference.pdb")
    kw = {"config": FAST, "chunk_size": 3, "progress": False, "workers": 1}
    align_dataset(*job, tmp_path / "out", **kw)
    write_particles(star, select(table, [3, 4, 5]))
    with pytest.raises(InputError, match="different settings or inputs") as err:
        align_dataset(*job, tmp_path / "out", **kw)
    assert "(changed: particles file)" in err.value.message


def test_batch_size_changes_speed_not_results(noise_free, aligned):
    # A GPU aligns 256 images together, a CPU 16: each image's fit must not see the others.
    batched = _align(noise_free, "batch2", workers=1, batch_size=2)
    a, b = read_particles(aligned).particles, read_particles(batched).particles
    assert FAST.batch_size != 2
    columns = [c for c in a.columns if c != "rlnImageName"]
    np.testing.assert_allclose(a[columns].to_numpy(float), b[columns].to_numpy(float), atol=1e-3)
    record = json.loads((noise_free / "batch2" / "config.json").read_text())
    assert record["config"]["batch_size"] == 2


@pytest.mark.slow
def test_dask_two_workers_equal_single_process(noise_free, aligned):
    distributed = _align(noise_free, "dask", workers=2)
    a, b = read_particles(aligned).particles, read_particles(distributed).particles
    columns = [c for c in a.columns if c != "rlnImageName"]
    np.testing.assert_array_equal(a[columns].to_numpy(), b[columns].to_numpy())


def test_similarity_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    n = 12
    coords = torch.as_tensor(rng.normal(0, 4, (n, 3)))
    modes = torch.as_tensor(rng.normal(size=(2, n, 3)))
    modes = modes / modes.flatten(1).norm(dim=1)[:, None, None]
    from deephemnma.project import AtomModel

    model = AtomModel(
        coords,
        torch.ones(n, 1, dtype=torch.float64),
        torch.full((n, 1), 1.2, dtype=torch.float64),
        modes,
    )
    level = Level(24, 1.0)
    a0 = euler_to_matrix(torch.tensor([[10.0, 40.0, 70.0]], dtype=torch.float64))
    target = render_images(model, a0, 24, 1.0, torch.tensor([[3.0, -2.0]], dtype=torch.float64))
    filt = torch.rand(1, 24, 13, dtype=torch.float64) + 0.2

    def similarity(q, omega, shift):
        matrices = rodrigues(omega) @ a0
        return ncc(render_filtered(model, matrices, q, shift, level, filt), target)

    inputs = (
        torch.tensor([[1.0, 0.5]], dtype=torch.float64, requires_grad=True),
        torch.tensor([[0.02, -0.01, 0.03]], dtype=torch.float64, requires_grad=True),
        torch.tensor([[0.2, -0.1]], dtype=torch.float64, requires_grad=True),
    )
    assert torch.autograd.gradcheck(similarity, inputs, eps=1e-6, atol=1e-6)


def test_rodrigues_is_a_rotation_and_smooth_at_zero():
    omega = torch.tensor(
        [[0.0, 0.0, 0.0], [0.3, -0.2, 0.1]], dtype=torch.float64, requires_grad=True
    )
    r = rodrigues(omega)
    np.testing.assert_allclose(
        (r @ r.transpose(1, 2)).detach().numpy(), np.eye(3)[None].repeat(2, 0), atol=1e-12
    )
    r.sum().backward()
    assert torch.isfinite(omega.grad).all()


def test_library_in_plane_rotation_matches_rendering_at_psi():
    from deephemnma.io.pdb import package_data_path, read_structure

    model = atom_model(read_structure(package_data_path("4ake_A.pdb")).centered(), bfactor_A2=30.0)
    angles = torch.tensor([[30.0, 60.0, 0.0]])
    base = render_images(model, euler_to_matrix(angles), 32, 2.6)
    rotated = rotate_images(base, torch.tensor([40.0, 200.0]))[0]
    for k, psi in enumerate((40.0, 200.0)):
        direct = render_images(model, euler_to_matrix(torch.tensor([[30.0, 60.0, psi]])), 32, 2.6)
        assert float(ncc(rotated[k], direct[0])) > 0.98


def test_compressed_library_finds_what_the_full_library_finds():
    from deephemnma.align.search import build_library, compress_library, search
    from deephemnma.io.pdb import package_data_path, read_structure

    model = atom_model(read_structure(package_data_path("4ake_A.pdb")).centered(), bfactor_A2=30.0)
    level = Level(32, 2.6)
    full = build_library(model, 20.0, level)
    small = compress_library(full, 64)
    basis = small.basis
    assert basis.shape == (32 * 32, 64) and small.vectors.shape == (len(full.vectors), 64)
    assert torch.allclose(basis.T @ basis, torch.eye(64, dtype=basis.dtype), atol=1e-4)
    kept = (small.vectors**2).sum() / (full.vectors**2).sum()
    assert 0.85 < float(kept) <= 1.0
    assert compress_library(full, 0) is full and compress_library(full, 32 * 32) is full
    # Images: library entries (as the data would show them, shifted by a whole pixel) with a
    # little noise; both libraries rank the true entry first.
    generator = torch.Generator().manual_seed(3)
    entries = torch.randperm(len(full.vectors), generator=generator)[:12]
    images = full.vectors[entries].reshape(-1, 32, 32)
    images = torch.roll(images, shifts=1, dims=-1)  # origin (−2.6 Å, 0) recovers it
    images = images + 0.05 * images.std() * torch.randn(images.shape, generator=generator)
    for library in (full, small):
        _, index, origins = search(library, images, None, 3, max_shift_A=3.0)
        assert torch.equal(index[:, 0], entries)
        assert torch.allclose(origins[:, 0], torch.tensor([-2.6, 0.0]).expand(12, 2).to(origins))


def test_raw_particles_without_ctf_need_no_ctf(tmp_path, noise_free):
    from deephemnma.io.star import read_particles as rp
    from deephemnma.io.star import write_particles

    table = rp(noise_free / "sim" / "particles.star")
    stripped = table.particles.drop(columns=["rlnDefocusU"])
    from deephemnma.io.star import ParticleTable

    path = noise_free / "sim" / "no_ctf.star"
    write_particles(path, ParticleTable(table.optics, stripped))
    with pytest.raises(InputError, match="--no-ctf"):
        align_dataset(
            path,
            noise_free / "sim" / "modes.npz",
            noise_free / "sim" / "reference.pdb",
            tmp_path / "x",
            config=FAST,
            workers=1,
            progress=False,
        )


def test_modes_of_another_atom_set_are_refused(tmp_path, noise_free):
    from deephemnma.io.pdb import read_structure, write_structure

    structure = read_structure(noise_free / "sim" / "reference.pdb")
    write_structure(tmp_path / "ca.pdb", structure.select(structure.atom_name == "CA"))
    code = main(
        [
            "align",
            "--particles",
            str(noise_free / "pre" / "particles.star"),
            "--modes",
            str(noise_free / "sim" / "modes.npz"),
            "--reference",
            str(tmp_path / "ca.pdb"),
            "-o",
            str(tmp_path / "out"),
            "--workers",
            "1",
            "--quiet",
        ]
    )
    assert code == 2


def test_mahalanobis_filter_keeps_the_expected_fraction(tmp_path):
    rng = np.random.default_rng(1)
    values = rng.multivariate_normal([0, 10, -5], [[4, 1, 0], [1, 9, 2], [0, 2, 16]], 20000)
    distances = mahalanobis_distances(values)
    # For 3D Gaussian data, P(d ≤ 3.2) = chi2(3).cdf(3.2²) ≈ 0.9828.
    from scipy.stats import chi2

    kept = keep_mask(values, None, 3.2, None).mean()
    assert abs(kept - chi2(3).cdf(3.2**2)) < 0.005
    assert distances.shape == (20000,)


def test_filter_command_writes_the_kept_subset(tmp_path, noise_free, aligned):
    out = tmp_path / "kept.star"
    assert main(["filter", str(aligned), "--min-score", "0.0", "-o", str(out)]) == 0
    assert len(read_particles(out)) == 6 and out.with_suffix(".png").exists()
    assert main(["filter", str(aligned), "-o", str(out)]) == 2


def test_coarse_grained_modes_pick_their_atoms_from_the_full_reference(tmp_path, noise_free):
    from deephemnma.align.run import load_reference
    from deephemnma.io.pdb import read_structure
    from deephemnma.nma.modes import compute_modes, save_modes

    reference = noise_free / "sim" / "reference.pdb"
    ca = read_structure(reference, selection="ca")
    modes = compute_modes(ca, n_modes=9, method="anm", progress=False)
    save_modes(tmp_path / "ca_modes.npz", modes)
    structure, chosen = load_reference(str(reference), str(tmp_path / "ca_modes.npz"), (7,), False)
    assert structure.n_atoms == ca.n_atoms == chosen.structure.n_atoms
    np.testing.assert_allclose(structure.coords_A, ca.coords_A)
