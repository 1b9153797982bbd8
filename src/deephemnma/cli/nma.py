"""``deephemnma nma``: normal modes of an atomic model (elastic network, RTB) or of an EM map
(through Gaussian pseudoatoms), with overlap against a target, flexible fitting into a target
map (HEMNMA-3D mode ranking), exports (NMWiz, ContinuousFlex), animations and a figure."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from deephemnma.cli.main import app
from deephemnma.errors import InputError

_out = Console()


@app.command("nma")
def nma(
    model: Path = typer.Argument(
        ...,
        help="Atomic model (PDB/mmCIF, optionally .gz); an EM map (.mrc/.map/.ccp4), "
        "turned into Gaussian pseudoatoms first (written beside the modes as "
        "MAPNAME_pseudoatoms.pdb and .json); or a modes file (.npz) written by this "
        "command to analyse/export/fit again without recomputing.",
    ),
    output: Path = typer.Option(
        None,
        "--output",
        "-o",
        help="Modes file to write (.npz: reference atoms, eigenvalues, unit-norm 3N vectors, "
        "parameters). Default: MODELNAME_modes.npz in the current folder.",
    ),
    selection: str = typer.Option(
        "heavy",
        help="Atoms that form the network: heavy (all non-hydrogen, no water; the "
        "paper's AK case), ca, ca+p (the paper's ribosome), backbone, all.",
    ),
    chains: str = typer.Option(None, help="Chains to keep, comma-separated (default: all)."),
    method: str = typer.Option(
        "auto",
        help="rtb (rotation-translation blocks, Tama et al. 2000; ContinuousFlex's "
        "method for atoms), anm (full Hessian), or auto (rtb for atoms, anm for pseudoatoms).",
    ),
    cutoff: float = typer.Option(
        None,
        "--cutoff",
        min=0.0,
        help="Spring cut-off in Å (springs join nodes at distance ≤ cutoff). Default: 8 Å for "
        "atoms (ContinuousFlex), 15 Å for CA (ProDy), 20 Å for CA+P (the paper's ribosome), "
        "95th percentile of nearest-neighbour distances for pseudoatoms (ContinuousFlex).",
    ),
    gamma: float = typer.Option(
        1.0,
        min=0.0,
        help="Spring constant (energy/Å²); scales the eigenvalues only. Default 1.",
    ),
    block_residues: int = typer.Option(
        10,
        "--block-residues",
        min=1,
        help="RTB block size in consecutive residues (ContinuousFlex default 10; the paper's "
        "ribosome 20). Blocks never span chain breaks.",
    ),
    n_modes: int = typer.Option(
        20,
        "--n-modes",
        min=7,
        help="Modes to compute, counting the 6 rigid-body modes (ContinuousFlex default 20: "
        "modes 1-20, of which 7-20 are flexible).",
    ),
    modes: str = typer.Option(
        None,
        "--modes",
        help="Modes to print, compare, export and animate, e.g. '7-9' or '7-9,11' (1-based; "
        "1-6 are rigid). Default: all flexible modes computed (7 to --n-modes).",
    ),
    compare: Path = typer.Option(
        None,
        "--compare",
        help="Target model (PDB/mmCIF): print each mode's overlap (|cos|) with the "
        "displacement reference → target after superposition, and the cumulative overlap.",
    ),
    compare_atoms: str = typer.Option(
        "CA,P",
        "--compare-atoms",
        help="Atom names matched (by chain, residue number, name) for --compare; 'all' for "
        "every common atom. Default CA,P.",
    ),
    nmd: Path = typer.Option(
        None, "--nmd", help="Also write the modes for ProDy/NMWiz (VMD) as this .nmd file."
    ),
    continuousflex: Path = typer.Option(
        None,
        "--continuousflex",
        help="Also write ContinuousFlex/Scipion mode files into this folder "
        "(modes/vec.N, modes.xmd, atoms.pdb).",
    ),
    animate: Path = typer.Option(
        None,
        "--animate",
        help="Write one multi-model PDB (mmCIF for big models) per mode "
        "into this folder, deformed over ±--amplitude.",
    ),
    amplitude: float = typer.Option(
        200.0,
        help="Animation amplitude (dimensionless; atom i moves by q·v_i Å; unit-norm "
        "3N vectors, so 200 moves 1,656 AK atoms by ~4.9 Å RMS). Default 200 (paper's AK "
        "range; ContinuousFlex default 50).",
    ),
    frames: int = typer.Option(20, min=2, help="Frames per animation (one sinusoidal loop)."),
    figure: Path = typer.Option(
        None, "--figure", help="Eigenvalue/collectivity (and overlap) figure, e.g. modes.png."
    ),
    voxel_size: float = typer.Option(
        None,
        "--voxel-size",
        min=0.0,
        help="Voxel size in Å of the input maps (MODEL map and --fit-map), overriding "
        "their headers (needed when a header has 0).",
    ),
    threshold: float = typer.Option(
        None,
        "--threshold",
        help="MODEL map: density above which voxels are the molecule (map units). Default: "
        "mean + 3 std of the box's outer shell, at least 1% of the maximum above it.",
    ),
    pseudoatom_sigma: float = typer.Option(
        None,
        "--pseudoatom-sigma",
        min=0.0,
        help="MODEL map: Gaussian width σ of the pseudoatoms in Å. Default 1.5 voxels "
        "(Xmipp); about resolution/4 suits a map (a map sharper than σ stalls the error).",
    ),
    target_error: float = typer.Option(
        0.05,
        "--target-error",
        min=0.0,
        max=1.0,
        help="MODEL map: add pseudoatoms until ||V - V_pseudo|| / ||V|| over the voxels "
        "above threshold is below this (default 0.05 = 5%, Jonić & Sorzano 2016).",
    ),
    max_pseudoatoms: int = typer.Option(
        20000, "--max-pseudoatoms", min=4, help="MODEL map: at most this many pseudoatoms."
    ),
    fit_map: Path = typer.Option(
        None,
        "--fit-map",
        help="Target EM map (MRC): fit the reference into it by optimizing the amplitudes of "
        "the --modes (flexible ones; default 7 to --n-modes) and a rigid pose, coarse to "
        "fine (HEMNMA-3D, the paper's way to pick modes for real data); print the modes "
        "ranked by |amplitude|, write the fitted model and a JSON with amplitudes, pose and "
        "correlations.",
    ),
    fit_resolution: float = typer.Option(
        None,
        "--fit-resolution",
        min=0.0,
        help="Final low-pass resolution of the fit in Å (Gaussian σ = resolution/(π√2), "
        "as ChimeraX molmap). Default: 4 voxels of the target map (twice Nyquist); give "
        "the target's resolution when coarser.",
    ),
    fit_levels: int = typer.Option(
        3,
        "--fit-levels",
        min=1,
        help="Coarse-to-fine levels at resolution × 4, × 2, × 1 (default 3).",
    ),
    fit_steps: int = typer.Option(
        50, "--fit-steps", min=1, help="L-BFGS iterations per level (default 50)."
    ),
    fit_placement: str = typer.Option(
        "center",
        "--fit-placement",
        help="Initial placement of the reference in the target map: center (model's "
        "center of mass onto the map's, default) or header (coordinates already in the "
        "map's frame, as ChimeraX places the map from its header origin).",
    ),
    fit_model: Path = typer.Option(
        None,
        "--fit-model",
        help="Fitted model to write (PDB/mmCIF), in the target map's frame (header origin). "
        "Default: MODESNAME_fit.pdb beside the modes file.",
    ),
    fit_json: Path = typer.Option(
        None,
        "--fit-json",
        help="Fit report (amplitudes, ranking, pose, correlations). Default: "
        "MODESNAME_fit.json beside the modes file.",
    ),
    quiet: bool = typer.Option(False, help="No progress messages."),
) -> None:
    """Normal modes of an atomic model or EM map (elastic network, Tirion/ANM; RTB or full
    Hessian; maps through Gaussian pseudoatoms), and flexible fitting into a target map.

    Unit-norm 3N vectors numbered from 1 (1-6 rigid), largest component positive.
    """
    from deephemnma.nma.analysis import collectivity, compare_with_target
    from deephemnma.nma.modes import compute_modes, load_modes, parse_mode_numbers, save_modes
    from deephemnma.nma.network import is_pseudoatomic

    if fit_placement not in ("center", "header"):
        raise InputError(
            "unknown placement",
            field="--fit-placement",
            expected="center or header",
            found=fit_placement,
        )
    if fit_map is not None and not fit_map.is_file():  # fail before computing, not after
        raise InputError("target map not found", path=fit_map, field="--fit-map")
    if fit_map is not None and modes is not None:
        rigid = [m for m in parse_mode_numbers(modes) if m <= 6]
        if rigid:
            raise InputError(
                "modes 1-6 are rigid-body motions; --fit-map fits the pose separately",
                field="--modes",
                expected="flexible modes ≥ 7 with --fit-map",
                found=",".join(str(m) for m in rigid),
            )
    if model.suffix.lower() == ".npz":
        mode_set = load_modes(model)
    else:
        if modes is not None:  # fail before computing, not after
            parse_mode_numbers(modes, available=range(1, n_modes + 1))
        output = output or Path(f"{_stem(model)}_modes.npz")
        if _is_map(model):
            structure = _pseudoatoms(
                model,
                output,
                voxel_size,
                threshold,
                pseudoatom_sigma,
                target_error,
                max_pseudoatoms,
                quiet,
            )
        else:
            structure = _read_model(model, selection, chains)
        if cutoff is None and is_pseudoatomic(structure) and method in ("auto", "anm"):
            from deephemnma.pseudoatoms import pseudoatom_modes

            # Spacing-derived cut-off, raised until the network is rigid (docs/nma.md).
            mode_set = pseudoatom_modes(structure, n_modes, gamma=gamma, progress=not quiet)
        else:
            mode_set = compute_modes(
                structure,
                n_modes=n_modes,
                method=method,
                cutoff_A=cutoff,
                gamma=gamma,
                block_residues=block_residues,
                progress=not quiet,
            )
    if modes is None:
        wanted = [int(m) for m in mode_set.mode_numbers if m > 6]
    else:
        wanted = parse_mode_numbers(modes, available=mode_set.mode_numbers)
    if output is not None:
        save_modes(output, mode_set)
    shown = mode_set.select(wanted)
    comparison = None
    if compare is not None:
        atoms = (
            None
            if compare_atoms.strip().lower() == "all"
            else tuple(a.strip() for a in compare_atoms.split(",") if a.strip())
        )
        target = _read(compare, "all", None)
        comparison = compare_with_target(shown, target, atom_names=atoms)
    _print_table(shown, collectivity(shown.vectors), comparison, mode_set.parameters)
    _export(shown, nmd, continuousflex, animate, amplitude, frames, figure, comparison)
    if output is not None:
        _out.print(f"modes {_span(mode_set.mode_numbers)} written to {output}")
    if fit_map is not None:
        base = output if output is not None else Path(model.name)
        _fit(
            mode_set,
            wanted if modes is not None else None,
            fit_map,
            voxel_size,
            fit_resolution,
            fit_levels,
            fit_steps,
            fit_placement,
            fit_model,
            fit_json,
            base,
            quiet,
        )


_MAP_SUFFIXES = (".mrc", ".map", ".ccp4", ".rec")


def _is_map(path: Path) -> bool:
    name = path.name.lower()
    name = name[:-3] if name.endswith(".gz") else name
    return name.endswith(_MAP_SUFFIXES)


def _map_center_A(path: Path, shape_zyx, voxel_size_A: float) -> np.ndarray:
    """(x, y, z) Å of the map's center voxel (index n // 2) in the map's own frame, as
    viewers place it: header origin (or n*start × voxel when the origin is 0) + index × voxel."""
    import mrcfile

    with mrcfile.open(path, header_only=True, permissive=True) as mrc:
        h = mrc.header
        origin = np.array([float(h.origin.x), float(h.origin.y), float(h.origin.z)])
        if not np.any(origin):
            start = np.array([int(h.nxstart), int(h.nystart), int(h.nzstart)], dtype=float)
            origin = start * voxel_size_A
    return origin + (np.array(shape_zyx)[::-1] // 2) * voxel_size_A


def _pseudoatoms(path, output, voxel_size, threshold, sigma, target_error, max_atoms, quiet):
    """Map → pseudoatoms (in the map's frame), written beside the modes file as PDB + JSON."""
    import json

    from deephemnma.io.atomic import atomic_write_bytes
    from deephemnma.io.mrc import read_volume
    from deephemnma.io.pdb import write_structure
    from deephemnma.pseudoatoms import map_to_pseudoatoms

    volume, voxel_A = read_volume(path, voxel_size)
    structure, info = map_to_pseudoatoms(
        volume,
        voxel_A,
        threshold=threshold,
        sigma_A=sigma,
        target_error=target_error,
        max_atoms=max_atoms,
        progress=not quiet,
    )
    center = _map_center_A(path, volume.shape, voxel_A)
    structure = replace(
        structure,
        coords_A=structure.coords_A + center,
        metadata={**structure.metadata, "source": str(path), "map_center_A": center.tolist()},
    )
    pdb = Path(output).parent / f"{_stem(path)}_pseudoatoms.pdb"
    write_structure(pdb, structure)
    report = {
        **info.to_dict(),
        "map": str(path),
        "pdb": str(pdb),
        "frame": "coordinates in the map's frame: Å from the center voxel + map_center_A",
        "map_center_A": center.tolist(),
        "b_factor": "8π²σ² (Å²)",
    }
    atomic_write_bytes(pdb.with_suffix(".json"), json.dumps(report, indent=1).encode())
    state = "" if info.converged else f" — NOT at the target: {info.message}"
    _out.print(
        f"{info.n_atoms:,} pseudoatoms (σ {info.sigma_A:.3g} Å, threshold "
        f"{info.threshold:.4g}), representation error {100 * info.representation_error:.2f} %"
        f"{state}; written to {pdb} (+ .json)"
    )
    return structure


def _fit(
    mode_set,
    fit_modes,
    path,
    voxel_size,
    resolution,
    levels,
    steps,
    placement,
    model_path,
    json_path,
    base,
    quiet,
):
    """HEMNMA-3D: fit into the target map, print the ranking, write model and JSON."""
    import json

    from deephemnma.geometry import geodesic_distance_deg
    from deephemnma.io.atomic import atomic_write_bytes
    from deephemnma.io.mrc import read_volume
    from deephemnma.io.pdb import write_structure
    from deephemnma.nma.export import model_suffix
    from deephemnma.nma.fit import fit_to_map, map_center_of_mass_A, reference_gaussians

    target, voxel_A = read_volume(path, voxel_size)
    center = _map_center_A(path, target.shape, voxel_A)
    reference = mode_set.structure
    if placement == "header":
        initial = -center
    else:
        weight, _ = reference_gaussians(reference)
        model_com = (reference.coords_A * weight[:, None]).sum(0) / weight.sum()
        initial = map_center_of_mass_A(target, voxel_A) - model_com
    result = fit_to_map(
        mode_set,
        target,
        voxel_A,
        mode_numbers=fit_modes,
        resolution_A=resolution,
        levels=levels,
        steps=steps,
        initial_shift_A=initial,
        progress=not quiet,
    )
    stem = Path(base).name.removesuffix(".npz")
    folder = Path(base).parent
    model_path = model_path or folder / f"{stem}_fit{model_suffix(reference)}"
    json_path = json_path or folder / f"{stem}_fit.json"
    write_structure(model_path, reference.with_coords(result.coords_A + center))
    shift_map = result.shift_A + center
    report = result.to_dict()
    report.update(
        {
            "target_map": str(path),
            "voxel_size_A": voxel_A,
            "placement": placement,
            "initial_shift_A": [float(v) for v in initial],
            "shift_A": [float(v) for v in shift_map],
            "frame": "fitted = A (r + Σ q_k v_k) + shift_A, with r the reference coordinates "
            "of the modes file; in the target map's frame (header origin), as the fitted "
            "model file",
            "map_center_A": center.tolist(),
            "fitted_model": str(model_path),
        }
    )
    atomic_write_bytes(json_path, json.dumps(report, indent=1).encode())
    _print_fit(result, path)
    import torch

    angle = float(
        geodesic_distance_deg(torch.as_tensor(result.matrix), torch.eye(3, dtype=torch.float64))
    )
    _out.print(
        f"correlation with {path.name} at {result.resolution_A:.3g} Å: "
        f"{result.correlation_before:.4f} → {result.correlation_after:.4f}; rotation "
        f"{angle:.2f}°, shift {np.linalg.norm(result.shift_A - initial):.2f} Å after placement"
    )
    _out.print(f"fitted model written to {model_path}, fit report to {json_path}")


def _print_fit(result, path) -> None:
    table = Table(title=f"modes ranked by contribution to the fit into {path.name}")
    for name in ("rank", "mode", "amplitude", "RMS (Å)", "contribution", "corr. without"):
        table.add_column(name, justify="right")
    position = {int(m): i for i, m in enumerate(result.mode_numbers)}
    for rank, number in enumerate(result.ranking, start=1):
        i = position[int(number)]
        table.add_row(
            str(rank),
            str(int(number)),
            f"{result.amplitudes[i]:.1f}",
            f"{result.rms_displacement_A[i]:.2f}",
            f"{result.contribution[i]:.3f}",
            f"{result.correlation_without[i]:.4f}",
        )
    _out.print(table)


def _read(path: Path, selection: str, chains: str | None):
    from deephemnma.io.pdb import read_structure

    chain_list = [c.strip() for c in chains.split(",") if c.strip()] if chains else None
    return read_structure(path, selection=selection, chains=chain_list)


def _read_model(path: Path, selection: str, chains: str | None):
    """The reference model; a pseudoatom file (every atom named DENS — PDB keeps only "DEN"
    of the residue name DENS) is flagged as such, with the Gaussian width and weights from
    the JSON written beside it when present."""
    import json

    structure = _read(path, selection, chains)
    names = np.char.strip(np.asarray(structure.atom_name).astype(str))
    if not np.all(names == "DENS"):
        return structure
    metadata = {**structure.metadata, "pseudoatoms": True}
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        try:
            info = json.loads(sidecar.read_text())
        except (OSError, ValueError):
            info = {}
        weights = info.get("weights")
        if isinstance(weights, list) and len(weights) == structure.n_atoms:
            metadata["pseudoatom_weights"] = weights
        if isinstance(info.get("sigma_A"), int | float):
            metadata["pseudoatom_sigma_A"] = float(info["sigma_A"])
    return replace(structure, metadata=metadata)


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".cif", ".mmcif", ".pdb", ".ent", *_MAP_SUFFIXES):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return name or "model"


def _span(numbers) -> str:
    numbers = sorted(int(n) for n in numbers)
    return f"{numbers[0]}-{numbers[-1]}" if len(numbers) > 1 else str(numbers[0])


def _print_table(modes, kappa, comparison, parameters) -> None:
    p = parameters
    title = (
        f"{p.get('method', '?')}, {p.get('n_nodes', modes.n_atoms):,} nodes, cut-off "
        f"{p.get('cutoff_A', float('nan')):g} Å, gamma {p.get('gamma', 1.0):g}"
    )
    if p.get("method") == "rtb":
        title += f", blocks of {p.get('block_residues')} residues"
    table = Table(title=title)
    table.add_column("mode", justify="right")
    table.add_column("eigenvalue (γ)", justify="right")
    table.add_column("collectivity", justify="right")
    if comparison is not None:
        table.add_column("overlap", justify="right")
        table.add_column("cumulative", justify="right")
    for k, number in enumerate(modes.mode_numbers):
        row = [str(int(number)), f"{modes.eigenvalues[k]:.4e}", f"{kappa[k]:.3f}"]
        if comparison is not None:
            cum = comparison.cumulative[k]
            row += [f"{comparison.overlap[k]:.3f}", "" if np.isnan(cum) else f"{cum:.3f}"]
        table.add_row(*row)
    _out.print(table)
    if comparison is not None:
        names = "all" if comparison.atom_names is None else "/".join(comparison.atom_names)
        _out.print(
            f"target: {comparison.n_matched} matched {names} atoms, RMSD "
            f"{comparison.rmsd_A:.2f} Å after superposition"
        )


def _export(modes, nmd, continuousflex, animate, amplitude, frames, figure, comparison) -> None:
    from deephemnma.nma import export

    if nmd is not None:
        _out.print(f"NMWiz file: {export.write_nmd(nmd, modes)}")
    if continuousflex is not None:
        _out.print(f"ContinuousFlex modes: {export.write_continuousflex(continuousflex, modes)}")
    if animate is not None:
        flexible = [int(m) for m in modes.mode_numbers if m > 6]
        if not flexible:
            raise InputError(
                "only rigid-body modes selected: nothing to animate",
                field="--modes",
                expected="modes ≥ 7",
            )
        paths = export.write_animations(animate, modes, flexible, amplitude, frames)
        _out.print(f"animations: {len(paths)} files in {animate}")
    if figure is not None:
        _out.print(f"figure: {export.plot_modes(figure, modes, comparison)}")
