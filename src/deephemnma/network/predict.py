"""Stage 2 inference: a trained network → amplitudes, Euler angles and shifts for every particle.

Streams any number of particles in bounded memory: the particles are cut into chunks of
``chunk_size`` rows; each chunk's images are read batch by batch from the stacks (only those images)
and its predictions are saved to ``<out>.parts/part_NNNNN.npz`` (temporary file, then rename).
A rerun with the same checkpoint and particles skips the finished chunks (resumable, as
:mod:`deephemnma.chunks`); at the end the parts are gathered into the output STAR and removed.

The output STAR is the input with the predictions written into RELION's pose columns
(``rlnAngleRot/Tilt/Psi`` in degrees, converted from the rotation output; rot and psi in
(−180°, 180°]; ``rlnOriginXAngst/YAngst`` in Å) and into ``deephemnmaAmplitudeNN``; every other
column is kept. Columns of parameters the network does not predict are left as they were.

Input normalization and target scaling come from the checkpoint (the ones used in training).
CPU speed-ups (none changes the result beyond rounding, except bf16): batch norm folded into
the convolutions, channels-last memory layout, ``torch.inference_mode``, and bf16 autocast on
CPUs with AMX / AVX-512 BF16 (``precision="auto"``; ``"fp32"`` to disable).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from deephemnma.errors import InputError
from deephemnma.io.digest import file_sha256
from deephemnma.io.prefetch import prefetch_images
from deephemnma.network.checkpoint import LoadedNetwork, load_network, resolve_checkpoint
from deephemnma.network.data import ParticleDataset
from deephemnma.network.model import decode, fold_batchnorm
from deephemnma.network.train import bf16_fast, resolve_device, use_fast_kernels
from deephemnma.network.tta import copy_offsets_px

__all__ = ["predict", "predict_chunks", "prepare_for_inference"]


def prepare_for_inference(
    loaded: LoadedNetwork, device: torch.device, fold: bool = True, channels_last: bool = True
) -> torch.nn.Module:
    """An eval-mode copy of the network on ``device``, batch norm folded, channels-last."""
    model = copy.deepcopy(loaded.model).eval().to(device)
    if fold:
        fold_batchnorm(model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def _use_bf16(precision: str, device: torch.device) -> bool:
    if precision not in ("auto", "fp32", "bf16"):
        raise InputError("unknown precision", field="--precision", expected="auto | fp32 | bf16")
    return precision == "bf16" or (precision == "auto" and bf16_fast(device))


@torch.inference_mode()  # on a generator, torch enters it around each step, not across yields
def predict_chunks(
    model: torch.nn.Module,
    loaded: LoadedNetwork,
    images,
    chunks: list[np.ndarray],
    device: torch.device,
    batch_size: int = 256,
    bf16: bool = False,
    channels_last: bool = True,
    workers: int = 0,
    bar=None,
    transform=None,
    tta: bool = False,
    reader: str = "threads",
    tta_turns: int = 1,
    tta_shift_px: int = 0,
) -> Iterator[dict[str, np.ndarray]]:
    """Predictions for each (non-empty) array of particle rows in ``chunks`` of ``images`` (a
    ParticleImages), yielded chunk by chunk: ``amplitudes`` (n, M), ``angles_deg`` (n, 3),
    ``shifts_A`` (n, 2), float64, for the heads the net has. ``transform``: from
    :func:`input_transform`, applied on the device before the normalization. ``tta``: the
    consensus of the 8 dihedral copies of each image (:mod:`deephemnma.network.tta`; 8 ×
    ``tta_turns`` with in-plane turns, × 5 with ``tta_shift_px``), with ``spread_deg`` (n,)
    when rotations are predicted. ``workers``: threads that read ahead
    (:mod:`deephemnma.io.prefetch`; 0: none), or with ``reader="processes"`` the processes of
    a torch DataLoader.

    One reader reads all the chunks, so its threads (or processes) start once rather than per
    chunk, and each chunk's results stay on the device until the chunk is complete: no copy to
    the host makes the host wait for the GPU between batches."""
    from deephemnma.geometry import matrix_to_euler
    from deephemnma.network.tta import dihedral_predict

    def predict_one(x: torch.Tensor) -> dict[str, torch.Tensor]:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            raw = model(x)
        return decode(raw, loaded.spec, loaded.scaling)

    lengths = [len(c) for c in chunks]
    if 0 in lengths:
        raise ValueError("empty chunk")
    if not chunks:
        return  # no loader, whose processes would start for nothing
    ends = np.cumsum(lengths)
    starts = ends - lengths
    rows = np.concatenate(chunks)
    # Batches never straddle two chunks. Normalized on the device: reading is then all the
    # readers do.
    batches = [
        np.arange(b, min(b + batch_size, hi))
        for lo, hi in zip(starts, ends, strict=True)
        for b in range(lo, hi, batch_size)
    ]
    done, chunk = 0, 0
    parts: dict[str, list[torch.Tensor]] = {}
    stream = _read_batches(images, rows, batches, device, workers, reader)
    for positions, x in zip(batches, stream, strict=True):
        if transform is not None:
            x = transform(x[:, 0], rows[positions])[:, None]
        x = loaded.normalization.apply(x)
        n = len(positions)
        if n < batch_size and _pad_batches(device):
            x = torch.cat([x, x.new_zeros((batch_size - n, *x.shape[1:]))])
        if tta:
            phys = dihedral_predict(predict_one, x, tta_turns, tta_shift_px, loaded.pixel_size_A)
            if "matrices" in phys:
                phys["angles_deg"] = matrix_to_euler(phys["matrices"])
        else:
            phys = predict_one(x)
        for key in ("amplitudes", "angles_deg", "shifts_A", "spread_deg"):
            if key in phys:
                parts.setdefault(key, []).append(phys[key][:n].double())
        done += n
        if bar is not None:
            bar.advance(n)
        if done == ends[chunk]:
            yield {k: torch.cat(v).cpu().numpy() for k, v in parts.items()}
            parts, chunk = {}, chunk + 1


def _pad_batches(device: torch.device) -> bool:
    """Whether a short batch is padded to the full size: cuDNN's benchmark mode (on in
    :func:`use_fast_kernels`) times its algorithms again for every new input shape, and the
    particles' last batch (each chunk's, when the chunk size is not a multiple of the batch)
    is usually one. Padding costs at most a batch of work per chunk; the network is in eval
    mode, so the padding images do not change the others' predictions."""
    return device.type == "cuda" and torch.backends.cudnn.benchmark


def _check_reader(reader: str) -> str:
    if reader not in ("threads", "processes"):
        raise InputError("unknown reader", field="--reader", expected="threads | processes")
    return reader


def _read_batches(images, rows, batches, device, workers: int, reader: str):
    """The images of ``rows[positions]`` for each array of ``batches``, on ``device``."""
    if _check_reader(reader) == "threads":
        return prefetch_images(images, [rows[p] for p in batches], device, threads=workers)
    loader = torch.utils.data.DataLoader(
        ParticleDataset(images, rows, None),
        sampler=[(p, None) for p in batches],
        batch_size=None,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if workers > 0 else None,
    )
    return (batch["images"].to(device, non_blocking=True) for batch in loader)


def input_transform(table, loaded: LoadedNetwork, path):
    """How to turn the particles' images into the training images' kind, or None when they
    already are: phase flip (when training's were flipped and these are not) and Fourier
    crop to the training box (the same physical box, a larger pixel size), as ``deephemnma
    preprocess`` did for the training set — so raw full-size particles need no preprocessed
    copy. Returns ``transform(images (B, n, n) on the device, rows) → (B, N, N)``;
    InputError when the particles cannot be made into the training images' kind."""
    from deephemnma.io.star import (
        common_image_size_px,
        common_pixel_size_A,
        ctf_parameters,
        phase_flipped,
    )
    from deephemnma.preprocess import PreprocessConfig, preprocess_images

    size, pixel = common_image_size_px(table), common_pixel_size_A(table)
    box_A, train_box_A = size * pixel, loaded.image_size * loaded.pixel_size_A
    same_grid = size == loaded.image_size and abs(pixel - loaded.pixel_size_A) <= (
        0.01 * loaded.pixel_size_A
    )
    if not same_grid and (size < loaded.image_size or abs(box_A - train_box_A) > 0.01 * box_A):
        raise InputError(
            "the particles cannot be cropped to the training images' box and pixel size",
            path=path,
            field="rlnImageSize / rlnImagePixelSize",
            expected=f"{loaded.image_size} px at {loaded.pixel_size_A:.4g} Å, or a larger box "
            f"of the same {train_box_A:.4g} Å (run 'deephemnma preprocess' as for the "
            "training set)",
            found=f"{size} px at {pixel:.4g} Å",
        )
    flipped = phase_flipped(table)
    wanted = loaded.phase_flipped
    if wanted is None or flipped == wanted:
        flip = False
    elif flipped and not wanted:
        raise InputError(
            "the particles are phase-flipped but the network was trained on raw images",
            path=path,
            field="rlnCtfDataArePhaseFlipped",
            expected="0, as the training images",
            found="1",
        )
    else:
        flip = True
    if same_grid and not flip:
        return None
    ctf = ctf_parameters(table) if flip else None
    config = PreprocessConfig(out_size=loaded.image_size, phase_flip=flip, normalize=False)

    def transform(images: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
        return preprocess_images(images, None if ctf is None else ctf.index(rows), pixel, config)

    return transform


def predict(
    particles: str | Path,
    checkpoint: str | Path,
    out: str | Path,
    device: str | None = None,
    batch_size: int = 256,
    chunk_size: int = 16384,
    precision: str = "auto",
    threads: int | None = None,
    workers: int = -1,
    progress: bool = True,
    keep_parts: bool = False,
    stop_after_chunks: int | None = None,
    tta: bool = False,
    reader: str = "threads",
    tta_turns: int = 1,
    tta_shift_px: int = 0,
) -> dict:
    """Predict every particle of ``particles`` with ``checkpoint`` (file or training folder)
    and write the STAR ``out``. Returns ``{"out", "n", "seconds", "images_per_s",
    "chunks_computed", "chunks_reused", "bf16"}``. ``stop_after_chunks`` ends early, as a
    kill would (for tests). ``tta``: test-time augmentation (:mod:`deephemnma.network.tta`;
    8× the work; 8 × ``tta_turns`` copies with in-plane turns, × 5 with ``tta_shift_px`` > 0,
    the copies also moved by that many pixels: a library option, not the CLI's, for it gave
    no gain where it was measured, docs/network.md), which also writes each particle's pose
    spread (``deephemnmaPoseSpreadDeg``).
    ``workers`` (−1: 4 on a GPU, none on the CPU) and ``reader`` as :func:`predict_chunks`.
    The time is also given in parts: ``setup_seconds`` (reading the STAR and the network),
    ``compute_seconds`` (reading the images and predicting), ``write_seconds`` (the STAR)."""
    from deephemnma.io.mrc import ParticleImages
    from deephemnma.io.star import read_particles, with_amplitudes, with_poses, write_particles
    from deephemnma.progress import progress_bar

    t0 = time.perf_counter()
    dev = resolve_device(device)
    use_fast_kernels(dev)
    if threads:
        torch.set_num_threads(int(threads))
    if batch_size < 1 or chunk_size < 1:
        raise InputError("batch and chunk sizes must be positive", field="--batch-size")
    if tta_turns < 1:
        raise InputError("must be at least 1", field="--tta-turns", found=tta_turns)
    if tta_shift_px < 0:
        raise InputError("must be at least 0", field="tta_shift_px", found=tta_shift_px)
    _check_reader(reader)
    ckpt_path = resolve_checkpoint(checkpoint)
    loaded = load_network(ckpt_path, "cpu")
    table = read_particles(particles)
    transform = input_transform(table, loaded, particles)
    bf16 = _use_bf16(precision, dev)
    if workers < 0:
        workers = min(4, max(1, (os.cpu_count() or 2) - 1)) if dev.type == "cuda" else 0
    model = prepare_for_inference(loaded, dev)
    images = ParticleImages(table)

    out = Path(out)
    parts_dir = out.with_name(out.name + ".parts")
    identity = {
        "checkpoint": file_sha256(ckpt_path),
        "particles": str(Path(particles).resolve()),
        "particles_sha256": file_sha256(particles),
        "n": len(table),
        "chunk_size": chunk_size,
        "bf16": bf16,
        "tta": bool(tta),
        **({"tta_turns": tta_turns} if tta and tta_turns > 1 else {}),
        **({"tta_shift_px": tta_shift_px} if tta and tta_shift_px > 0 else {}),
    }
    meta_path = parts_dir / "meta.json"
    if parts_dir.exists():
        try:
            same = json.loads(meta_path.read_text()) == identity
        except (OSError, ValueError):
            same = False
        if not same:
            shutil.rmtree(parts_dir)
    parts_dir.mkdir(parents=True, exist_ok=True)
    from deephemnma.io.atomic import atomic_path, atomic_write_text

    atomic_write_text(meta_path, json.dumps(identity) + "\n")

    n = len(table)
    starts = list(range(0, n, chunk_size))
    todo = []
    for index, lo in enumerate(starts):
        hi = min(lo + chunk_size, n)
        path = parts_dir / f"part_{index:05d}.npz"
        if path.exists():
            try:
                with np.load(path) as data:
                    if all(len(data[k]) == hi - lo for k in data.files):
                        continue
            except (OSError, ValueError):
                pass
        todo.append((index, lo, hi))
    reused = len(starts) - len(todo)
    reused_rows = n - sum(hi - lo for _, lo, hi in todo)
    stopped = stop_after_chunks is not None and len(todo) > stop_after_chunks
    if stopped:
        todo = todo[:stop_after_chunks]
    t_loop = time.perf_counter()
    setup_s = t_loop - t0
    with progress_bar(n, "predict", enabled=progress) as bar:
        bar.advance(reused_rows)
        chunks = predict_chunks(
            model, loaded, images, [np.arange(lo, hi) for _, lo, hi in todo], dev,
            batch_size, bf16, workers=workers, bar=bar, transform=transform, tta=tta,
            reader=reader, tta_turns=tta_turns, tta_shift_px=tta_shift_px,
        )  # fmt: skip
        for (index, _, _), arrays in zip(todo, chunks, strict=True):
            path = parts_dir / f"part_{index:05d}.npz"
            with atomic_path(path) as tmp, open(tmp, "wb") as handle:
                np.savez(handle, **arrays)
    t_compute = time.perf_counter() - t_loop
    computed = len(todo)
    if stopped:
        return {"out": None, "n": n, "chunks_computed": computed, "chunks_reused": reused}

    gathered: dict[str, list[np.ndarray]] = {}
    for index in range(len(starts)):
        with np.load(parts_dir / f"part_{index:05d}.npz") as data:
            for key in data.files:
                gathered.setdefault(key, []).append(data[key])
    result = {k: np.concatenate(v) for k, v in gathered.items()}
    if "angles_deg" in result or "shifts_A" in result:
        table = with_poses(table, result.get("angles_deg"), result.get("shifts_A"))
    if "amplitudes" in result:
        table = with_amplitudes(table, loaded.mode_numbers, result["amplitudes"])
    if "spread_deg" in result:
        from deephemnma.io.star import POSE_SPREAD, with_columns

        table = with_columns(table, {POSE_SPREAD: result["spread_deg"]})
    write_particles(out, table)
    if not keep_parts:
        shutil.rmtree(parts_dir, ignore_errors=True)
    seconds = time.perf_counter() - t0
    return {
        "out": str(out),
        "n": n,
        "seconds": seconds,
        "setup_seconds": setup_s,
        "compute_seconds": t_compute,
        "write_seconds": seconds - setup_s - t_compute,
        "images_per_s": n / seconds if seconds > 0 else float("inf"),
        "chunks_computed": computed,
        "chunks_reused": reused,
        "bf16": bf16,
        "tta": bool(tta),
        "tta_copies": 8 * tta_turns * len(copy_offsets_px(tta_shift_px)) if tta else 0,
        "device": str(dev),
    }
