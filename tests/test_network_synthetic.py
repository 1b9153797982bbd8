"""Signal swap (network/synthetic.py): the swapped image is the reference rendered with the
new labels plus the old image's own residual, exactly; mismatched inputs are refused."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from deephemnma.align.similarity import Level, ctf_filter, render_filtered
from deephemnma.cli.main import main
from deephemnma.ctf import CTFParams
from deephemnma.errors import InputError
from deephemnma.geometry import euler_to_matrix, random_euler_paper
from deephemnma.io.mrc import ParticleImages
from deephemnma.io.pdb import package_data_path, read_structure
from deephemnma.io.star import read_particles, with_poses, write_particles
from deephemnma.network.data import read_labels
from deephemnma.network.synthetic import SignalSwap, make_signal_swap, swap_signals
from deephemnma.project import atom_model

SIZE, PIXEL = 32, 2.6


@pytest.fixture(scope="module")
def swap():
    structure = read_structure(package_data_path("4ake_A.pdb"), selection="heavy").centered()
    g = torch.Generator().manual_seed(0)
    modes = torch.randn(2, structure.n_atoms, 3, generator=g, dtype=torch.float64)
    modes /= modes.flatten(1).norm(dim=1)[:, None, None]
    n = 12
    ctf = CTFParams(
        defocus_u_A=np.linspace(8000, 20000, n),
        defocus_v_A=np.linspace(8000, 20000, n),
        voltage_kV=300.0,
        cs_mm=2.7,
    )
    model = atom_model(structure, modes.numpy())
    return SignalSwap(model, ctf, SIZE, PIXEL, True, fraction=0.5, scale=3.0)


def _labels(n, seed):
    g = torch.Generator().manual_seed(seed)
    amplitudes = 60 * torch.randn(n, 2, generator=g)
    matrices = euler_to_matrix(random_euler_paper(n, g)).float()
    shifts = 2 * torch.rand(n, 2, generator=g) - 1
    return amplitudes, matrices, shifts


def _truth(swap, positions, amplitudes, matrices, shifts):
    level = Level(SIZE, PIXEL)
    filt = ctf_filter(swap.ctf.index(positions), level, True)
    return render_filtered(swap.model, matrices, amplitudes, shifts, level, filt)


def test_swap_replaces_the_modelled_signal_and_keeps_the_residual(swap):
    n = 12
    positions = np.arange(n)[::-1].copy()  # batch rows are not positions
    amplitudes, matrices, shifts = _labels(n, 1)
    residual = 0.05 * torch.randn(n, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    c = torch.linspace(2.5, 3.5, n)  # each image its own scale, within the clamp
    images = c[:, None, None] * _truth(swap, positions, amplitudes, matrices, shifts) + 7.0
    new_images, new_amp, new_mat, new_shift = swap_signals(
        swap, images + residual, torch.from_numpy(positions), amplitudes, matrices, shifts,
        torch.Generator().manual_seed(3),
    )  # fmt: skip
    changed = (new_mat != matrices).flatten(1).any(1) | (new_amp != amplitudes).any(1)
    assert int(changed.sum()) >= 4  # half the batch is swapped (a donor may be the row itself)
    # Labels come from the batch's own ones; untouched rows keep image and labels.
    for new, old in ((new_amp, amplitudes), (new_mat, matrices), (new_shift, shifts)):
        assert all(any(torch.equal(r, o) for o in old) for r in new)
    same = ~changed
    assert torch.equal(new_images[same], (images + residual)[same])
    # Every image is its label's signal, at its own scale, plus its own residual and offset.
    expected = c[:, None, None] * _truth(swap, positions, new_amp, new_mat, new_shift) + 7.0
    error = (new_images - residual - expected).abs().max()
    assert float(error) < 0.02 * float(expected.std())  # the scale is fitted under noise
    # Precomputed filters of the distinct CTFs give the same images.
    stored = swap.with_stored_filters()
    assert stored.filters is not None and len(stored.filters) == n
    again = swap_signals(
        stored, images + residual, torch.from_numpy(positions), amplitudes, matrices, shifts,
        torch.Generator().manual_seed(3),
    )[0]  # fmt: skip
    assert torch.allclose(again, new_images, atol=1e-5)
    # Inputs are not modified in place (preloaded batches are views of the training set).
    assert torch.equal(new_images[same], (images + residual)[same])
    assert not torch.equal(new_mat, matrices)


def test_the_scale_is_clamped_around_the_training_median(swap):
    n = 8
    positions = np.arange(n)
    amplitudes, matrices, shifts = _labels(n, 4)
    signal = _truth(swap, positions, amplitudes, matrices, shifts)
    # An image 100× brighter than the median scale gets at most 2× the median's new signal.
    images = 300.0 * signal
    new_images, new_amp, new_mat, new_shift = swap_signals(
        swap, images, torch.from_numpy(positions), amplitudes, matrices, shifts,
        torch.Generator().manual_seed(5),
    )  # fmt: skip
    new_signal = _truth(swap, positions, new_amp, new_mat, new_shift)
    delta = new_images - images
    moved = delta.flatten(1).abs().amax(1) > 0
    ratio = (delta[moved] * (new_signal - signal)[moved]).sum((1, 2)) / (
        (new_signal - signal)[moved] ** 2
    ).sum((1, 2))
    assert torch.allclose(ratio, torch.full_like(ratio, 6.0), rtol=1e-3)  # 2 × scale 3


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    folder = tmp_path_factory.mktemp("syn") / "sim"
    args = ["simulate", "-n", "64", "--image-size", "32", "--pixel-size", "2.6"]
    assert main([*args, "--max-shift", "1", "--snr", "1", "--quiet", "-o", str(folder)]) == 0
    return folder


def test_make_signal_swap_measures_the_scale_and_refuses_unrelated_labels(sim):
    table = read_particles(sim / "particles.star")
    heads = ("amplitudes", "rotation", "shifts")
    rows = np.arange(len(table.particles))
    images = ParticleImages(table)
    common = (str(sim / "reference.pdb"), str(sim / "modes.npz"), [7, 8, 9], table, images)
    labels = read_labels(table, heads, [7, 8, 9])
    made = make_signal_swap(*common, rows, labels, 0.5, 32, 2.6)
    assert made.scale > 0 and made.ctf is not None and not made.phase_flipped
    # The same particles with other poses: their labels no longer explain the images.
    angles = random_euler_paper(len(rows), torch.Generator().manual_seed(9)).numpy()
    wrong = read_labels(with_poses(table, angles), heads, [7, 8, 9])
    with pytest.raises(InputError, match="do not explain"):
        make_signal_swap(*common, rows, wrong, 0.5, 32, 2.6)


def test_train_with_synthetic_images(sim, tmp_path):
    labels = str(sim / "particles.star")
    run = tmp_path / "run"
    args = ["train", "--labels", labels, "--modes", str(sim / "modes.npz"), "-o", str(run)]
    common = ["--epochs", "1", "--batch-size", "16", "--val", "8", "--test", "8", "--quiet"]
    common += ["--precision", "fp32", "--threads", "1", "--synthetic", "0.5"]
    assert main([*args, *common]) == 2  # no --reference
    assert main([*args, *common, "--reference", str(sim / "reference.pdb")]) == 0
    assert (run / "best.pt").exists()
    config = (run / "config.json").read_text()
    assert '"synthetic": 0.5' in config
    # Labels without shifts cannot be rendered: a clear error, exit 2.
    table = read_particles(labels)
    particles = table.particles.drop(columns=["rlnOriginXAngst", "rlnOriginYAngst"])
    write_particles(tmp_path / "noshift.star", replace(table, particles=particles))
    args[2] = str(tmp_path / "noshift.star")
    more = ["--reference", str(sim / "reference.pdb"), "--restart"]
    assert main([*args, *common, *more, "--particles", labels]) == 2
