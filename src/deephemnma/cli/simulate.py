"""``deephemnma simulate``: synthetic particles with ground truth (paper §3.1.2)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import typer
from rich.console import Console

from deephemnma.cli.main import app
from deephemnma.cli.options import check_device, parse_float, parse_mode_list
from deephemnma.errors import InputError

_out = Console()


@app.command("simulate")
def simulate(
    out: Path = typer.Option(
        ...,
        "--out",
        "-o",
        help="Output folder (created; a rerun with "
        "the same settings resumes, finished chunks are kept).",
    ),
    preset: str = typer.Option(
        "paper-ak",
        help="Dataset preset. 'paper-ak': 4AKE chain A "
        "heavy atoms, modes 7-9, helical trajectory, 256² at 0.325 Å, "
        "200 kV, Cs 2 mm, 5,000 Å underfocus, Q 0.1, SNR 0.1 "
        "(BENCHMARK.md). Options given explicitly override it.",
    ),
    n_images: int = typer.Option(
        2000, "--n-images", "-n", help="Number of images (paper: 70,000)."
    ),
    structure: Path = typer.Option(
        None, help="Reference PDB/mmCIF instead of the preset's (centered on its center of mass)."
    ),
    selection: str = typer.Option(
        "heavy", help="Atoms of --structure to use: heavy, all, ca, ca+p, backbone."
    ),
    modes_file: Path = typer.Option(
        None,
        "--modes-file",
        help="Modes file (from 'deephemnma nma') for --structure; computed if absent.",
    ),
    modes: str = typer.Option(
        "7-9",
        help="Mode numbers to deform along, e.g. '7-9' or "
        "'7,8,11' (1-based; 1-6 are rigid); 'none' for a rigid "
        "reference.",
    ),
    trajectory: str = typer.Option(
        "paper-helix",
        help="Amplitude distribution: paper-helix "
        "(q7=-s·r, q8=s·sin(πr), q9=s·cos(πr), r~U(0,1)), uniform "
        "(U[-s,s]), gaussian (N(0,s/2)), zero.",
    ),
    amplitude_scale: float = typer.Option(
        200.0, help="Scale s of the trajectory (dimensionless mode amplitude; paper: 200)."
    ),
    amplitudes: Path = typer.Option(
        None,
        help="Text/CSV table of amplitudes (one row per "
        "conformation, one column per mode); image i takes row "
        "i mod rows. Overrides --trajectory.",
    ),
    angles: str = typer.Option(
        "paper",
        help="Orientations: 'paper' (rot, psi ~ U[0,360)°, "
        "tilt ~ U[0,180)°) or 'uniform' (uniform on SO(3)).",
    ),
    max_shift: float = typer.Option(
        5.0, help="Shifts ~ U[-m, m] in pixels of the output images, x and y (paper: 5)."
    ),
    image_size: int = typer.Option(256, help="Box size in pixels (even; paper: 256)."),
    pixel_size: float = typer.Option(0.325, help="Pixel size in Å (paper: 0.325)."),
    snr: str = typer.Option(
        None,
        help="Signal-to-noise ratio var(signal)/var(noise) per "
        "image after the CTF; 'inf' for noise-free images. Default 0.1 "
        "(paper), or inf with --poses.",
    ),
    noise_before_fraction: float = typer.Option(
        0.5,
        help="Share of the final noise variance "
        "added before the CTF (structural); the rest "
        "is added after (shot).",
    ),
    voltage: float = typer.Option(200.0, help="Acceleration voltage in kV (paper: 200)."),
    cs: float = typer.Option(2.0, help="Spherical aberration in mm (paper: 2)."),
    amplitude_contrast: float = typer.Option(0.1, help="Amplitude contrast fraction (paper: 0.1)."),
    defocus: float = typer.Option(
        5000.0,
        help="Defocus in Å, positive = underfocus (paper: 5,000 Å, its '-0.5 µm' in Xmipp's sign).",
    ),
    defocus_spread: float = typer.Option(
        0.0, help="Per-particle defocus ~ U\\[d - x/2, d + x/2] with this range x in Å."
    ),
    astigmatism: float = typer.Option(0.0, help="Defocus U - V in Å (random angle per particle)."),
    bfactor: float = typer.Option(0.0, help="CTF B-factor envelope in Å²."),
    poses: Path = typer.Option(
        None,
        help="Render at the angles, shifts, CTF (and any "
        "_deephemnmaAmplitudeNN columns) of every row of this RELION "
        "STAR, at its box and pixel size; noise-free unless --snr is "
        "given.",
    ),
    write_map: bool = typer.Option(
        False,
        "--map/--no-map",
        help="Also write the undeformed reference map (Peng potential, same box and voxel size).",
    ),
    chunk_size: int = typer.Option(1000, help="Images per MRCS stack file."),
    seed: int = typer.Option(
        0, help="Random seed; the same seed (and device) gives bit-identical output."
    ),
    device: str = typer.Option(
        "cpu",
        help="cpu or cuda: where images are rendered (the ground truth is the same on "
        "both; the noise is each device's own reproducible stream).",
    ),
    quiet: bool = typer.Option(False, help="No progress bar."),
) -> None:
    """Simulate particle images with known conformation, pose and CTF (RELION STAR + MRCS)."""
    device = check_device(device)
    from deephemnma import simulate as sim

    if preset not in ("paper-ak", "none"):
        raise InputError(
            "unknown preset", field="--preset", expected="paper-ak or none", found=preset
        )
    mode_numbers = parse_mode_list(modes, allow_none=True)
    if snr is None:
        snr = "inf" if poses is not None else "0.1"
    snr_value = parse_float(snr, "--snr")
    config = sim.SimulationConfig(
        n_images=n_images,
        image_size=image_size,
        pixel_size_A=pixel_size,
        snr=snr_value,
        noise_before_fraction=noise_before_fraction,
        voltage_kV=voltage,
        cs_mm=cs,
        amplitude_contrast=amplitude_contrast,
        defocus_min_A=defocus - defocus_spread / 2,
        defocus_max_A=defocus + defocus_spread / 2,
        astigmatism_A=astigmatism,
        bfactor_A2=bfactor,
        angles=angles,
        max_shift_px=max_shift,
        trajectory=trajectory,
        amplitude_scale=amplitude_scale,
        chunk_size=chunk_size,
        seed=seed,
    )
    reference, mode_set = _reference(preset, structure, selection, modes_file, mode_numbers, quiet)
    ground_truth = optics = None
    if poses is not None:
        config, ground_truth, optics = _poses_config(poses, config, mode_set)
    elif amplitudes is not None:
        table = _read_amplitudes(amplitudes)
        ground_truth = sim.sample_ground_truth(config, mode_set.mode_numbers, table)
    star = sim.simulate_dataset(
        reference,
        mode_set,
        config,
        out,
        ground_truth=ground_truth,
        optics=optics,
        write_map=write_map,
        progress=not quiet,
        device=device,
    )
    _out.print(
        f"wrote {config.n_images if ground_truth is None else len(ground_truth)} particles: {star}"
    )


def _reference(preset, structure, selection, modes_file, mode_numbers, quiet):
    from deephemnma import simulate as sim
    from deephemnma.io.pdb import read_structure
    from deephemnma.nma.modes import compute_modes, load_modes

    if structure is None:
        if preset == "none":
            raise InputError(
                "--preset none needs --structure", field="--structure", expected="a PDB/mmCIF file"
            )
        reference, mode_set = sim.paper_ak_reference(progress=not quiet)
        if modes_file is None and tuple(mode_numbers) == sim.PAPER_AK_MODES:
            return reference, mode_set
        structure_path = None
    else:
        structure_path = structure
    if structure_path is not None:
        reference = read_structure(structure_path, selection=selection).centered()
    if not mode_numbers:
        return reference, None
    if modes_file is not None:
        mode_set = load_modes(modes_file)
        if mode_set.structure.n_atoms != reference.n_atoms:
            raise InputError(
                "modes file and structure have different atom counts",
                path=modes_file,
                expected=str(reference.n_atoms),
                found=str(mode_set.structure.n_atoms),
            )
    else:
        mode_set = compute_modes(
            reference, n_modes=max(mode_numbers), progress=not quiet, **sim.PAPER_AK_NMA
        )
    return reference, mode_set.select(mode_numbers)


def _read_amplitudes(path: Path) -> np.ndarray:
    if not path.exists():
        raise InputError("file not found", path=path)
    try:
        delimiter = "," if path.suffix.lower() == ".csv" else None
        return np.atleast_2d(np.loadtxt(path, delimiter=delimiter, comments="#"))
    except ValueError as exc:
        raise InputError(
            f"cannot read amplitude table: {exc}",
            path=path,
            expected="rows of numbers, one column per mode",
        ) from None


def _poses_config(poses: Path, config, mode_set):
    """Rows of a STAR file as ground truth, with its optics (box, pixel size, microscope)."""
    from deephemnma.io import star as st

    table = st.read_particles(poses)
    st.ctf_parameters(table)  # fail early, naming a missing CTF column
    angles = st.angles_deg(table)
    shifts = st.shifts_A(table, missing_ok=True)
    rows = table.particles.drop(columns=["rlnImageName"])
    for k, name in enumerate(("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")):
        rows[name] = angles[:, k]
    rows["rlnOriginXAngst"], rows["rlnOriginYAngst"] = shifts[:, 0], shifts[:, 1]
    for number in [] if mode_set is None else mode_set.mode_numbers:
        label = st.amplitude_label(int(number))
        if label not in rows:
            rows[label] = 0.0
    config = replace(
        config,
        n_images=len(rows),
        image_size=st.common_image_size_px(table),
        pixel_size_A=st.common_pixel_size_A(table),
    )
    return config, rows, table.optics
