"""Hybrid refinement over a whole particle set: chunked, resumable, local or distributed.

The input STAR carries the starting estimates (the network's prediction, or any poses, e.g.
a RELION consensus refinement; missing amplitude columns start at 0). The output STAR holds
the refined estimates in RELION's pose columns and ``deephemnmaAmplitudeNN``, the starting
values in ``deephemnmaStart…`` columns (``deephemnmaStartAngleRot/Tilt/Psi``,
``deephemnmaStartOriginXAngst/YAngst``, ``deephemnmaAmplitudeNNStart``), the final NCC in
``deephemnmaScore``, the start's NCC in ``deephemnmaStartScore`` and how each estimate was
obtained in ``deephemnmaRefineMethod`` (0 start kept, 1 refined, 2 local restart, 3 global
search). Chunks work as in :mod:`deephemnma.align.run`: a rerun computes only the missing
ones and gives identical numbers.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from deephemnma import __version__
from deephemnma.align.hybrid import METHOD_NAMES, RefineConfig, refine_from
from deephemnma.align.refine import Pose
from deephemnma.align.run import (
    cached_library,
    cached_model,
    cached_table,
    chunk_complete,
    chunk_plan,
    dataset_inputs,
    inputs_sha256,
    library_to,
    load_reference,
    run_chunks,
    steady_allocator,
    with_batch_size,
)
from deephemnma.align.stage1 import AlignConfig, make_library
from deephemnma.chunks import claim_folder
from deephemnma.geometry import euler_to_matrix, matrix_to_euler

START = "deephemnmaStart"
START_LABELS = {
    "rlnAngleRot": f"{START}AngleRot",
    "rlnAngleTilt": f"{START}AngleTilt",
    "rlnAnglePsi": f"{START}AnglePsi",
    "rlnOriginXAngst": f"{START}OriginXAngst",
    "rlnOriginYAngst": f"{START}OriginYAngst",
}
START_SUFFIX = "Start"


@dataclass(frozen=True)
class RefineJob:
    """What a worker needs to refine one chunk (plain values: picklable)."""

    particles: str
    modes: str
    mode_numbers: tuple[int, ...]
    reference: str
    center: bool
    library: str
    config: RefineConfig
    align_config: AlignConfig
    phase_flipped: bool
    use_ctf: bool
    threads: int = 1
    device: str = "cpu"


def _library(job: RefineJob, model, image_size: int, pixel_size_A: float):
    """Stage 1's library, built on first need and saved for the other chunks (two workers
    may build it at once; the atomic rename keeps one complete, identical file), then
    loaded as Stage 1's chunks load theirs."""
    path = Path(job.library)
    if not path.exists():
        from deephemnma.io.atomic import atomic_path

        library = library_to(make_library(model, image_size, pixel_size_A, job.align_config), "cpu")
        with atomic_path(path) as tmp:
            torch.save(library, tmp)
    return cached_library(job)


def starting_estimates(table, mode_numbers) -> dict[str, np.ndarray]:
    """Angles (n, 3) °, shifts (n, 2) Å and amplitudes (n, K) of the modes, from a STAR;
    absent amplitude columns read as 0 (a rigid start), absent pose columns as InputError."""
    from deephemnma.io.star import amplitude_label, angles_deg, shifts_A

    columns = table.particles
    amps = np.zeros((len(table), len(mode_numbers)))
    for k, number in enumerate(mode_numbers):
        label = amplitude_label(number)
        if label in columns:
            amps[:, k] = columns[label].to_numpy(dtype=np.float64)
    return {
        "angles_deg": angles_deg(table),
        "shifts_A": shifts_A(table, missing_ok=True),
        "amplitudes": amps,
    }


def refine_chunk(job: RefineJob, start: int, stop: int, out_path: str) -> str:
    """Refine particles ``start:stop``; writes ``out_path`` (.npz, atomic)."""
    from deephemnma.io.atomic import atomic_path
    from deephemnma.io.star import common_image_size_px, common_pixel_size_A, ctf_parameters

    steady_allocator()
    previous = torch.get_num_threads()
    torch.set_num_threads(job.threads)
    try:
        model = cached_model(job)
        table, images = cached_table(job.particles)
        pixel_size_A = common_pixel_size_A(table)
        ctf = ctf_parameters(table) if job.use_ctf else None
        starts = starting_estimates(table, job.mode_numbers)
        library = None
        if job.config.global_search:
            # Loaded only when a chunk has a particle that needs it.
            def library():
                return _library(job, model, common_image_size_px(table), pixel_size_A)

        parts = []
        dtype, device = model.coords_A.dtype, model.coords_A.device
        for lo in range(start, stop, job.config.batch_size):
            idx = np.arange(lo, min(lo + job.config.batch_size, stop))

            def t(a, idx=idx):
                return torch.as_tensor(a[idx], dtype=dtype, device=device)

            pose = Pose(
                euler_to_matrix(t(starts["angles_deg"])),
                t(starts["amplitudes"]) if job.mode_numbers else None,
                t(starts["shifts_A"]),
                torch.zeros(len(idx), dtype=dtype, device=device),
            )
            result = refine_from(
                model,
                torch.as_tensor(images.images(idx)),
                pixel_size_A,
                None if ctf is None else ctf.index(idx),
                job.phase_flipped,
                pose,
                job.config,
                library=library,
                align_config=job.align_config,
            )
            parts.append(result)

        def cat(values):
            return torch.cat(values).double().cpu().numpy()

        arrays = {
            "angles_deg": matrix_to_euler(torch.cat([r.pose.matrices for r in parts]).double())
            .cpu()
            .numpy(),
            "shifts_A": cat([r.pose.shifts_A for r in parts]),
            "score": cat([r.pose.score for r in parts]),
            "start_score": cat([r.start_score for r in parts]),
            "method": torch.cat([r.method for r in parts]).cpu().numpy(),
        }
        if job.mode_numbers:
            arrays["amplitudes"] = cat([r.pose.amplitudes for r in parts])
    finally:
        torch.set_num_threads(previous)
    with atomic_path(out_path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
    return out_path


def refine_dataset(
    particles: str | Path,
    modes: str | Path,
    reference: str | Path,
    out_dir: str | Path,
    mode_numbers: tuple[int, ...] | None = None,
    config: RefineConfig = RefineConfig(),
    align_config: AlignConfig = AlignConfig(),
    chunk_size: int = 256,
    scheduler: str | None = None,
    workers: int | None = None,
    use_ctf: bool = True,
    center: bool = True,
    device: str = "cpu",
    progress: bool = True,
    stop_after_chunks: int | None = None,
    batch_size: int | None = None,
) -> Path | None:
    """Refine the starting estimates in ``particles``; returns ``OUT/particles.star``.

    The starting estimates' modes are ``mode_numbers`` (default: the non-rigid modes of the
    modes file). ``stop_after_chunks`` ends early, as a kill would (for tests); then None.
    batch_size: particles refined together (default: the config's on the CPU, GPU_BATCH on
    a GPU).
    """
    from deephemnma.io.atomic import atomic_write_text

    out = Path(out_dir)
    config = with_batch_size(config, batch_size, device)
    table, phase_flipped, mode_numbers = dataset_inputs(
        particles, modes, mode_numbers, use_ctf, out
    )
    load_reference(str(reference), str(modes), mode_numbers, center)  # checks the atoms
    starting_estimates(table, mode_numbers)  # checks the pose columns before any work
    record = {
        "deephemnma": __version__,
        "particles": str(Path(particles).resolve()),
        "modes": str(Path(modes).resolve()),
        "reference": str(Path(reference).resolve()),
        "inputs_sha256": inputs_sha256(particles, modes, reference),
        "mode_numbers": list(mode_numbers),
        "config": asdict(config),
        "align_config": asdict(align_config),
        "chunk_size": chunk_size,
        "use_ctf": use_ctf,
        "center": center,
    }
    claim_folder(out / "config.json", record, "a refinement")
    job = RefineJob(
        str(Path(particles).resolve()),
        str(Path(modes).resolve()),
        tuple(mode_numbers),
        str(Path(reference).resolve()),
        center,
        str((out / f"library_{align_config.search_size}.pt").resolve()),
        config,
        align_config,
        phase_flipped,
        use_ctf,
        device=device,
    )
    chunks, paths, todo = chunk_plan(out, len(table), chunk_size)
    if stop_after_chunks is not None:
        todo = todo[:stop_after_chunks]
    run_chunks(refine_chunk, job, todo, paths, chunks, scheduler, workers, progress, "refine")
    if not all(chunk_complete(p, c[1] - c[0]) for p, c in zip(paths, chunks, strict=True)):
        return None
    star = write_refined(table, paths, mode_numbers, out / "particles.star")
    atomic_write_text(out / "summary.json", json.dumps(summarize_refinement(paths), indent=2))
    return star


def write_refined(table, paths, mode_numbers, star_path: Path) -> Path:
    """The input table with refined estimates, starting values, scores and methods."""
    from deephemnma.io.star import (
        amplitude_label,
        with_amplitudes,
        with_columns,
        with_poses,
        write_particles,
    )

    parts = [dict(np.load(p)) for p in paths]

    def cat(key):
        return np.concatenate([p[key] for p in parts])

    starts = starting_estimates(table, mode_numbers)
    saved = {
        START_LABELS["rlnAngleRot"]: starts["angles_deg"][:, 0],
        START_LABELS["rlnAngleTilt"]: starts["angles_deg"][:, 1],
        START_LABELS["rlnAnglePsi"]: starts["angles_deg"][:, 2],
        START_LABELS["rlnOriginXAngst"]: starts["shifts_A"][:, 0],
        START_LABELS["rlnOriginYAngst"]: starts["shifts_A"][:, 1],
    }
    for k, number in enumerate(mode_numbers):
        saved[amplitude_label(number, START_SUFFIX)] = starts["amplitudes"][:, k]
    result = with_columns(table, saved)
    result = with_poses(result, angles_deg=cat("angles_deg"), shifts_A=cat("shifts_A"))
    if mode_numbers:
        result = with_amplitudes(result, list(mode_numbers), cat("amplitudes"))
    result = with_columns(
        result,
        {
            "deephemnmaScore": cat("score"),
            "deephemnmaStartScore": cat("start_score"),
            "deephemnmaRefineMethod": cat("method").astype(np.int64),
        },
    )
    write_particles(star_path, result)
    return star_path


def summarize_refinement(paths) -> dict:
    parts = [dict(np.load(p)) for p in paths]
    method = np.concatenate([p["method"] for p in parts])
    score = np.concatenate([p["score"] for p in parts])
    start = np.concatenate([p["start_score"] for p in parts])
    return {
        "particles": int(len(method)),
        "score_mean": float(score.mean()),
        "start_score_mean": float(start.mean()),
        "score_never_lower": bool((score >= start).all()),
        "methods": {name: int((method == k).sum()) for k, name in enumerate(METHOD_NAMES)},
    }


def predict_and_refine(
    particles: str | Path,
    checkpoint: str | Path,
    out: str | Path,
    modes: str | Path,
    reference: str | Path,
    config: RefineConfig = RefineConfig(),
    predict_options: dict | None = None,
    refine_options: dict | None = None,
) -> dict:
    """Hybrid inference in one call: the network's predictions (``OUT_network.star``), then
    their refinement (work folder ``OUT.refine/``, resumable), gathered into ``out``.

    Both steps stream in chunks, so memory stays bounded for any number of particles, and a
    rerun resumes where either step stopped. Returns predict's and refine's figures.
    """
    from deephemnma.io.star import read_particles, write_particles
    from deephemnma.network.checkpoint import load_network, resolve_checkpoint
    from deephemnma.network.predict import predict

    out = Path(out)
    network_star = out.with_name(f"{out.stem}_network.star")
    predicted = {"out": str(network_star), "reused": True}
    if not network_star.exists():
        predicted = predict(particles, checkpoint, network_star, **(predict_options or {}))
    numbers = tuple(load_network(resolve_checkpoint(checkpoint), "cpu").mode_numbers)
    refined = refine_dataset(
        network_star,
        modes,
        reference,
        out.with_name(out.name + ".refine"),
        mode_numbers=numbers,
        config=config,
        **(refine_options or {}),
    )
    if refined is None:  # stopped early (tests)
        return {"predict": predicted, "refine": None, "out": None}
    write_particles(out, read_particles(refined))
    summary = json.loads((refined.parent / "summary.json").read_text())
    return {"predict": predicted, "refine": summary, "out": str(out)}
