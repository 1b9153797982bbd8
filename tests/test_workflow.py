"""The real-data workflow (docs/tutorial.md) on a stand-in the project makes itself: the 80S
ribosome 6ZU5 as CA+P, RTB blocks of 20 residues, 20 Å cut-off, modes 7–9 and 11, simulated
with a CTF that varies per particle, written as RELION STAR/MRCS (raw images: the pipeline
phase flips them), then `deephemnma run` end to end, `status`, and invalidation."""

import json
from pathlib import Path

import numpy as np
import pytest

from deephemnma.cli.main import main
from deephemnma.io.star import amplitudes, read_particles

DATA = Path(__file__).parent / "data"

PROJECT = """
[project]
particles = "sim/particles.star"
reference = "{reference}"
truth = "sim/particles.star"
workers = 1
threads = 1
progress = false

[nma]
selection = "ca+p"
block_residues = 20
cutoff_A = 20.0
n_modes = 12
modes = "7-9,11"

[preprocess]
size = 64

[stage1]
n_images = 30
sizes = "32"
steps = "10"
library_spacing_deg = 20.0
candidates = 2
amplitude_range = 300.0

[train]
epochs = 1
batch_size = 16
val = "4"
test = "4"
precision = "fp32"

[predict]
refine = false

[analyze]
method = "bins"
groups = 2
min_per_group = 10
gif = false

[reconstruct]
min_particles = 10
"""


@pytest.mark.slow
def test_ribosome_stand_in_runs_end_to_end(tmp_path):
    reference = DATA / "6zu5.cif.gz"
    modes = tmp_path / "truth_modes.npz"
    nma = ["nma", str(reference), "--selection", "ca+p", "--block-residues", "20"]
    nma += ["--cutoff", "20", "--n-modes", "12", "-o", str(modes), "--quiet"]
    assert main(nma) == 0
    simulate = ["simulate", "--structure", str(reference), "--selection", "ca+p"]
    simulate += ["--modes-file", str(modes), "--modes", "7-9,11", "--trajectory", "gaussian"]
    simulate += ["--amplitude-scale", "300", "--image-size", "64", "--pixel-size", "5.9"]
    simulate += ["--defocus", "15000", "--defocus-spread", "5000", "--astigmatism", "300"]
    simulate += ["--snr", "1", "--max-shift", "2", "-n", "60", "--seed", "3"]
    assert main([*simulate, "-o", str(tmp_path / "sim"), "--quiet"]) == 0
    particles = read_particles(tmp_path / "sim" / "particles.star")
    assert particles.particles["rlnDefocusU"].nunique() == 60  # CTF varies per particle
    assert int(particles.optics["rlnCtfDataArePhaseFlipped"].iloc[0]) == 0

    config = tmp_path / "project.toml"
    config.write_text(PROJECT.format(reference=reference))
    assert main(["run", str(config)]) == 0

    for step in ("nma", "preprocess", "stage1", "filter", "train", "predict", "evaluate",
                 "analyze", "reconstruct", "report"):  # fmt: skip
        assert (tmp_path / step / "step.json").exists(), step
    assert (tmp_path / "nma" / "reference.cif").exists()  # 6ZU5's chain names need mmCIF
    preprocessed = read_particles(tmp_path / "preprocess" / "particles.star")
    assert int(preprocessed.optics["rlnCtfDataArePhaseFlipped"].iloc[0]) == 1
    predicted = read_particles(tmp_path / "predict" / "particles.star")
    numbers, amps = amplitudes(predicted)
    assert list(numbers) == [7, 8, 9, 11] and len(predicted) == 30 and np.isfinite(amps).all()
    maps = sorted((tmp_path / "reconstruct").glob("*/map.mrc"))
    assert len(maps) == 2
    for summary in (tmp_path / "reconstruct").glob("*/summary.json"):
        # The centroid model sits where the particles are (both centered on the reference's
        # center of mass): its FSC is far better than an off-center model's (~450 Å).
        assert json.loads(summary.read_text())["resolution_model_fsc0143_A"] < 120
    assert (tmp_path / "report.html").stat().st_size > 10_000
    # The stand-in is simulated: its ground truth scores Stage 1 and the network.
    evaluation = json.loads((tmp_path / "evaluate" / "evaluation.json").read_text())
    labels = [r["label"] for r in evaluation["results"]]
    assert labels == ["Stage 1 vs truth", "network vs truth"]
    assert evaluation["results"][0]["n"] == 30

    # A rerun does nothing; a changed grouping redoes only analyze and what follows.
    assert main(["run", str(config)]) == 0
    before = (tmp_path / "stage1" / "step.json").read_text()
    assert main(["run", str(config), "--analyze.groups", "3"]) == 0
    assert (tmp_path / "stage1" / "step.json").read_text() == before
    assert len(sorted((tmp_path / "reconstruct").glob("*/map.mrc"))) == 3
