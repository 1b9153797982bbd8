"""``deephemnma nma``: normal modes of an atomic model (elastic network, RTB), with overlap
against a target, exports (NMWiz, ContinuousFlex), animations and a figure."""

from __future__ import annotations

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
        help="Atomic model (PDB/mmCIF, optionally .gz), or a modes file (.npz) written by "
        "this command to analyse/export again without recomputing.",
    ),
    output: Path = typer.Option(
        None,
        "--output",
        "-o",
        help="Modes file to write (.npz: reference atoms, eigenvalues, unit-norm 3N vectors, "
        "parameters). Default: <MODEL name>_modes.npz in the current folder.",
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
    quiet: bool = typer.Option(False, help="No progress messages."),
) -> None:
    """Normal modes of an atomic model (elastic network, Tirion/ANM; RTB or full Hessian).

    Unit-norm 3N vectors numbered from 1 (1-6 rigid), largest component positive.
    """
    from deephemnma.nma.analysis import collectivity, compare_with_target
    from deephemnma.nma.modes import compute_modes, load_modes, parse_mode_numbers, save_modes

    if model.suffix.lower() == ".npz":
        mode_set = load_modes(model)
    else:
        if modes is not None:  # fail before computing, not after
            parse_mode_numbers(modes, available=range(1, n_modes + 1))
        structure = _read(model, selection, chains)
        mode_set = compute_modes(
            structure,
            n_modes=n_modes,
            method=method,
            cutoff_A=cutoff,
            gamma=gamma,
            block_residues=block_residues,
            progress=not quiet,
        )
        output = output or Path(f"{_stem(model)}_modes.npz")
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


def _read(path: Path, selection: str, chains: str | None):
    from deephemnma.io.pdb import read_structure

    chain_list = [c.strip() for c in chains.split(",") if c.strip()] if chains else None
    return read_structure(path, selection=selection, chains=chain_list)


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".cif", ".mmcif", ".pdb", ".ent"):
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
