"""Motions in the conformational space: trajectories, centroid models, PDB and GIF output.

A trajectory is a sequence of amplitude vectors (F, M); the models are the reference
deformed by them (``r + Σ_k q_k v_k``, CONVENTIONS.md). Along PC ``p`` the amplitude at
``t`` standard deviations is ``mean + t · σ_p · components[p]``. A user path is a polyline of
points in PC space, resampled at equal arc-length steps.

Movies are rendered without any external viewer: each frame is our projector's image
(:func:`deephemnma.project.render_images`, Peng potentials, blurred by about a pixel) of the
deformed model seen along z and along x, side by side, with one gray scale for the whole
movie, written as an animated GIF with Pillow.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from deephemnma.analysis.space import ConformationalSpace
from deephemnma.errors import InputError
from deephemnma.io.atomic import atomic_path
from deephemnma.nma.modes import Modes, deform

# ------------------------------------------------------------------------------- amplitudes


def pc_trajectory(
    space: ConformationalSpace, pc: int, n_frames: int = 10, extent_std: float = 2.0
) -> tuple[np.ndarray, np.ndarray]:
    """Amplitudes along PC ``pc`` (0-based) from −extent_std to +extent_std std.

    Returns ``(t (F,), amplitudes (F, M))`` with amplitude = mean + t · σ · component.
    """
    if not 0 <= pc < space.n_components:
        raise InputError(
            "no such principal component",
            field="pc",
            expected=f"0..{space.n_components - 1}",
            found=str(pc),
        )
    if n_frames < 2:
        raise InputError(
            "a trajectory needs at least 2 frames", field="n_frames", found=str(n_frames)
        )
    t = np.linspace(-extent_std, extent_std, int(n_frames))
    sigma = float(space.pc_std()[pc])
    return t, space.mean + (t * sigma)[:, None] * space.components[pc]


def resample_path(points: np.ndarray, n_frames: int) -> np.ndarray:
    """``n_frames`` points at equal arc-length steps along the polyline points (P, d)."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or len(points) < 2:
        raise InputError("a path needs at least two points", field="path", found=str(points.shape))
    step = np.linalg.norm(np.diff(points, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(step)])
    if s[-1] == 0:
        raise InputError("the path has zero length", field="path")
    target = np.linspace(0.0, s[-1], int(n_frames))
    return np.stack([np.interp(target, s, points[:, j]) for j in range(points.shape[1])], -1)


def path_trajectory(
    space: ConformationalSpace, points: np.ndarray, n_frames: int = 20
) -> tuple[np.ndarray, np.ndarray]:
    """Amplitudes along a user path of points (P, d ≤ K) in PC space (missing PCs at 0).

    Returns ``(pc_points (F, d), amplitudes (F, M))``.
    """
    sampled = resample_path(points, n_frames)
    return sampled, space.to_amplitudes(sampled)


def read_path(path: str | os.PathLike) -> np.ndarray:
    """A path file: one point per line, PC coordinates separated by spaces or commas
    (PC1 PC2 [PC3 …], amplitude units); ``#`` starts a comment."""
    path = Path(path)
    if not path.is_file():
        raise InputError("path file not found", path=path)
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.split("#", 1)[0].replace(",", " ").split()
        if not text:
            continue
        try:
            rows.append([float(v) for v in text])
        except ValueError:
            raise InputError(
                f"line {number} is not a list of numbers",
                path=path,
                expected="PC coordinates such as '-120.5 30'",
                found=line.strip(),
            ) from None
    if len({len(r) for r in rows}) > 1:
        raise InputError("path points have different numbers of coordinates", path=path)
    if len(rows) < 2:
        raise InputError("a path needs at least two points", path=path, found=str(len(rows)))
    return np.array(rows)


def group_centroids(
    amplitudes: np.ndarray, resolved: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Mean amplitude vector (M,) of each non-empty group's particles."""
    amplitudes = np.asarray(amplitudes, dtype=np.float64)
    return {name: amplitudes[rows].mean(axis=0) for name, rows in resolved.items() if len(rows)}


# ------------------------------------------------------------------------------- models


def modes_for(modes: Modes, mode_numbers: np.ndarray) -> Modes:
    """The modes of ``modes`` that the amplitude columns refer to, in their order."""
    return modes.select([int(m) for m in np.asarray(mode_numbers).ravel()])


def deformed_models(modes: Modes, amplitudes: np.ndarray) -> np.ndarray:
    """Reference deformed by each amplitude vector (F, M) → (F, N, 3) Å."""
    return deform(modes, np.atleast_2d(np.asarray(amplitudes, dtype=np.float64)))


def write_trajectory_pdb(path: str | os.PathLike, modes: Modes, amplitudes: np.ndarray) -> Path:
    """Multi-model PDB/mmCIF (by extension): one model per amplitude vector (F, M)."""
    from deephemnma.io.pdb import write_models

    return write_models(path, modes.structure, deformed_models(modes, amplitudes))


# ------------------------------------------------------------------------------- movies


def _view_matrices() -> np.ndarray:
    """Projection matrices of the two views: along z (front) and along x (side)."""
    front = np.eye(3)
    side = np.array([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # (z, y) on screen
    return np.stack([front, side])


def render_frames(
    modes: Modes,
    amplitudes: np.ndarray,
    image_size: int = 128,
    bar: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Gray images (F, image_size, 2·image_size) uint8 of the deformed models, two views.

    The box is centered on the reference's centroid and fits every frame with a 10 % margin;
    atoms are blurred by a B-factor of 8π²σ² with σ = max(1.5 pixels, 2 Å) so the image reads
    as a density; one linear gray scale (0 = empty) for the whole movie so motions are not hidden
    by per-frame contrast changes. ``bar(n)`` is called after each frame.
    """
    import torch

    from deephemnma.project import AtomModel, atom_model, merge_narrow_gaussians, render_images

    models = deformed_models(modes, amplitudes)  # (F, N, 3)
    center = modes.structure.coords_A.mean(axis=0)
    models = models - center
    extent_A = 2.2 * float(np.linalg.norm(models, axis=-1).max())
    pixel_A = max(extent_A / image_size, 1e-3)
    structure = modes.structure.with_coords(modes.structure.coords_A - center)
    blur_A = max(1.5 * pixel_A, 2.0)  # atoms merge into a density, not a speckle of dots
    model = atom_model(structure, bfactor_A2=8 * math.pi**2 * blur_A**2)
    model = merge_narrow_gaussians(model, pixel_A)
    views = torch.as_tensor(_view_matrices(), dtype=torch.float32)
    images = []
    for frame in models:
        coords = torch.as_tensor(frame, dtype=torch.float32)
        with torch.no_grad():
            pair = render_images(
                AtomModel(coords, model.weight, model.sigma_A),
                views,
                image_size,
                pixel_A,
            )
        images.append(torch.cat([pair[0], pair[1]], dim=-1).numpy())
        if bar is not None:
            bar(1)
    stack = np.stack(images)
    top = float(np.quantile(stack, 0.999)) or 1.0
    scaled = np.clip(stack / top, 0.0, 1.0) ** 0.7  # gamma: thin parts stay visible
    # Rows are y; flip so that +y is up on screen, as in a viewer.
    return (255 * scaled[:, ::-1, :]).astype(np.uint8)


def write_gif(
    path: str | os.PathLike, frames: np.ndarray, fps: float = 10.0, bounce: bool = True
) -> Path:
    """Animated GIF of gray frames (F, H, W) uint8, looping; ``bounce`` plays forth and back."""
    from PIL import Image

    frames = np.asarray(frames, dtype=np.uint8)
    if frames.ndim != 3 or len(frames) == 0:
        raise InputError("GIF frames must be (F, H, W)", found=str(frames.shape))
    sequence = list(frames)
    if bounce and len(sequence) > 2:
        sequence = sequence + sequence[-2:0:-1]
    images = [Image.fromarray(f, mode="L") for f in sequence]
    duration_ms = int(round(1000.0 / fps))
    path = Path(path)
    with atomic_path(path) as tmp:
        images[0].save(
            tmp,
            format="GIF",
            save_all=True,
            append_images=images[1:],
            duration=duration_ms,
            loop=0,
            optimize=False,
        )
    return path
