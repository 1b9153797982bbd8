"""Where Stage 1's and the hybrid refinement's time goes on a GPU (for a short lease):

    python bench/gpu_align_profile.py --particles PRE.star --modes M.npz --reference R.pdb
    python bench/gpu_align_profile.py --simulate 1024      # makes its own paper-ak data

On one H200 a whole 1,000-image ``align --device cuda`` or ``refine --device cuda`` command
ran at 61 images/s, start-up and library included (docs/gpu.md). This separates the parts,
in one process on the device:

- the projection library (built once per run);
- ``align_images`` (global search + coarse-to-fine refinement), per batch size;
- ``refine_from`` (hybrid refinement from the truth perturbed by the network's error sizes),
  per batch size;

each as images/s (CUDA-synchronized, after a warm-up batch), and the top operators of one
profiled ``align_images`` batch. Writes JSON and prints a table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from deephemnma.align.hybrid import RefineConfig, refine_from  # noqa: E402
from deephemnma.align.refine import Pose  # noqa: E402
from deephemnma.align.run import load_reference  # noqa: E402
from deephemnma.align.stage1 import AlignConfig, align_images, make_library  # noqa: E402
from deephemnma.geometry import euler_to_matrix  # noqa: E402
from deephemnma.io.mrc import ParticleImages  # noqa: E402
from deephemnma.io.star import (  # noqa: E402
    amplitudes,
    angles_deg,
    common_pixel_size_A,
    ctf_parameters,
    read_particles,
    shifts_A,
)
from deephemnma.project import atom_model  # noqa: E402


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def simulate(folder: Path, n: int, shards: int) -> tuple[Path, Path, Path]:
    """``n`` paper-ak images, preprocessed to 128² (one process per shard)."""
    dh = [sys.executable, "-m", "deephemnma"]
    import os

    path = f"{ROOT / 'src'}:{os.environ.get('PYTHONPATH', '')}"  # keeps carried wheels
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    per = -(-n // shards)
    procs = [
        subprocess.Popen([*dh, "simulate", "--preset", "paper-ak", "-n", str(per), "--seed",
                          str(50 + k), "-o", str(folder / f"sim_{k}"), "--quiet"], env=env)
        for k in range(shards)
    ]  # fmt: skip
    assert all(p.wait() == 0 for p in procs)
    procs = [
        subprocess.Popen([*dh, "preprocess", str(folder / f"sim_{k}" / "particles.star"),
                          "--size", "128", "-o", str(folder / f"pre_{k}"), "--quiet"], env=env)
        for k in range(shards)
    ]  # fmt: skip
    assert all(p.wait() == 0 for p in procs)
    # One shard's STAR is enough per batch; the others add rows to draw from.
    return (
        folder / "pre_0" / "particles.star",
        folder / "sim_0" / "modes.npz",
        (folder / "sim_0" / "reference.pdb"),
    )


def perturbed_start(table, rows, device, rng) -> Pose:
    """The truth moved by the network's error sizes (paper Table 3: ~2.6°, 7.8, 0.2 Å)."""
    from deephemnma.align.similarity import rodrigues

    matrices = euler_to_matrix(torch.as_tensor(angles_deg(table)[rows]))
    axis = torch.as_tensor(rng.normal(size=(len(rows), 3)))
    axis = axis / axis.norm(dim=1, keepdim=True) * np.deg2rad(2.6)
    matrices = rodrigues(axis) @ matrices
    amps = amplitudes(table)[1][rows] + rng.normal(0, 9.8, (len(rows), 3))
    shifts = shifts_A(table)[rows] + rng.normal(0, 0.25, (len(rows), 2))
    t = {"dtype": torch.float32, "device": device}
    return Pose(
        matrices.to(**t),
        torch.as_tensor(amps, **t),
        torch.as_tensor(shifts, **t),
        torch.zeros(len(rows), **t),
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--particles")
    p.add_argument("--modes")
    p.add_argument("--reference")
    p.add_argument("--simulate", type=int, default=0, help="make this many images first")
    p.add_argument("--work", default="/tmp/deephemnma-align-profile")
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--device", default="cuda")
    p.add_argument("--batches", default="64,256,1024")
    p.add_argument("--out", default="align_profile.json")
    args = p.parse_args()
    device = torch.device(args.device)
    if args.simulate:
        particles, modes, reference = simulate(Path(args.work), args.simulate, args.shards)
    else:
        particles, modes, reference = Path(args.particles), Path(args.modes), Path(args.reference)

    table = read_particles(particles)
    images = ParticleImages(table)
    pixel_size_A = common_pixel_size_A(table)
    ctf = ctf_parameters(table)
    structure, mode_set = load_reference(str(reference), str(modes), (7, 8, 9), True)
    model = atom_model(structure, mode_set.vectors, device=device)
    config = AlignConfig()
    result: dict = {"device": str(torch.cuda.get_device_name(device)) if device.type == "cuda"
                    else "cpu", "torch": torch.__version__, "rows": []}  # fmt: skip

    t = time.perf_counter()
    library = make_library(model, images.images([0]).shape[-1], pixel_size_A, config)
    _sync(device)
    result["library_s"] = round(time.perf_counter() - t, 2)
    result["library_entries"] = int(library.vectors.shape[0])
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}), flush=True)

    rng = np.random.default_rng(0)
    refine_config = RefineConfig()
    last = None
    for b in (int(v) for v in args.batches.split(",")):
        b = min(b, len(table))
        rows = np.arange(b)
        batch = torch.as_tensor(images.images(rows))
        batch_ctf = ctf.index(rows)
        start = perturbed_start(table, rows, device, rng)
        runs = {
            "align_images": partial(
                align_images, model, library, batch, pixel_size_A, batch_ctf, True, config
            ),
            "refine_from": partial(
                refine_from, model, batch, pixel_size_A, batch_ctf, True, start, refine_config,
                library=library, align_config=config,
            ),
        }  # fmt: skip
        for name, run in runs.items():
            run()  # warm-up (kernels, cuFFT plans)
            _sync(device)
            t = time.perf_counter()
            run()
            _sync(device)
            seconds = time.perf_counter() - t
            row = {"what": name, "batch": b, "s": round(seconds, 3),
                   "img_per_s": round(b / seconds, 1)}  # fmt: skip
            result["rows"].append(row)
            print(json.dumps(row), flush=True)
        last = runs["align_images"]

    if last is not None:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + (
            [ProfilerActivity.CUDA] if device.type == "cuda" else []
        )
        with profile(activities=activities) as prof:
            last()
            _sync(device)
        key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
        result["profile"] = prof.key_averages().table(sort_by=key, row_limit=25)
        print(result["profile"])
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"library: {result['library_s']} s for {result['library_entries']} entries")
    for r in result["rows"]:
        print(f"{r['what']:13s} batch {r['batch']:5d}  {r['img_per_s']:9.1f} images/s")


if __name__ == "__main__":
    main()
