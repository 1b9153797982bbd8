"""The paper-ak simulator and preprocessing: determinism, resumability, SNR, phase flip,
ground truth, downsampling."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from deephemnma import simulate as sim
from deephemnma.cli.main import main
from deephemnma.ctf import CTFParams, ctf_rfft
from deephemnma.errors import InputError
from deephemnma.geometry import euler_to_matrix
from deephemnma.io.mrc import ParticleImages
from deephemnma.io.star import read_particles, select, write_particles
from deephemnma.preprocess import PreprocessConfig, fourier_crop, preprocess_dataset
from deephemnma.project import atom_model, render_images

SMALL = ["--image-size", "64", "--pixel-size", "1.3", "--quiet"]


@pytest.fixture(scope="module")
def reference():
    return sim.paper_ak_reference()


def _stack_bytes(folder: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted((folder / "stacks").glob("*.mrcs"))]


def _ncc(a, b):
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def test_simulate_is_bit_identical_for_the_same_seed_and_resumes(tmp_path):
    args = ["simulate", "-n", "6", "--chunk-size", "2", "--seed", "3", *SMALL]
    assert main([*args, "-o", str(tmp_path / "a")]) == 0
    assert main([*args, "-o", str(tmp_path / "b")]) == 0
    first = _stack_bytes(tmp_path / "a")
    assert len(first) == 3 and first == _stack_bytes(tmp_path / "b")
    # Interrupted run: a chunk missing and a half-written temp file left behind.
    (tmp_path / "b" / "stacks" / "particles_00001.mrcs").unlink()
    (tmp_path / "b" / "stacks" / "particles_00002.mrcs").write_bytes(b"garbage")
    assert main([*args, "-o", str(tmp_path / "b")]) == 0
    assert _stack_bytes(tmp_path / "b") == first
    assert (tmp_path / "a" / "particles.star").read_text() == (
        tmp_path / "b" / "particles.star"
    ).read_text()
    # A different seed is a different dataset and is not mixed into an existing folder.
    assert main([*args[: -len(SMALL)], *SMALL, "--seed", "4", "-o", str(tmp_path / "a")]) == 2
    # Nor are images at the poses of another STAR under the same name (--poses).
    poses = tmp_path / "poses.star"
    table = read_particles(tmp_path / "a" / "particles.star")
    write_particles(poses, table)
    again = ["simulate", "--poses", str(poses), "--chunk-size", "2", "--quiet"]
    assert main([*again, "-o", str(tmp_path / "c")]) == 0
    write_particles(poses, select(table, [5, 4, 3, 2, 1, 0]))
    assert main([*again, "-o", str(tmp_path / "c")]) == 2


def test_ground_truth_follows_the_paper_protocol(tmp_path):
    assert (
        main(
            [
                "simulate",
                "-n",
                "200",
                "--snr",
                "inf",
                "--chunk-size",
                "200",
                "-o",
                str(tmp_path),
                *SMALL,
            ]
        )
        == 0
    )
    table = read_particles(tmp_path / "particles.star")
    p = table.particles
    r = p["deephemnmaTrajectoryR"].to_numpy()
    np.testing.assert_allclose(p["deephemnmaAmplitude07"], -200 * r)
    np.testing.assert_allclose(p["deephemnmaAmplitude08"], 200 * np.sin(np.pi * r))
    np.testing.assert_allclose(p["deephemnmaAmplitude09"], 200 * np.cos(np.pi * r))
    assert p["rlnAngleTilt"].between(0, 180).all() and p["rlnAngleRot"].between(0, 360).all()
    assert p[["rlnOriginXAngst", "rlnOriginYAngst"]].abs().to_numpy().max() <= 5 * 1.3
    np.testing.assert_allclose(p["rlnDefocusU"], 5000.0)
    optics = table.optics.iloc[0]
    assert (
        optics["rlnVoltage"],
        optics["rlnSphericalAberration"],
        optics["rlnAmplitudeContrast"],
    ) == (200.0, 2.0, 0.1)
    assert (tmp_path / "modes.npz").exists() and (tmp_path / "reference.pdb").exists()


def test_simulated_snr_is_within_ten_percent(reference):
    structure, modes = reference
    config = sim.paper_ak_config(n_images=16, image_size=64, pixel_size_A=1.3)
    rows = sim.sample_ground_truth(config, modes.mode_numbers)
    noisy, clean = sim.render_particles(
        atom_model(structure, modes.vectors),
        rows,
        modes.mode_numbers,
        config,
        torch.Generator().manual_seed(0),
    )
    snr = clean.var(axis=(1, 2)) / (noisy - clean).var(axis=(1, 2))
    assert abs(snr.mean() / 0.1 - 1) < 0.1


def test_phase_flipped_noisy_image_correlates_with_clean_projection(tmp_path, reference):
    structure, modes = reference
    assert (
        main(["simulate", "-n", "8", "--defocus", "15000", "-o", str(tmp_path / "s"), *SMALL]) == 0
    )
    assert (
        main(
            [
                "preprocess",
                str(tmp_path / "s" / "particles.star"),
                "-o",
                str(tmp_path / "p"),
                "--quiet",
            ]
        )
        == 0
    )
    raw = read_particles(tmp_path / "s" / "particles.star")
    flipped_table = read_particles(tmp_path / "p" / "particles.star")
    assert int(flipped_table.optics["rlnCtfDataArePhaseFlipped"].iloc[0]) == 1
    flipped = ParticleImages(flipped_table).images(np.arange(8))
    noisy = ParticleImages(raw).images(np.arange(8))
    p = raw.particles
    clean = render_images(
        atom_model(structure, modes.vectors),
        euler_to_matrix(
            torch.as_tensor(p[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]].to_numpy())
        ).float(),
        64,
        1.3,
        torch.as_tensor(
            p[
                ["deephemnmaAmplitude07", "deephemnmaAmplitude08", "deephemnmaAmplitude09"]
            ].to_numpy(),
            dtype=torch.float32,
        ),
        torch.as_tensor(p[["rlnOriginXAngst", "rlnOriginYAngst"]].to_numpy(), dtype=torch.float32),
    ).numpy()
    flipped_scores = [_ncc(a, b) for a, b in zip(flipped, clean, strict=True)]
    raw_scores = [_ncc(a, b) for a, b in zip(noisy, clean, strict=True)]
    assert min(flipped_scores) > 0.05
    assert np.mean(flipped_scores) > np.mean(raw_scores) + 0.05


def test_preprocess_downsamples_to_the_paper_size(tmp_path):
    assert (
        main(
            [
                "simulate",
                "-n",
                "4",
                "--image-size",
                "96",
                "--pixel-size",
                "0.65",
                "--quiet",
                "-o",
                str(tmp_path / "s"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "preprocess",
                str(tmp_path / "s" / "particles.star"),
                "--pixel-size",
                "1.3",
                "--normalize",
                "-o",
                str(tmp_path / "p"),
                "--quiet",
            ]
        )
        == 0
    )
    before = read_particles(tmp_path / "s" / "particles.star")
    after = read_particles(tmp_path / "p" / "particles.star")
    assert float(after.optics["rlnImagePixelSize"].iloc[0]) == pytest.approx(1.3)
    assert int(after.optics["rlnImageSize"].iloc[0]) == 48
    np.testing.assert_allclose(
        after.particles["rlnOriginXAngst"], before.particles["rlnOriginXAngst"]
    )
    images = ParticleImages(after).images(np.arange(4))
    assert images.shape == (4, 48, 48)
    corners = np.concatenate([images[:, :6, :6].ravel(), images[:, -6:, -6:].ravel()])
    assert abs(corners.mean()) < 0.3


def test_fourier_crop_equals_rendering_at_the_coarser_pixel_size(reference):
    structure, _ = reference
    model = atom_model(structure, bfactor_A2=150.0, dtype=torch.float64)
    matrix = euler_to_matrix(torch.tensor([[20.0, 70.0, 150.0]], dtype=torch.float64))
    fine = render_images(model, matrix, 256, 0.325)
    coarse = render_images(model, matrix, 128, 0.65)
    assert _ncc(fourier_crop(fine, 128).numpy(), coarse.numpy()) > 0.999
    # Mean density is preserved.
    assert float(fourier_crop(fine, 128).mean() / fine.mean()) == pytest.approx(1.0, rel=1e-6)


def test_preprocess_library_is_resumable(tmp_path):
    assert (
        main(["simulate", "-n", "6", "--chunk-size", "3", "-o", str(tmp_path / "s"), *SMALL]) == 0
    )
    config = PreprocessConfig(out_size=32, chunk_size=3)
    star = preprocess_dataset(
        tmp_path / "s" / "particles.star", tmp_path / "p", config, progress=False
    )
    first = _stack_bytes(tmp_path / "p")
    (tmp_path / "p" / "stacks" / "particles_00000.mrcs").unlink()
    preprocess_dataset(tmp_path / "s" / "particles.star", tmp_path / "p", config, progress=False)
    assert _stack_bytes(tmp_path / "p") == first
    assert star.exists()
    # The batch size changes the speed only; a rerun with it resumes.
    faster = replace(config, batch_size=2)
    preprocess_dataset(tmp_path / "s" / "particles.star", tmp_path / "p", faster, progress=False)
    # Other settings, or other particles under the same name, must not take these chunks.
    unflipped = replace(config, phase_flip=False)
    with pytest.raises(InputError, match="different settings or inputs") as err:
        preprocess_dataset(tmp_path / "s" / "particles.star", tmp_path / "p", unflipped)
    assert "(changed: config)" in err.value.message
    table = read_particles(tmp_path / "s" / "particles.star")
    write_particles(tmp_path / "s" / "particles.star", select(table, [5, 4, 3, 2, 1, 0]))
    with pytest.raises(InputError, match="different settings or inputs") as err:
        preprocess_dataset(tmp_path / "s" / "particles.star", tmp_path / "p", config)
    assert "(changed: particles file)" in err.value.message


@pytest.mark.parametrize(
    "args",
    [
        ["simulate", "-n", "0"],
        ["simulate", "--image-size", "63"],
        ["simulate", "--preset", "nope"],
        ["simulate", "--modes", "7-x"],
        ["simulate", "--structure", "/nonexistent.pdb", "--preset", "none"],
        ["simulate", "--device", "gpu"],
        *([["simulate", "--device", "cuda"]] if not torch.cuda.is_available() else []),
    ],
)
def test_bad_simulate_input_exits_2(tmp_path, args):
    assert main([*args, "-o", str(tmp_path / "x"), "--quiet"]) == 2
    assert not (tmp_path / "x").exists()  # refused before anything is written


def test_ctf_sign_in_simulated_images_makes_white_particles(reference):
    structure, modes = reference
    config = sim.paper_ak_config(n_images=4, image_size=64, pixel_size_A=1.3, snr=float("inf"))
    rows = sim.sample_ground_truth(config, modes.mode_numbers)
    _, clean = sim.render_particles(
        atom_model(structure, modes.vectors), rows, modes.mode_numbers, config, None
    )
    ctf = ctf_rfft(
        CTFParams(
            rows["rlnDefocusU"].to_numpy(),
            rows["rlnDefocusV"].to_numpy(),
            voltage_kV=200.0,
            cs_mm=2.0,
            amplitude_contrast=0.1,
        ),
        64,
        1.3,
    )
    assert float(ctf[0, 0, 0]) == pytest.approx(0.1)
    # Low-pass view of the particle: positive (white) at its center for underfocus.
    low = fourier_crop(torch.as_tensor(clean), 8).numpy()
    assert (low[:, 4, 4] > low.mean(axis=(1, 2))).all()


def test_nma_command_writes_the_modes_the_simulator_uses(tmp_path, reference):
    from deephemnma.io.pdb import package_data_path
    from deephemnma.nma.modes import load_modes

    _, modes = reference
    out = tmp_path / "modes.npz"
    pdb = str(package_data_path("4ake_A.pdb"))
    assert main(["nma", pdb, "-o", str(out), "--modes", "7-9", "--quiet"]) == 0
    np.testing.assert_allclose(load_modes(out).select([7, 8, 9]).vectors, modes.vectors, atol=1e-8)
    assert (
        main(["simulate", "-n", "2", "--modes-file", str(out), "-o", str(tmp_path / "s"), *SMALL])
        == 0
    )
