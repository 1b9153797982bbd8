"""The README's demo: a small paper-ak dataset, simulated, preprocessed and shown.

Later stages (alignment, network, analysis) extend this same entry point.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from deephemnma import simulate as sim


def run_demo(
    out_dir: str | Path, n_images: int = 64, seed: int = 0, progress: bool = True
) -> dict[str, Path]:
    """Simulate ``n_images`` paper-ak particles (256², 0.325 Å), phase flip and downsample
    them to 128² at 0.65 Å, and draw a montage. Returns the paths it wrote."""
    from deephemnma.preprocess import PreprocessConfig, preprocess_dataset

    out = Path(out_dir)
    structure, modes = sim.paper_ak_reference(progress=progress)
    config = sim.paper_ak_config(n_images=n_images, seed=seed, chunk_size=max(16, n_images))
    star = sim.simulate_dataset(structure, modes, config, out / "simulated", progress=progress)
    pre_star = preprocess_dataset(
        star, out / "preprocessed", PreprocessConfig(out_size=128), progress=progress
    )
    figure = montage(structure, modes, config, star, pre_star, out / "demo_particles.png")
    return {"simulated": star, "preprocessed": pre_star, "figure": figure}


def montage(
    structure,
    modes,
    config: sim.SimulationConfig,
    simulated_star: Path,
    preprocessed_star: Path,
    path: Path,
    n_show: int = 5,
) -> Path:
    """Rows of particles: projection, with CTF, noisy, phase-flipped 128², with their
    ground-truth conformation and pose."""
    from deephemnma.geometry import euler_to_matrix
    from deephemnma.io.mrc import ParticleImages
    from deephemnma.io.star import read_particles
    from deephemnma.plotting import plt, save_figure
    from deephemnma.project import atom_model, render_images

    table = read_particles(preprocessed_star)
    rows = table.particles.iloc[:n_show]
    model = atom_model(structure, modes.vectors)
    clean_ctf, _ = sim.render_particles(
        model, rows, modes.mode_numbers, replace(config, snr=float("inf")), None
    )
    amp_cols = [f"deephemnmaAmplitude{int(m):02d}" for m in modes.mode_numbers]
    angles = rows[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]].to_numpy()
    shifts = rows[["rlnOriginXAngst", "rlnOriginYAngst"]].to_numpy()
    projections = render_images(
        model,
        euler_to_matrix(torch.as_tensor(angles)).float(),
        config.image_size,
        config.pixel_size_A,
        torch.as_tensor(rows[amp_cols].to_numpy(), dtype=torch.float32),
        torch.as_tensor(shifts, dtype=torch.float32),
    ).numpy()
    noisy = ParticleImages(read_particles(simulated_star)).images(np.arange(n_show))
    flipped = ParticleImages(table).images(np.arange(n_show))
    columns = [
        (projections, "projection (no CTF)"),
        (clean_ctf, "with CTF"),
        (noisy, f"noisy, SNR {config.snr:g}"),
        (flipped, "phase-flipped, 128²"),
    ]
    fig, axes = plt.subplots(
        n_show, len(columns) + 1, figsize=(2.3 * (len(columns) + 1), 2.3 * n_show)
    )
    for i in range(n_show):
        for j, (images, title) in enumerate(columns):
            ax = axes[i, j]
            ax.imshow(images[i], cmap="gray")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(title, fontsize=9)
        r = rows["deephemnmaTrajectoryR"].iloc[i]
        q = ", ".join(
            f"q{m}={rows[c].iloc[i]:.0f}" for m, c in zip(modes.mode_numbers, amp_cols, strict=True)
        )
        text = (
            f"r = {r:.2f}\n{q}\nrot/tilt/psi =\n{angles[i, 0]:.0f}/{angles[i, 1]:.0f}/"
            f"{angles[i, 2]:.0f}°\nshift = ({shifts[i, 0]:.2f}, {shifts[i, 1]:.2f}) Å"
        )
        axes[i, -1].axis("off")
        axes[i, -1].text(0.0, 0.5, text, fontsize=8, va="center", family="monospace")
    fig.suptitle("paper-ak particles and their ground truth", fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path, dpi=90)
