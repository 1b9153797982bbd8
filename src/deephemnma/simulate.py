"""Synthetic particles with known conformations, poses and CTF (paper §3.1.2 and variants).

Every image is made by the forward model of :mod:`deephemnma.project` at full size (Peng form
factors integrated over pixels), multiplied by the CTF, with noise before and after the CTF
(:mod:`deephemnma.noise`). Ground truth goes into the STAR file in the columns the estimators
write (RELION poses, ``_deephemnmaAmplitudeNN``), so any result can be scored against it.

Determinism: all ground-truth parameters come from one NumPy generator seeded by ``seed``;
the noise of chunk ``i`` from a torch generator seeded by ``(seed, i)``. A run interrupted and
resumed therefore writes the same bytes as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from deephemnma import __version__
from deephemnma.chunks import claim_folder, write_chunked_stacks
from deephemnma.ctf import ctf_rfft_shared
from deephemnma.errors import InputError, check_settings
from deephemnma.geometry import euler_to_matrix
from deephemnma.noise import add_noise_before_after_ctf
from deephemnma.project import AtomModel, atom_model, density_map, render_images
from deephemnma.structure import Structure

TRAJECTORIES = ("paper-helix", "uniform", "gaussian", "zero")


@dataclass(frozen=True)
class SimulationConfig:
    """Everything that defines a synthetic dataset (all lengths in Å, angles in degrees)."""

    n_images: int = 2000
    image_size: int = 256
    pixel_size_A: float = 0.325
    snr: float = 0.1
    noise_before_fraction: float = 0.5
    voltage_kV: float = 200.0
    cs_mm: float = 2.0
    amplitude_contrast: float = 0.1
    defocus_min_A: float = 5000.0
    defocus_max_A: float = 5000.0
    astigmatism_A: float = 0.0
    bfactor_A2: float = 0.0
    angles: str = "paper"  # "paper": rot, psi ~ U[0,360), tilt ~ U[0,180); "uniform": SO(3)
    max_shift_px: float = 5.0
    trajectory: str = "paper-helix"
    amplitude_scale: float = 200.0
    chunk_size: int = 1000
    seed: int = 0

    def validate(self) -> None:
        checks = [
            (self.n_images > 0, "n_images", "a positive count"),
            (self.image_size > 0 and self.image_size % 2 == 0, "image_size", "an even size"),
            (self.pixel_size_A > 0, "pixel_size_A", "a positive pixel size"),
            (self.snr > 0, "snr", "a positive SNR (inf for no noise)"),
            (0 <= self.noise_before_fraction <= 1, "noise_before_fraction", "a value in [0, 1]"),
            (self.defocus_max_A >= self.defocus_min_A, "defocus_max_A", "≥ defocus_min_A"),
            (self.angles in ("paper", "uniform"), "angles", "'paper' or 'uniform'"),
            (self.trajectory in TRAJECTORIES, "trajectory", " | ".join(TRAJECTORIES)),
            (self.chunk_size > 0, "chunk_size", "a positive count"),
        ]
        check_settings(self, checks, "simulation")


def paper_ak_config(n_images: int = 70_000, seed: int = 0, **overrides) -> SimulationConfig:
    """The paper's benchmark (BENCHMARK.md): 256² at 0.325 Å, 200 kV, Cs 2 mm, 5,000 Å
    underfocus, Q = 0.1, SNR 0.1, paper angles, shifts ±5 px, helical trajectory ±200."""
    return replace(SimulationConfig(n_images=n_images, seed=seed), **overrides)


def trajectory_amplitudes(
    name: str, r: np.ndarray, n_modes: int, scale: float, rng: np.random.Generator
) -> np.ndarray:
    """Amplitudes (n, K) along a named trajectory of the variable ``r`` ∈ [0, 1).

    ``paper-helix`` (three modes): q₁ = −s·r, q₂ = s·sin(πr), q₃ = s·cos(πr) (paper eq. 1);
    ``uniform``: each amplitude ~ U[−s, s]; ``gaussian``: ~ N(0, s/2); ``zero``: rigid.
    """
    n = r.shape[0]
    if name == "paper-helix":
        if n_modes != 3:
            raise InputError(
                "the paper's helical trajectory needs exactly three modes",
                field="trajectory",
                expected="3 modes",
                found=f"{n_modes} modes",
            )
        return np.stack([-scale * r, scale * np.sin(np.pi * r), scale * np.cos(np.pi * r)], 1)
    if name == "uniform":
        return rng.uniform(-scale, scale, size=(n, n_modes))
    if name == "gaussian":
        return rng.normal(0.0, scale / 2, size=(n, n_modes))
    return np.zeros((n, n_modes))


def sample_ground_truth(
    config: SimulationConfig, mode_numbers: np.ndarray, amplitude_table: np.ndarray | None = None
) -> pd.DataFrame:
    """Per-image ground truth as RELION/deephemnma STAR columns (no image names yet).

    ``amplitude_table`` (M, K) replaces the named trajectory: image i takes row i mod M.
    """
    rng = np.random.default_rng(config.seed)
    n = config.n_images
    if config.angles == "paper":
        angles = rng.uniform(0, 1, size=(n, 3)) * np.array([360.0, 180.0, 360.0])
    else:
        u = rng.uniform(0, 1, size=(n, 3))
        angles = np.stack([u[:, 0] * 360, np.degrees(np.arccos(1 - 2 * u[:, 1])), u[:, 2] * 360], 1)
    shifts_A = rng.uniform(-1, 1, size=(n, 2)) * config.max_shift_px * config.pixel_size_A
    defocus = rng.uniform(config.defocus_min_A, config.defocus_max_A, size=n)
    astig_angle = rng.uniform(0, 180, size=n) if config.astigmatism_A else np.zeros(n)
    r = rng.uniform(0, 1, size=n)
    if amplitude_table is not None:
        amplitude_table = np.atleast_2d(amplitude_table)
        if amplitude_table.shape[1] != len(mode_numbers):
            raise InputError(
                "amplitude table has the wrong number of columns",
                expected=f"{len(mode_numbers)} (one per mode)",
                found=str(amplitude_table.shape[1]),
            )
        amps = amplitude_table[np.arange(n) % amplitude_table.shape[0]]
    else:
        amps = trajectory_amplitudes(
            config.trajectory, r, len(mode_numbers), config.amplitude_scale, rng
        )
    table = pd.DataFrame(
        {
            "rlnDefocusU": defocus + config.astigmatism_A / 2,
            "rlnDefocusV": defocus - config.astigmatism_A / 2,
            "rlnDefocusAngle": astig_angle,
            "rlnCtfBfactor": np.full(n, config.bfactor_A2),
            "rlnPhaseShift": np.zeros(n),
            "rlnAngleRot": angles[:, 0],
            "rlnAngleTilt": angles[:, 1],
            "rlnAnglePsi": angles[:, 2],
            "rlnOriginXAngst": shifts_A[:, 0],
            "rlnOriginYAngst": shifts_A[:, 1],
        }
    )
    for k, number in enumerate(mode_numbers):
        table[f"deephemnmaAmplitude{int(number):02d}"] = amps[:, k]
    table["deephemnmaTrajectoryR"] = r
    return table


def optics_table(config: SimulationConfig, phase_flipped: bool = False) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "rlnOpticsGroupName": ["opticsGroup1"],
            "rlnOpticsGroup": [1],
            "rlnVoltage": [config.voltage_kV],
            "rlnSphericalAberration": [config.cs_mm],
            "rlnAmplitudeContrast": [config.amplitude_contrast],
            "rlnImagePixelSize": [config.pixel_size_A],
            "rlnImageSize": [config.image_size],
            "rlnImageDimensionality": [2],
            "rlnCtfDataArePhaseFlipped": [int(phase_flipped)],
        }
    )


def render_particles(
    model: AtomModel,
    rows: pd.DataFrame,
    mode_numbers: np.ndarray,
    config: SimulationConfig,
    generator: torch.Generator | None,
    batch_size: int | None = None,
    optics: pd.DataFrame | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Noisy and noise-free CTF-modulated images (n, H, W) for STAR rows of ground truth.

    Microscope values come from ``optics`` (a RELION optics table the rows link to through
    ``rlnOpticsGroup``) or, if None, from ``config``. Rendered on the model's device, with
    noise from ``generator`` (on that device too)."""
    from deephemnma.io.star import ctf_parameters

    ctf = ctf_parameters(_table(rows, optics, config))

    def columns(names: list[str], dtype) -> torch.Tensor:
        # pandas may hand out read-only views; torch needs its own copy.
        return torch.tensor(rows[names].to_numpy(dtype=np.float64), dtype=dtype)

    angles = columns(["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"], torch.float64)
    shifts = columns(["rlnOriginXAngst", "rlnOriginYAngst"], torch.float32)
    amp_cols = [f"deephemnmaAmplitude{int(m):02d}" for m in mode_numbers]
    amps = columns(amp_cols, torch.float32) if amp_cols else None
    device = model.coords_A.device
    if batch_size is None:
        batch_size = 16 if device.type == "cpu" else 64
    noisy, clean = [], []
    for lo in range(0, len(rows), batch_size):
        sl = slice(lo, lo + batch_size)
        matrices = euler_to_matrix(angles[sl]).to(device=device, dtype=torch.float32)
        proj = render_images(
            model,
            matrices,
            config.image_size,
            config.pixel_size_A,
            None if amps is None else amps[sl].to(device),
            shifts[sl].to(device),
        )
        ctf_values = ctf_rfft_shared(
            ctf.index(sl), config.image_size, config.pixel_size_A, device=device
        )
        n, c = add_noise_before_after_ctf(
            proj, ctf_values, config.snr, config.noise_before_fraction, generator
        )
        noisy.append(n.cpu())
        clean.append(c.cpu())
    return torch.cat(noisy).numpy(), torch.cat(clean).numpy()


def _table(rows: pd.DataFrame, optics: pd.DataFrame | None, config: SimulationConfig):
    from deephemnma.io.star import ParticleTable

    if optics is None:
        optics = optics_table(config)
    if "rlnOpticsGroup" not in rows:
        rows = rows.copy()
        rows.insert(0, "rlnOpticsGroup", int(optics["rlnOpticsGroup"].iloc[0]))
    return ParticleTable(optics, rows)


def chunk_generator(seed: int, chunk_index: int, device="cpu") -> torch.Generator:
    """Independent, reproducible noise stream for one chunk (on ``device``: a GPU draws
    its own noise, reproducible there but not equal to the CPU's)."""
    state = np.random.SeedSequence([seed, chunk_index]).generate_state(2, dtype=np.uint64)
    return torch.Generator(device=device).manual_seed(int(state[0] >> np.uint64(1)))


def simulate_dataset(
    structure: Structure,
    modes,
    config: SimulationConfig,
    out_dir: str | Path,
    ground_truth: pd.DataFrame | None = None,
    optics: pd.DataFrame | None = None,
    write_map: bool = False,
    progress: bool = True,
    device: str = "cpu",
) -> Path:
    """Simulate particles into ``out_dir`` and return the STAR path.

    structure: the reference, coordinates relative to the box center (Å).
    modes: a :class:`deephemnma.nma.modes.Modes` restricted to the modes to use, or None.
    ground_truth: STAR-style rows to render (``--poses``); sampled from ``config`` if None.
    optics: the optics table those rows link to (microscope, pixel size); from ``config`` if
    None.
    Writes ``particles.star``, ``stacks/particles_NNNNN.mrcs``, ``reference.pdb`` (``.cif`` when
    the atoms do not fit PDB),
    ``modes.npz`` (if any), ``simulation.json`` and, with ``write_map``, ``reference_map.mrc``.
    Resumes an interrupted run with the same settings; refuses to mix different settings.
    ``device``: where images are rendered (same ground truth; the noise is each device's
    own reproducible stream).
    """
    from deephemnma.io.pdb import reference_path, write_structure
    from deephemnma.io.star import ParticleTable, write_particles

    config.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mode_numbers = np.asarray([] if modes is None else modes.mode_numbers, dtype=int)
    record = {
        "deephemnma": __version__,
        "config": asdict(config),
        "mode_numbers": mode_numbers.tolist(),
        "n_atoms": structure.n_atoms,
        "poses_from_star": ground_truth is not None,
        "inputs_sha256": _inputs_sha256(structure, modes, ground_truth, optics),
    }
    claim_folder(out / "simulation.json", record, "a simulation")

    if ground_truth is None:
        ground_truth = sample_ground_truth(config, mode_numbers)
    vectors = None if modes is None else modes.vectors
    model = atom_model(structure, vectors, device=device)

    def compute(index: int, sl: slice) -> np.ndarray:
        noisy, _ = render_particles(
            model,
            ground_truth.iloc[sl],
            mode_numbers,
            config,
            chunk_generator(config.seed, index, device),
            optics=optics,
        )
        return noisy

    names = write_chunked_stacks(
        len(ground_truth),
        config.chunk_size,
        out / "stacks",
        "particles",
        config.image_size,
        config.pixel_size_A,
        compute,
        description="simulate",
        progress=progress,
    )
    table = _table(ground_truth, optics, config)
    particles = table.particles.copy()
    particles.insert(0, "rlnImageName", names)
    write_structure(reference_path(out, structure), structure)
    if modes is not None:
        from deephemnma.nma.modes import save_modes

        save_modes(out / "modes.npz", modes)
    if write_map:
        write_reference_map(
            out / "reference_map.mrc", model, config.image_size, config.pixel_size_A
        )
    star = out / "particles.star"
    write_particles(star, ParticleTable(optics=table.optics, particles=particles))
    return star


def write_reference_map(path: Path, model: AtomModel, box_size: int, voxel_size_A: float) -> None:
    """The undeformed reference's Peng potential (noise- and CTF-free) as an MRC map."""
    from deephemnma.io.mrc import write_volume

    volume = density_map(
        model.coords_A.double(),
        model.weight.double(),
        model.sigma_A.double(),
        box_size,
        voxel_size_A,
    )
    write_volume(path, volume.float().cpu().numpy(), voxel_size_A)


def _inputs_sha256(structure, modes, ground_truth, optics) -> dict[str, str]:
    """Fingerprints of what the images are rendered from (the reference's atoms, the modes,
    the poses and optics of ``--poses``), for :func:`deephemnma.chunks.claim_folder`: a
    rerun into the folder with another reference or poses file must not take its chunks."""

    def digest(*parts) -> str:
        h = hashlib.sha256()
        for part in parts:
            if isinstance(part, pd.DataFrame):
                h.update(json.dumps(list(map(str, part.columns))).encode())
                part = pd.util.hash_pandas_object(part, index=False).to_numpy()
            h.update(np.ascontiguousarray(part).tobytes())
        return h.hexdigest()

    atoms = (structure.coords_A, structure.element.astype(str), structure.b_factor_A2)
    inputs = {"reference": digest(*atoms)}
    if modes is not None:
        inputs["modes"] = digest(np.asarray(modes.mode_numbers), modes.vectors)
    if ground_truth is not None:
        inputs["poses"] = digest(ground_truth, *([] if optics is None else [optics]))
    return inputs


# Normal modes of the paper's reference: all heavy atoms, ContinuousFlex's defaults (RTB
# blocks of 10 residues, Tirion cutoff 8 Å) — the same as `deephemnma nma` by default, so a
# modes file from that command reproduces the simulator's modes exactly. Modes 7–9 overlap
# those of the full all-atom network at 0.99 (tests/test_nma.py).
PAPER_AK_NMA = {"method": "rtb", "cutoff_A": 8.0, "block_residues": 10, "gamma": 1.0}
PAPER_AK_MODES = (7, 8, 9)


def paper_ak_reference(progress: bool = False):
    """The paper-ak reference: 4AKE chain A heavy atoms centered on their center of mass,
    and its modes 7–9 (``Modes``), computed as :data:`PAPER_AK_NMA` says."""
    from deephemnma.io.pdb import package_data_path, read_structure
    from deephemnma.nma.modes import compute_modes

    structure = read_structure(package_data_path("4ake_A.pdb"), selection="heavy").centered()
    modes = compute_modes(structure, n_modes=max(PAPER_AK_MODES), progress=progress, **PAPER_AK_NMA)
    return structure, modes.select(list(PAPER_AK_MODES))
