"""Normal-mode analysis at adenylate-kinase and ribosome scale (issue 4 goals on a 2-core CPU:
the 6ZU5 ribosome's 14,219 CA+P atoms as a full network, and its 165,175 atoms with RTB, each
in ≤ 60 s and ≤ 4 GB; ProDy's sparse ANM took 414 s on the CA+P network).

    python bench/bench_nma.py            # all cases
    python bench/bench_nma.py --case ribosome-all-rtb

Each case runs in a fresh process, so its peak memory (max RSS) is its own. Times: reading
the model, and computing 20 modes (network, Hessian/projection, eigensolver, expansion).
Writes ``bench/results/nma.json`` and prints a table.

Map cases (``bench/results/nma_maps.json``; one torch thread, see docs/nma.md): a map simulated
from a model (Peng densities, B-factor blur) → pseudoatoms → their 20 modes; and the HEMNMA-3D
fit of 4AKE's modes 7–12 into a 1AKE map.

    python bench/bench_nma.py --maps     # map cases only
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RIBOSOME = ROOT / "tests" / "data" / "6zu5.cif.gz"

# name: (model, selection, method, cutoff_A or None for the default, block_residues)
CASES = {
    "4ake-heavy-rtb": ("4ake_A.pdb", "heavy", "rtb", None, 10),
    "4ake-heavy-anm": ("4ake_A.pdb", "heavy", "anm", 8.0, 10),
    "4ake-ca-anm": ("4ake_A.pdb", "ca", "anm", 15.0, 10),
    "ribosome-ca+p-anm-20A": (RIBOSOME, "ca+p", "anm", 20.0, 10),
    "ribosome-ca+p-anm-15A": (RIBOSOME, "ca+p", "anm", 15.0, 10),
    "ribosome-ca+p-rtb-paper": (RIBOSOME, "ca+p", "rtb", 20.0, 20),
    "ribosome-all-rtb": (RIBOSOME, "heavy", "rtb", None, 10),
}
N_MODES = 20

# name: (model, voxel_A, B-factor blur Å²) — map → pseudoatoms → modes; or the 4AKE → 1AKE fit
MAP_CASES = {
    "4ake-map-pseudoatoms": ("4ake_A.pdb", 1.5, 300.0),
    "ribosome-map-pseudoatoms": (RIBOSOME, 3.0, 1600.0),
    "4ake-fit-1ake-map": ("1ake.pdb", 1.5, 100.0),
}


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_case(name: str) -> dict:
    """Run one case in this process; returns its record."""
    from deephemnma.errors import InputError
    from deephemnma.io.pdb import package_data_path, read_structure
    from deephemnma.nma import compute_modes

    model, selection, method, cutoff_A, block = CASES[name]
    path = model if isinstance(model, Path) else package_data_path(model)
    record = {
        "case": name,
        "selection": selection,
        "method": method,
        "block": block,
        "cutoff_A": cutoff_A if cutoff_A is not None else "default",
    }
    start = time.perf_counter()
    structure = read_structure(path, selection=selection)
    record["atoms"] = structure.n_atoms
    record["read_s"] = time.perf_counter() - start
    wall, cpu = time.perf_counter(), _cpu_s()
    try:
        modes = compute_modes(
            structure,
            n_modes=N_MODES,
            method=method,
            cutoff_A=cutoff_A,
            block_residues=block,
            progress=False,
        )
    except InputError as exc:
        record["outcome"] = "InputError"
        record["detail"] = str(exc)
        modes = None
    record["modes_s"] = time.perf_counter() - wall
    record["cpu_s"] = _cpu_s() - cpu
    record["peak_MB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if modes is not None:
        p = modes.parameters
        record.update(
            outcome="ok",
            cutoff_A=p["cutoff_A"],
            solver=p["solver"].split(" ")[0].rstrip(","),
            solver_detail=p["solver"],
            n_dof=p.get("n_dof"),
            springs=p["n_springs"],
            lambda_7_9=[float(v) for v in modes.eigenvalues[6:9]],
            steps_s=p["timings_s"],
        )
    return record


def _simulated_map(structure, voxel_A: float, bfactor_A2: float, center: bool = True):
    """Map (box just holding the model) of a structure, centered on its center of mass unless
    ``center`` is false; elements without a Peng factor (Zn in 6ZU5) left out."""
    import math

    import numpy as np
    import torch

    from deephemnma.formfactors import PENG_1996
    from deephemnma.project import atom_model, density_map

    structure = structure.select(np.isin(structure.element, list(PENG_1996)))
    structure = structure.centered() if center else structure
    box = 2 * math.ceil(float(np.abs(structure.coords_A).max()) / voxel_A) + 8
    box += box % 2
    model = atom_model(structure, bfactor_A2=bfactor_A2, dtype=torch.float32)
    volume = density_map(model.coords_A, model.weight, model.sigma_A, box, voxel_A).numpy()
    return structure, volume, box


def run_map_case(name: str) -> dict:
    """Run one map case in this process (one torch thread); returns its record."""
    import torch

    from deephemnma.io.pdb import package_data_path, read_structure
    from deephemnma.nma import compute_modes
    from deephemnma.nma.analysis import kabsch, match_atoms
    from deephemnma.nma.fit import fit_to_map
    from deephemnma.pseudoatoms import map_to_pseudoatoms, pseudoatom_modes

    torch.set_num_threads(1)
    model, voxel_A, bfactor_A2 = MAP_CASES[name]
    path = model if isinstance(model, Path) else package_data_path(model)
    record = {"case": name, "voxel_A": voxel_A, "B_A2": bfactor_A2}
    start = time.perf_counter()
    structure = read_structure(path, selection="heavy")
    if name == "4ake-fit-1ake-map":
        reference = read_structure(package_data_path("4ake_A.pdb"), selection="heavy")
        target = read_structure(path, selection="heavy", chains=["A"])
        ref_idx, tgt_idx = match_atoms(reference, target, ("CA",))
        rotation, shift = kabsch(target.coords_A[tgt_idx], reference.coords_A[ref_idx])
        # 1AKE superposed onto 4AKE, both relative to 4AKE's center of mass (the box center).
        moved = target.coords_A @ rotation.T + shift - reference.center_of_mass_A()
        structure = target.with_coords(moved)
    fit = name == "4ake-fit-1ake-map"
    structure, volume, box = _simulated_map(structure, voxel_A, bfactor_A2, center=not fit)
    record.update(atoms=structure.n_atoms, box=box, map_s=time.perf_counter() - start)
    wall, cpu = time.perf_counter(), _cpu_s()
    if fit:
        modes = compute_modes(reference.centered(), n_modes=N_MODES, progress=False)
        result = fit_to_map(modes, volume, voxel_A, mode_numbers=range(7, 13), progress=False)
        record.update(
            fit_s=time.perf_counter() - wall,
            correlation_before=result.correlation_before,
            correlation_after=result.correlation_after,
            ranking=[int(m) for m in result.ranking],
            amplitudes=[round(float(q), 1) for q in result.amplitudes],
        )
    else:
        pseudo, info = map_to_pseudoatoms(volume, voxel_A, progress=False)
        record.update(
            pseudoatoms=info.n_atoms,
            error=info.representation_error,
            pseudoatoms_s=time.perf_counter() - wall,
        )
        t0 = time.perf_counter()
        modes = pseudoatom_modes(pseudo, N_MODES, progress=False)
        record.update(
            modes_s=time.perf_counter() - t0,
            cutoff_A=modes.parameters["cutoff_A"],
            cutoff_rule=modes.parameters["cutoff_rule"],
            solver=modes.parameters["solver"],
        )
    record["cpu_s"] = _cpu_s() - cpu
    record["peak_MB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return record


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--case",
        choices=sorted(CASES) + sorted(MAP_CASES),
        help="run one case (in-process) and print its JSON record",
    )
    parser.add_argument("--maps", action="store_true", help="run the map cases only")
    args = parser.parse_args()
    if args.case:
        run = run_map_case if args.case in MAP_CASES else run_case
        print(json.dumps(run(args.case)))
        return
    # The table module imports torch; children stay lean so peak memory is the NMA's own.
    sys.path.insert(0, str(Path(__file__).parent))
    os.environ.setdefault("COLUMNS", "160")  # a readable table when not on a terminal
    from common import report

    if not args.maps:
        _run_atom_cases(report)
    rows = []
    for name in MAP_CASES:
        done = subprocess.run(
            [sys.executable, __file__, "--case", name], check=True, capture_output=True, text=True
        )
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    report(
        "nma_maps",
        rows,
        [
            "case",
            "atoms",
            "box",
            "voxel_A",
            "map_s",
            "pseudoatoms",
            "error",
            "pseudoatoms_s",
            "cutoff_A",
            "modes_s",
            "fit_s",
            "correlation_after",
            "cpu_s",
            "peak_MB",
        ],
    )


def _run_atom_cases(report) -> None:
    rows = []
    for name in CASES:
        done = subprocess.run(
            [sys.executable, __file__, "--case", name], check=True, capture_output=True, text=True
        )
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    report(
        "nma",
        rows,
        [
            "case",
            "atoms",
            "method",
            "cutoff_A",
            "block",
            "n_dof",
            "solver",
            "read_s",
            "modes_s",
            "cpu_s",
            "peak_MB",
            "outcome",
        ],
    )
    for row in rows:
        if "detail" in row:
            print(f"{row['case']}: {row['detail']}")


if __name__ == "__main__":
    main()
