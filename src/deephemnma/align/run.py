"""Stage 1 over a whole particle set: chunked, resumable, local or distributed (Dask).

The particles are cut into chunks; each chunk's result is one small ``.npz`` written
atomically under ``OUT/chunks``, so after a crash (or ``kill -9``) a rerun computes only the
missing chunks. A chunk depends only on its images and the run's settings (no randomness;
one thread per chunk), so a resumed or distributed run gives the same numbers as a
single-process one. The projection library is built once and saved; workers memory-map it.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from deephemnma import __version__
from deephemnma.align.stage1 import AlignConfig, align_images, make_library
from deephemnma.chunks import claim_folder
from deephemnma.errors import InputError
from deephemnma.geometry import matrix_to_euler


@dataclass(frozen=True)
class AlignJob:
    """Everything a worker needs to align one chunk (plain paths and values: picklable)."""

    particles: str
    modes: str
    mode_numbers: tuple[int, ...]
    reference: str
    center: bool
    library: str
    config: AlignConfig
    phase_flipped: bool
    use_ctf: bool
    threads: int = 1
    device: str = "cpu"


_CACHE: dict = {}


@functools.cache
def steady_allocator() -> None:
    """Let this process keep freed memory for reuse when ``MALLOC_TRIM_THRESHOLD_`` is set.

    Dask starts its workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which also turns off
    glibc's adaptive mmap threshold: every large temporary tensor is then mapped, faulted
    in page by page and unmapped again. Measured on 128 images with two workers: system
    time 22 s against 1.9 s, and two workers no faster than one. The thresholds set here
    (mmap ≥ 32 MiB, trim above 64 MiB) are glibc's adaptive steady state. Linux/glibc only;
    elsewhere a no-op.
    """
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        return
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 32 << 20)
    mallopt(m_trim_threshold, 64 << 20)


def _cached(key, make):
    if key not in _CACHE:
        _CACHE[key] = make()
    return _CACHE[key]


def load_reference(reference: str, modes_path: str, mode_numbers, center: bool):
    """Reference structure and the chosen modes, checked to describe the same atoms.

    The modes file stores the atoms its network was built on (e.g. CA+P of a ribosome); the
    reference file is read with the selection whose atoms match them in number and position
    (all, heavy, ca+p, ca, backbone), so the full model can be given for coarse-grained modes.
    """
    from deephemnma.io.pdb import read_structure
    from deephemnma.nma.modes import load_modes

    modes = load_modes(modes_path).select(list(mode_numbers))
    wanted = modes.structure
    counts = []
    for selection in ("all", "heavy", "ca+p", "ca", "backbone"):
        structure = read_structure(reference, selection=selection)
        counts.append(f"{structure.n_atoms} ({selection})")
        if structure.n_atoms == wanted.n_atoms and np.allclose(
            structure.coords_A, wanted.coords_A, atol=1e-2
        ):
            break
    else:
        raise InputError(
            "the modes were computed on a different set of atoms than the reference",
            path=modes_path,
            expected=f"the atoms of {reference}: " + ", ".join(counts),
            found=f"{wanted.n_atoms} atoms in the modes file (or at other positions)",
        )
    if center:
        structure = structure.centered()
    return structure, modes


def cached_model(job: AlignJob):
    from deephemnma.project import atom_model

    def make():
        structure, modes = load_reference(job.reference, job.modes, job.mode_numbers, job.center)
        return atom_model(structure, modes.vectors, device=job.device)

    key = ("model", job.reference, job.modes, job.mode_numbers, job.center, job.device)
    return _cached(key, make)


def cached_library(job):
    """The job's saved projection library, memory-mapped (moved to the job's device), once
    per worker process."""

    def make():
        library = torch.load(job.library, mmap=True, weights_only=False, map_location="cpu")
        return library if job.device == "cpu" else library_to(library, job.device)

    return _cached(("library", job.library, job.device), make)


def library_to(library, device):
    """The library with its tensors on ``device``."""
    tensors = ("matrices", "amplitudes", "vectors", "shell_power", "basis")
    return replace(
        library,
        **{
            name: None if getattr(library, name) is None else getattr(library, name).to(device)
            for name in tensors
        },
    )


def cached_table(path: str):
    from deephemnma.io.mrc import ParticleImages
    from deephemnma.io.star import read_particles

    def make():
        table = read_particles(path)
        return table, ParticleImages(table)

    return _cached(("table", path), make)


def align_chunk(job: AlignJob, start: int, stop: int, out_path: str) -> str:
    """Align particles ``start:stop`` and write ``out_path`` (.npz, atomic). Runs anywhere
    the files are visible (a Dask worker, a subprocess, this process)."""
    from deephemnma.io.atomic import atomic_path
    from deephemnma.io.star import common_pixel_size_A, ctf_parameters

    steady_allocator()
    previous = torch.get_num_threads()
    torch.set_num_threads(job.threads)
    try:
        model = cached_model(job)
        library = cached_library(job)
        table, images = cached_table(job.particles)
        pixel_size_A = common_pixel_size_A(table)
        ctf = ctf_parameters(table) if job.use_ctf else None
        poses = []
        for lo in range(start, stop, job.config.batch_size):
            idx = np.arange(lo, min(lo + job.config.batch_size, stop))
            batch = torch.as_tensor(images.images(idx))
            poses.append(
                align_images(
                    model,
                    library,
                    batch,
                    pixel_size_A,
                    None if ctf is None else ctf.index(idx),
                    job.phase_flipped,
                    job.config,
                )
            )

        def gather(name):
            return torch.cat([getattr(p, name) for p in poses]).double().cpu()

        result = {
            "angles_deg": matrix_to_euler(gather("matrices")).numpy(),
            "shifts_A": gather("shifts_A").numpy(),
            "score": gather("score").numpy(),
        }
        if poses[0].amplitudes is not None:
            result["amplitudes"] = gather("amplitudes").numpy()
    finally:
        torch.set_num_threads(previous)
    with atomic_path(out_path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **result)
    return out_path


def chunk_complete(path: Path, n: int) -> bool:
    try:
        with np.load(path) as data:
            return data["score"].shape == (n,)
    except (OSError, ValueError, KeyError):
        return False


def dataset_inputs(particles, modes, mode_numbers, use_ctf: bool, out: Path):
    """The particle table, whether it is phase flipped, and the mode numbers (default: the
    modes file's non-rigid ones), CTF columns checked; creates ``out/chunks``."""
    from deephemnma.io.star import phase_flipped, read_particles
    from deephemnma.nma.modes import load_modes

    (out / "chunks").mkdir(parents=True, exist_ok=True)
    table = read_particles(particles)
    flipped = phase_flipped(table)
    if use_ctf:
        require_ctf(table, particles, flipped)
    if mode_numbers is None:
        mode_numbers = tuple(int(m) for m in load_modes(modes).mode_numbers if m > 6)
    return table, flipped, mode_numbers


def chunk_plan(out: Path, n: int, chunk_size: int):
    """``(chunks, paths, todo)``: the (start, stop) row ranges, their result files under
    ``out/chunks``, and the ``(k, range)`` pairs whose file is missing or incomplete."""
    chunks = [(lo, min(lo + chunk_size, n)) for lo in range(0, n, chunk_size)]
    paths = [out / "chunks" / f"chunk_{k:05d}.npz" for k in range(len(chunks))]
    todo = [(k, c) for k, c in enumerate(chunks) if not chunk_complete(paths[k], c[1] - c[0])]
    return chunks, paths, todo


def align_dataset(
    particles: str | Path,
    modes: str | Path,
    reference: str | Path,
    out_dir: str | Path,
    mode_numbers: tuple[int, ...] | None = None,
    config: AlignConfig = AlignConfig(),
    chunk_size: int = 256,
    scheduler: str | None = None,
    workers: int | None = None,
    use_ctf: bool = True,
    center: bool = True,
    device: str = "cpu",
    progress: bool = True,
    batch_size: int | None = None,
) -> Path:
    """Align every particle of a STAR file; returns ``OUT/particles.star``.

    scheduler: address of a running Dask scheduler (``tcp://host:port``); None runs a local
    Dask cluster with ``workers`` processes (default: all cores), or in this process when
    ``workers == 1``. device: "cpu" or "cuda" (then one worker per GPU is the sensible
    choice). batch_size: images aligned together (default: the config's on the CPU,
    :data:`GPU_BATCH` on a GPU).
    """
    from deephemnma.io.atomic import atomic_write_text
    from deephemnma.io.star import common_image_size_px, common_pixel_size_A

    out = Path(out_dir)
    config = with_batch_size(config, batch_size, device)
    table, phase_flipped, mode_numbers = dataset_inputs(
        particles, modes, mode_numbers, use_ctf, out
    )
    structure, mode_set = load_reference(str(reference), str(modes), mode_numbers, center)
    image_size = common_image_size_px(table)
    pixel_size_A = common_pixel_size_A(table)

    record = {
        "deephemnma": __version__,
        "particles": str(Path(particles).resolve()),
        "modes": str(Path(modes).resolve()),
        "reference": str(Path(reference).resolve()),
        "inputs_sha256": inputs_sha256(particles, modes, reference),
        "mode_numbers": list(mode_numbers),
        "config": asdict(config),
        "chunk_size": chunk_size,
        "use_ctf": use_ctf,
        "center": center,
    }
    claim_folder(out / "config.json", record, "an alignment")

    library_path = out / f"library_{config.search_size}.pt"
    if not library_path.exists():
        from deephemnma.io.atomic import atomic_path
        from deephemnma.project import atom_model

        # Rendered on the job's device (a GPU builds it in seconds), stored on the CPU so
        # that any worker can memory-map it.
        model = atom_model(structure, mode_set.vectors, device=device)
        library = library_to(
            make_library(model, image_size, pixel_size_A, config, progress=progress), "cpu"
        )
        with atomic_path(library_path) as tmp:
            torch.save(library, tmp)

    job = AlignJob(
        str(Path(particles).resolve()),
        str(Path(modes).resolve()),
        tuple(mode_numbers),
        str(Path(reference).resolve()),
        center,
        str(library_path.resolve()),
        config,
        phase_flipped,
        use_ctf,
        device=device,
    )
    chunks, paths, todo = chunk_plan(out, len(table), chunk_size)
    run_chunks(align_chunk, job, todo, paths, chunks, scheduler, workers, progress, "align")
    star = write_results(table, paths, mode_numbers, out / "particles.star")
    atomic_write_text(out / "summary.json", json.dumps(_summary(star), indent=2))
    return star


GPU_BATCH = 256
"""Images aligned or refined together on a GPU: a CPU gains nothing beyond ~16, a GPU
needs hundreds to fill its multiprocessors."""


def with_batch_size(config, batch_size: int | None, device: str):
    """``config`` with ``batch_size`` (None: GPU_BATCH on a GPU, unchanged on the CPU)."""
    if batch_size is None and device != "cpu":
        batch_size = GPU_BATCH
    if batch_size is None:
        return config
    if batch_size < 1:
        raise InputError("batch size must be positive", field="--batch-size", found=batch_size)
    return replace(config, batch_size=batch_size)


def run_chunks(worker, job, todo, paths, chunks, scheduler, workers, progress, label: str) -> None:
    """Run ``worker(job, start, stop, path)`` for each ``(k, (start, stop))`` of ``todo``:
    in this process (workers == 1), on a local Dask cluster, or on ``scheduler``."""
    from deephemnma.progress import progress_bar

    total = sum(stop - start for start, stop in chunks)
    done = total - sum(c[1] - c[0] for _, c in todo)
    # One process per GPU: more would each hold a CUDA context and fight over the one device.
    workers = workers or (1 if getattr(job, "device", "cpu") != "cpu" else os.cpu_count() or 1)
    with progress_bar(total, label, progress) as bar:
        bar.advance(done)
        if scheduler is None and workers == 1:
            for k, (start, stop) in todo:
                worker(job, start, stop, str(paths[k]))
                bar.advance(stop - start)
            return
        from dask.distributed import Client, LocalCluster, as_completed

        cluster = None
        if scheduler is None:
            cluster = LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
            )
        client = Client(scheduler if scheduler is not None else cluster)
        try:
            futures = {
                client.submit(worker, job, start, stop, str(paths[k]), pure=False): stop - start
                for k, (start, stop) in todo
            }
            for future in as_completed(futures):
                future.result()
                bar.advance(futures[future])
        finally:
            client.close()
            if cluster is not None:
                cluster.close()


def require_ctf(table, path, phase_flipped: bool) -> None:
    from deephemnma.io.star import ctf_parameters

    try:
        ctf_parameters(table)
    except InputError as exc:
        kind = "phase-flipped" if phase_flipped else "raw (not phase-flipped)"
        raise InputError(
            f"{kind} particles need CTF parameters to be aligned; {exc.message}; "
            "pass --no-ctf to align without a CTF",
            path=path,
            field=exc.field,
            expected=exc.expected,
            found=exc.found,
        ) from None


def inputs_sha256(particles, modes, reference) -> dict[str, str]:
    """Content fingerprints of a job's input files (:mod:`deephemnma.io.digest`)."""
    from deephemnma.io.digest import files_sha256

    return files_sha256({"particles": particles, "modes": modes, "reference": reference})


def write_results(table, paths, mode_numbers, star_path: Path) -> Path:
    """The table with the estimates of the chunk files ``paths`` (in row order) → STAR."""
    from deephemnma.io.star import with_amplitudes, with_columns, with_poses, write_particles

    parts = [dict(np.load(p)) for p in paths]
    angles = np.concatenate([p["angles_deg"] for p in parts])
    shifts = np.concatenate([p["shifts_A"] for p in parts])
    result = with_poses(table, angles_deg=angles, shifts_A=shifts)
    if "amplitudes" in parts[0]:
        amps = np.concatenate([p["amplitudes"] for p in parts])
        result = with_amplitudes(result, list(mode_numbers), amps)
    result = with_columns(result, {"deephemnmaScore": np.concatenate([p["score"] for p in parts])})
    write_particles(star_path, result)
    return star_path


def _summary(star_path: Path) -> dict:
    from deephemnma.io.star import amplitudes, read_particles

    table = read_particles(star_path)
    numbers, amps = amplitudes(table)
    score = table.particles["deephemnmaScore"].to_numpy()
    return {
        "particles": len(table),
        "score_mean": float(score.mean()),
        "score_median": float(np.median(score)),
        "amplitude_mean": {int(m): float(v) for m, v in zip(numbers, amps.mean(0), strict=True)},
        "amplitude_std": {int(m): float(v) for m, v in zip(numbers, amps.std(0), strict=True)},
    }
