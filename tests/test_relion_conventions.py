"""Our simulator against RELION's own projector (relion_project, Debian package `relion`).

A map of 4AKE is projected by RELION at random angles, origins and astigmatic CTFs; the same
STAR rows are rendered from the atoms by `deephemnma simulate --poses`. Every sign convention
(Euler angles, origin, CTF, astigmatism angle) must agree: correlation ≥ 0.995 after the same
low-pass on both (RELION interpolates its map; we integrate atoms exactly), while a flipped
origin or a transposed rotation decorrelates.
"""

import os
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.ndimage import gaussian_filter

from deephemnma.cli.main import main
from deephemnma.io.mrc import ParticleImages, write_volume
from deephemnma.io.pdb import package_data_path, read_structure, write_structure
from deephemnma.io.star import ParticleTable, read_particles, write_particles
from deephemnma.project import atom_model, density_map

BOX, PIX = 96, 1.0


def _relion_or_skip():
    if shutil.which("relion_project"):
        return
    if os.environ.get("CI"):
        pytest.fail("relion_project missing in CI: `make test` installs Debian's relion")
    pytest.skip("relion_project not installed (apt-get install relion)")


def _blur(images, bfactor_A2=100.0):
    n = images.shape[-1]
    ky = np.fft.fftfreq(n, d=PIX)[:, None]
    kx = np.fft.rfftfreq(n, d=PIX)[None]
    k2 = kx**2 + ky**2
    spectrum = np.fft.rfft2(images) * np.exp(-bfactor_A2 * k2 / 4)
    spectrum[..., k2 > (0.5 / PIX) ** 2] = 0  # RELION keeps |k| ≤ Nyquist only
    return np.fft.irfft2(spectrum, s=images.shape[-2:])


def _ncc(a, b):
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


@pytest.fixture(scope="module")
def relion_images(tmp_path_factory):
    _relion_or_skip()
    folder = tmp_path_factory.mktemp("relion")
    structure = read_structure(package_data_path("4ake_A.pdb")).centered()
    write_structure(folder / "model.pdb", structure)
    model = atom_model(structure, dtype=torch.float64)
    volume = density_map(model.coords_A, model.weight, model.sigma_A, BOX, PIX)
    write_volume(folder / "map.mrc", volume.float().numpy(), PIX)
    rng = np.random.default_rng(7)
    n = 10
    optics = pd.DataFrame(
        {
            "rlnOpticsGroupName": ["g1"],
            "rlnOpticsGroup": [1],
            "rlnVoltage": [300.0],
            "rlnSphericalAberration": [2.7],
            "rlnAmplitudeContrast": [0.1],
            "rlnImagePixelSize": [PIX],
            "rlnImageSize": [BOX],
            "rlnImageDimensionality": [2],
        }
    )
    defocus = rng.uniform(8000, 12000, n)
    particles = pd.DataFrame(
        {
            "rlnImageName": [f"{i + 1:06d}@none.mrcs" for i in range(n)],
            "rlnOpticsGroup": 1,
            "rlnAngleRot": rng.uniform(-180, 180, n),
            "rlnAngleTilt": rng.uniform(0, 180, n),
            "rlnAnglePsi": rng.uniform(-180, 180, n),
            "rlnOriginXAngst": rng.uniform(-4, 4, n),
            "rlnOriginYAngst": rng.uniform(-4, 4, n),
            "rlnDefocusU": defocus,
            "rlnDefocusV": defocus - 1500,
            "rlnDefocusAngle": rng.uniform(0, 180, n),
        }
    )
    write_particles(folder / "poses.star", ParticleTable(optics, particles))
    subprocess.run(
        [
            "relion_project",
            "--i",
            "map.mrc",
            "--o",
            "relion",
            "--ang",
            "poses.star",
            "--ctf",
            "--angpix",
            str(PIX),
        ],
        cwd=folder,
        check=True,
        capture_output=True,
    )
    table = read_particles(folder / "relion.star")
    return folder, table, ParticleImages(table).images(np.arange(len(table)))


def _ours(folder, poses, out_name):
    code = main(
        [
            "simulate",
            "--preset",
            "none",
            "--structure",
            str(folder / "model.pdb"),
            "--modes",
            "none",
            "--poses",
            str(poses),
            "-o",
            str(folder / out_name),
            "--quiet",
        ]
    )
    assert code == 0
    table = read_particles(folder / out_name / "particles.star")
    return ParticleImages(table).images(np.arange(len(table)))


def test_simulate_poses_matches_relion_project(relion_images):
    folder, _, relion = relion_images
    ours = _ours(folder, folder / "relion.star", "ours")
    scores = [_ncc(a, b) for a, b in zip(_blur(ours), _blur(relion), strict=True)]
    assert min(scores) >= 0.995, scores


def test_wrong_conventions_are_detected(relion_images):
    folder, table, relion = relion_images
    flipped = table.particles.copy()
    flipped["rlnOriginXAngst"] *= -1
    flipped["rlnOriginYAngst"] *= -1
    transposed = table.particles.copy()
    transposed["rlnAngleRot"] = -table.particles["rlnAnglePsi"]
    transposed["rlnAnglePsi"] = -table.particles["rlnAngleRot"]
    for name, rows in (("flipped", flipped), ("transposed", transposed)):
        write_particles(folder / f"{name}.star", ParticleTable(table.optics, rows))
        images = _ours(folder, folder / f"{name}.star", name)
        scores = [_ncc(a, b) for a, b in zip(_blur(images), _blur(relion), strict=True)]
        assert np.median(scores) < 0.9, (name, scores)


def test_relion_reads_simulated_and_preprocessed_particles(tmp_path):
    """`simulate` + `preprocess` output is a STAR/MRCS set RELION reads: relion_reconstruct
    turns the phase-flipped 128-style particles into a map of the right box and pixel size
    that resembles the reference."""
    _relion_or_skip()
    sim_dir, pre_dir = tmp_path / "sim", tmp_path / "pre"
    assert (
        main(
            [
                "simulate",
                "-n",
                "200",
                "--image-size",
                "96",
                "--pixel-size",
                "0.65",
                "--snr",
                "inf",
                "--angles",
                "uniform",
                "--trajectory",
                "zero",
                "-o",
                str(sim_dir),
                "--quiet",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "preprocess",
                str(sim_dir / "particles.star"),
                "--size",
                "48",
                "-o",
                str(pre_dir),
                "--quiet",
            ]
        )
        == 0
    )
    subprocess.run(
        ["relion_reconstruct", "--i", "particles.star", "--o", "rec.mrc", "--ctf"],
        cwd=pre_dir,
        check=True,
        capture_output=True,
    )
    from deephemnma.io.mrc import read_volume

    volume, voxel_A = read_volume(pre_dir / "rec.mrc")
    assert volume.shape == (48, 48, 48) and voxel_A == pytest.approx(1.3)
    structure = read_structure(package_data_path("4ake_A.pdb")).centered()
    model = atom_model(structure, bfactor_A2=100.0, dtype=torch.float64)
    reference = density_map(model.coords_A, model.weight, model.sigma_A, 48, 1.3).numpy()
    # 200 views leave high-frequency streaks; compare at low resolution (σ 2 Å blur).
    score = _ncc(gaussian_filter(volume, 1.5), gaussian_filter(reference, 1.5))
    assert score > 0.9, score
