"""Normal-mode analysis at adenylate-kinase and ribosome scale (issue 4 goals on a 2-core CPU:
the 6ZU5 ribosome's 14,219 CA+P atoms as a full network, and its 165,175 atoms with RTB, each
in ≤ 60 s and ≤ 4 GB; ProDy's sparse ANM took 414 s on the CA+P network).

    python bench/bench_nma.py            # all cases
    python bench/bench_nma.py --case ribosome-all-rtb

Each case runs in a fresh process, so its peak memory (max RSS) is its own. Times: reading
the model, and computing 20 modes (network, Hessian/projection, eigensolver, expansion).
Writes ``bench/results/nma.json`` and prints a table.
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--case", choices=sorted(CASES), help="run one case (in-process) and print its JSON record"
    )
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case)))
        return
    # The table module imports torch; children stay lean so peak memory is the NMA's own.
    sys.path.insert(0, str(Path(__file__).parent))
    os.environ.setdefault("COLUMNS", "160")  # a readable table when not on a terminal
    from common import report

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
