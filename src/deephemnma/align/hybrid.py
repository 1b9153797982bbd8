"""Hybrid inference: refine each starting estimate (e.g. the network's prediction) against its
image with Stage 1's similarity, coarse to fine.

A start that is close (a few degrees, tens of amplitude units, a few tenths of an Å) is
already inside the basin of the NCC at 64², so a short refinement at 64² and 128² recovers
Stage-1 accuracy at a fraction of Stage 1's cost (no global search, no candidate set). Every
particle keeps the better, by its NCC at the finest level, of the start and the refinement,
so refinement never lowers a particle's score. Particles whose score stays an outlier low for
their chunk (the start was outside the basin) get a few local restarts around the start, and
as a last resort Stage 1's global search.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from deephemnma.align.refine import Pose, refine
from deephemnma.align.search import Library
from deephemnma.align.similarity import (
    Level,
    crop_images,
    ctf_filter,
    levels_for,
    ncc,
    render_filtered,
    rodrigues,
)
from deephemnma.ctf import CTFParams
from deephemnma.errors import check_settings
from deephemnma.project import AtomModel, merge_narrow_gaussians

# How each particle's final estimate was obtained (the deephemnmaRefineMethod column).
KEPT_START, REFINED, RESTARTED, SEARCHED = 0, 1, 2, 3
METHOD_NAMES = ("start kept", "refined", "local restart", "global search")


@dataclass(frozen=True)
class RefineConfig:
    """How starting estimates are refined (sizes in pixels of the cropped images).

    sizes/steps/lrs: refinement levels, Adam steps and peak learning rates (scaled units,
    as Stage 1); outlier_mad: a particle whose final NCC is below its chunk's median by more
    than this many robust standard deviations (1.4826·MAD) counts as failed and gets
    ``restarts`` local restarts (rotations of ``restart_angle_deg`` about the image axes
    around the start, each refined ``restart_steps`` steps at the first level before the best
    goes through the whole schedule); still failed, it gets Stage 1's global search when
    ``global_search`` is on and a library is given. min_score: an absolute NCC below which a
    particle also counts as failed — what correct fits of these data reach, e.g. from
    Stage 1's scores (:func:`score_floor`); it catches a network that is wrong for most
    particles, where the chunk's own median says nothing. When more than
    ``restart_max_fraction`` of a batch failed, the start is not worth restarting around
    and the failed particles go straight to the global search.
    """

    sizes: tuple[int, ...] = (64, 128)
    steps: tuple[int, ...] = (15, 10)
    lrs: tuple[float, ...] = (0.3, 0.1)
    outlier_mad: float = 3.0
    restarts: int = 6
    restart_angle_deg: float = 15.0
    restart_steps: int = 8
    global_search: bool = True
    batch_size: int = 32
    min_score: float | None = None
    restart_max_fraction: float = 0.5

    def __post_init__(self) -> None:
        check_settings(
            self,
            [
                (len(self.sizes) > 0, "sizes", "at least one level"),
                (len(self.steps) == len(self.sizes), "steps", "one step count per size"),
                (len(self.lrs) == len(self.sizes), "lrs", "one learning rate per size"),
                (all(s > 0 for s in self.steps), "steps", "positive step counts"),
                (self.restarts >= 0, "restarts", "≥ 0"),
                (self.outlier_mad > 0, "outlier_mad", "> 0"),
                (self.batch_size > 0, "batch_size", "> 0"),
            ],
            "refinement",
        )


@dataclass(frozen=True)
class HybridResult:
    """Final estimates (``pose``; its score is the NCC at the finest level), the start's
    score at that level, and how each particle's estimate was obtained (METHOD codes)."""

    pose: Pose
    start_score: torch.Tensor
    method: torch.Tensor


@dataclass(frozen=True)
class _Prepared:
    """Images, data filter and model of each level, computed once per batch."""

    levels: list[Level]
    images: list[torch.Tensor]
    filters: list[torch.Tensor | None]
    models: list[AtomModel]

    def rows(self, index: torch.Tensor) -> _Prepared:
        return _Prepared(
            self.levels,
            [im[index] for im in self.images],
            [None if f is None else f[index] for f in self.filters],
            self.models,
        )


def _prepare(model, images, pixel_size_A, ctf, phase_flipped, sizes) -> _Prepared:
    dtype, device = model.coords_A.dtype, model.coords_A.device
    levels = levels_for(images.shape[-1], pixel_size_A, sizes)
    if not levels:  # images smaller than every level: refine at their own size
        levels = [Level(images.shape[-1], pixel_size_A)]
    return _Prepared(
        levels,
        [crop_images(images, lv) for lv in levels],
        [ctf_filter(ctf, lv, phase_flipped, dtype, device) for lv in levels],
        [merge_narrow_gaussians(model, lv.pixel_size_A) for lv in levels],
    )


def score_poses(prepared: _Prepared, pose: Pose, level_index: int = -1) -> torch.Tensor:
    """NCC (B,) of each pose's projection with its image at one level."""
    k = level_index % len(prepared.levels)
    with torch.no_grad():
        rendered = render_filtered(
            prepared.models[k],
            pose.matrices,
            pose.amplitudes,
            pose.shifts_A,
            prepared.levels[k],
            prepared.filters[k],
        )
        return ncc(rendered, prepared.images[k])


def _schedule(prepared: _Prepared, pose: Pose, config: RefineConfig, first_steps: int | None):
    for k, level in enumerate(prepared.levels):
        steps = config.steps[k] if (k or first_steps is None) else first_steps
        if steps <= 0:
            continue
        pose = refine(
            prepared.models[k],
            prepared.images[k],
            prepared.filters[k],
            pose,
            level,
            steps,
            config.lrs[k],
        )
    return pose


def _better(a: Pose, b: Pose) -> tuple[Pose, torch.Tensor]:
    """Row-wise the pose with the higher score (ties keep ``a``); and where ``b`` won."""
    take_b = b.score > a.score
    amplitudes = None
    if a.amplitudes is not None:
        amplitudes = torch.where(take_b[:, None], b.amplitudes, a.amplitudes)
    pose = Pose(
        torch.where(take_b[:, None, None], b.matrices, a.matrices),
        amplitudes,
        torch.where(take_b[:, None], b.shifts_A, a.shifts_A),
        torch.where(take_b, b.score, a.score),
    )
    return pose, take_b


def low_score_threshold(score: torch.Tensor, outlier_mad: float) -> float:
    """Scores below median − outlier_mad · σ are low outliers, σ = 1.4826 · MAD but at least
    0.005 (NCC), so that the near-identical scores of clean data flag nothing; −inf with
    fewer than 4 scores (too few to tell)."""
    if score.numel() < 4:
        return -math.inf
    median = score.median()
    sigma = ((score - median).abs().median() * 1.4826).clamp_min(0.005)
    return float(median - outlier_mad * sigma)


def score_floor(scores, outlier_mad: float = 4.0) -> float:
    """The NCC below which a fit counts as failed, from scores of fits known to be mostly
    right (e.g. Stage 1's on the training subset): median − outlier_mad · 1.4826 · MAD."""
    scores = torch.tensor(np.asarray(scores, dtype=np.float64))
    scores = scores[torch.isfinite(scores)]
    if scores.numel() < 4:
        return -math.inf
    median = scores.median()
    return float(median - outlier_mad * 1.4826 * (scores - median).abs().median())


def restart_rotations(count: int, angle_deg: float, dtype=torch.float64, device=None):
    """``count`` rotations (count, 3, 3) of ``angle_deg`` about ±x, ±y, ±z (image frame) in
    that order, then about the diagonals; deterministic, so reruns agree."""
    axes = [[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]]
    axes += [[sx, sy, sz] for sx in (1, -1) for sy in (1, -1) for sz in (1, -1)]
    if count > len(axes):
        raise ValueError(f"at most {len(axes)} restarts")
    omega = torch.tensor(axes[:count], dtype=dtype, device=device)
    omega = omega / omega.norm(dim=1, keepdim=True) * math.radians(angle_deg)
    return rodrigues(omega)


def _restart(prepared: _Prepared, start: Pose, config: RefineConfig) -> Pose:
    """Local restarts around ``start`` (rows): each row tries ``config.restarts`` rotated
    starts for a few steps at the first level; its best goes through the whole schedule."""
    n, r = start.shifts_A.shape[0], config.restarts
    turns = restart_rotations(r, config.restart_angle_deg, start.matrices.dtype,
                              start.matrices.device)  # fmt: skip
    rows = torch.arange(n, device=start.matrices.device).repeat_interleave(r)
    trial = Pose(
        turns.repeat(n, 1, 1) @ start.matrices[rows],
        None if start.amplitudes is None else start.amplitudes[rows],
        start.shifts_A[rows],
        start.score[rows],
    )
    k0 = prepared.rows(rows)
    trial = refine(
        k0.models[0],
        k0.images[0],
        k0.filters[0],
        trial,
        k0.levels[0],
        config.restart_steps,
        config.lrs[0],
    )
    best = trial.score.reshape(n, r).argmax(1)
    chosen = trial.take(torch.arange(n, device=rows.device) * r + best)
    steps_left = config.steps[0] - config.restart_steps
    pose = _schedule(prepared, chosen, config, first_steps=max(steps_left, 0))
    return Pose(pose.matrices, pose.amplitudes, pose.shifts_A, score_poses(prepared, pose))


def _merge_rows(pose: Pose, index: torch.Tensor, new: Pose) -> Pose:
    matrices = pose.matrices.clone()
    matrices[index] = new.matrices
    shifts = pose.shifts_A.clone()
    shifts[index] = new.shifts_A
    score = pose.score.clone()
    score[index] = new.score
    amplitudes = None
    if pose.amplitudes is not None:
        amplitudes = pose.amplitudes.clone()
        amplitudes[index] = new.amplitudes
    return Pose(matrices, amplitudes, shifts, score)


def refine_from(
    model: AtomModel,
    images: torch.Tensor,
    pixel_size_A: float,
    ctf: CTFParams | None,
    phase_flipped: bool,
    start: Pose,
    config: RefineConfig = RefineConfig(),
    library: Library | Callable[[], Library] | None = None,
    align_config=None,
) -> HybridResult:
    """Refine starting estimates of images (B, N, N) against the images.

    start: matrices (B, 3, 3) (rows of A as in :mod:`deephemnma.geometry`), amplitudes
    (B, K) (K = the model's modes) and shifts_A (B, 2); its score is ignored. Rows with
    non-finite starting values go straight to the global search (or keep the start when no
    library is given). ``library`` (or a function that returns it, called only when needed)
    and ``align_config`` (a Stage-1 :class:`~deephemnma.align.stage1.AlignConfig`) enable
    the global-search fallback.
    """
    dtype, device = model.coords_A.dtype, model.coords_A.device
    images = images.to(device=device, dtype=dtype)
    prepared = _prepare(model, images, pixel_size_A, ctf, phase_flipped, config.sizes)
    batch = images.shape[0]

    finite = torch.isfinite(start.matrices).all(-1).all(-1) & torch.isfinite(start.shifts_A).all(1)
    if start.amplitudes is not None:
        finite &= torch.isfinite(start.amplitudes).all(1)
    eye = torch.eye(3, dtype=dtype, device=device).expand(batch, 3, 3)
    safe = Pose(
        torch.where(finite[:, None, None], start.matrices.to(dtype), eye),
        None
        if start.amplitudes is None
        else torch.where(finite[:, None], start.amplitudes.to(dtype), 0.0),
        torch.where(finite[:, None], start.shifts_A.to(dtype), 0.0),
        torch.zeros(batch, dtype=dtype, device=device),
    )
    start_score = score_poses(prepared, safe)
    start_score = torch.where(finite, start_score, torch.full_like(start_score, -1.0))
    safe = Pose(safe.matrices, safe.amplitudes, safe.shifts_A, start_score)

    refined = _schedule(prepared, safe, config, first_steps=None)
    refined = Pose(
        refined.matrices, refined.amplitudes, refined.shifts_A, score_poses(prepared, refined)
    )
    pose, won = _better(safe, refined)
    method = torch.where(won, REFINED, KEPT_START).to(torch.int8)

    threshold = low_score_threshold(pose.score[finite], config.outlier_mad)
    if config.min_score is not None:
        threshold = max(threshold, config.min_score)
    failed = finite & (pose.score < threshold)
    hopeless = float(failed.float().mean()) > config.restart_max_fraction
    if config.restarts and failed.any() and not (hopeless and library is not None):
        index = torch.nonzero(failed).flatten()
        retry = _restart(prepared.rows(index), pose.take(index), config)
        merged, won = _better(pose.take(index), retry)
        pose = _merge_rows(pose, index, merged)
        method[index[won]] = RESTARTED
        failed = finite & (pose.score < threshold)

    failed |= ~finite
    if config.global_search and library is not None and failed.any():
        from deephemnma.align.stage1 import AlignConfig, align_images

        index = torch.nonzero(failed).flatten()
        if callable(library):
            library = library()
        searched = align_images(
            model,
            library,
            images[index],
            pixel_size_A,
            None if ctf is None else ctf.index(index.cpu().numpy()),
            phase_flipped,
            align_config or AlignConfig(),
        )
        searched = Pose(
            searched.matrices,
            searched.amplitudes,
            searched.shifts_A,
            score_poses(prepared.rows(index), searched),
        )
        merged, won = _better(pose.take(index), searched)
        pose = _merge_rows(pose, index, merged)
        method[index[won]] = SEARCHED
    return HybridResult(pose, start_score, method)
