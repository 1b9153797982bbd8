"""Signal swap: training images with new, exactly known labels, made from labelled ones.

A labelled particle image is, to the model's accuracy, ``I = c · F(θ) + ε``: the reference
deformed, rotated and shifted by its labels ``θ``, projected, filtered by what the data carry
of the CTF (``F``; :func:`deephemnma.align.similarity.render_filtered`), scaled by ``c``,
plus everything else ``ε`` — the noise, ice, neighbours, and what the model misses. The swap
replaces the modelled signal by that of other labels ``θ'`` (amplitudes, orientation and shift
each taken from a random other particle of the batch):

    I' = I + c · (F(θ') − F(θ))  =  c · F(θ') + ε,   labelled θ'.

So the network sees the data's own noise — its spectrum, its statistics, its CTF and
defocus, nothing modelled — under a signal whose labels are exact, in combinations the
labelled set does not contain. It is the lever the calibration in BENCHMARK.md points at
(the number of distinct labelled images), without labelling more particles: the 20,000
Stage-1 images of the paper's protocol yield a new image at every step.

What it assumes, and where it is not exact:
- the labels are right: with a wrong label, the image keeps a faint copy of its particle at
  the old pose (``c · (F(θ_true) − F(θ))`` stays in ``ε``);
- the model explains the signal: what it misses (a real molecule's departures from the
  reference, B-factors, a pseudoatomic model's coarseness) is left in ``ε`` at the old pose;
- ``c`` is fitted per image by least squares against ``F(θ)`` (mean removed) and clamped to
  [½, 2] × the training set's median, so a poorly fitting image cannot inject a strong
  signal. On simulated data the model is close to the simulator's, so the gain measured
  there is an upper bound of what real data give.

A share ``fraction`` of each training batch is swapped; the rest stays real, so the network
never trains on swapped images alone. Validation and test images are never swapped.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from deephemnma.align.similarity import Level, ctf_filter, ncc, render_filtered
from deephemnma.ctf import CTFParams, distinct_parameters
from deephemnma.errors import InputError
from deephemnma.network.data import to_device_async
from deephemnma.project import AtomModel

__all__ = ["SignalSwap", "fit_signal_scale", "make_signal_swap", "swap_signals"]

SCALE_CLAMP = 2.0
"""Per-image signal scales are clamped to [median / 2, median × 2]."""


MAX_STORED_FILTERS = 2048
"""Up to this many distinct CTFs (micrographs) among the training images, their filters are
computed once and kept on the device (128²: 33 kB each); beyond, each batch computes its own."""


@dataclass(frozen=True)
class SignalSwap:
    """What a swap needs: the model (reference + modes, on the training device), the CTF of
    the training images by position (None: the images carry no CTF), their geometry, the
    share of each batch to swap and the training set's median signal scale.

    ``filters`` (D, N, N//2 + 1) and ``filter_index`` (n,): the data filter of each distinct
    CTF and which one each training image has, precomputed (:meth:`with_stored_filters`) so
    that a training step copies nothing from the host but the batch positions."""

    model: AtomModel
    ctf: CTFParams | None
    image_size: int
    pixel_size_A: float
    phase_flipped: bool
    fraction: float
    scale: float
    filters: torch.Tensor | None = None
    filter_index: torch.Tensor | None = None

    @property
    def level(self) -> Level:
        return Level(self.image_size, self.pixel_size_A)

    def to(self, device) -> SignalSwap:
        def move(t):
            return None if t is None else t.to(device)

        return replace(
            self,
            model=self.model.to(device=device),
            filters=move(self.filters),
            filter_index=move(self.filter_index),
        )

    def with_stored_filters(self) -> SignalSwap:
        """The swap with its distinct CTF filters precomputed (when there are at most
        :data:`MAX_STORED_FILTERS`)."""
        if self.ctf is None:
            return self
        distinct, inverse = distinct_parameters(self.ctf)
        if np.size(distinct.defocus_u_A) > MAX_STORED_FILTERS:
            return self
        return replace(
            self,
            filters=ctf_filter(distinct, self.level, self.phase_flipped),
            filter_index=torch.from_numpy(inverse),
        )

    def data_filter(self, positions: np.ndarray) -> torch.Tensor | None:
        """(k, N, N//2 + 1) filters of the training images at ``positions``."""
        device = self.model.coords_A.device
        if self.filters is not None:
            index = to_device_async(torch.as_tensor(np.asarray(positions)), device)
            return self.filters[self.filter_index[index]]
        if self.ctf is None:
            return None
        params = self.ctf.index(np.asarray(positions))
        return ctf_filter(params, self.level, self.phase_flipped, device=device)

    def render(self, positions: np.ndarray, amplitudes, matrices, shifts_A) -> torch.Tensor:
        """(k, N, N) filtered projections of the given labels, with the CTF of the images at
        ``positions`` (positions into the training subset)."""
        device = self.model.coords_A.device
        data_filter = self.data_filter(positions)
        f32 = {"device": device, "dtype": torch.float32}
        return render_filtered(
            self.model,
            matrices.to(**f32),
            amplitudes.to(**f32),
            shifts_A.to(**f32),
            self.level,
            data_filter,
        )


def fit_signal_scale(images: torch.Tensor, signal: torch.Tensor) -> torch.Tensor:
    """Least-squares ``c`` per image of ``images ≈ c · signal + const`` (both (k, N, N))."""
    x = images - images.mean((-1, -2), keepdim=True)
    s = signal - signal.mean((-1, -2), keepdim=True)
    return (x * s).sum((-1, -2)) / (s * s).sum((-1, -2)).clamp_min(1e-30)


def swap_signals(
    swap: SignalSwap,
    images: torch.Tensor,
    positions: torch.Tensor,
    amplitudes: torch.Tensor,
    matrices: torch.Tensor,
    shifts_A: torch.Tensor,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Swap the signal of a random ``swap.fraction`` of the batch (module docstring).

    images: (B, N, N) raw pixels (before input normalization); labels as the batch carries
    them; positions: (B,) host positions into the training subset; ``generator``: a CPU
    generator (the draws are the same on every device). Returns new tensors (the batch's own
    are not modified): images and the labels ``(amplitudes, matrices, shifts_A)``.
    """
    b = images.shape[0]
    k = int(round(swap.fraction * b))
    if k == 0:
        return images, amplitudes, matrices, shifts_A
    rows = torch.randperm(b, generator=generator)[:k]
    donors = torch.randint(0, b, (3, k), generator=generator)
    device = images.device
    rows_d, donors_d = to_device_async(rows, device), to_device_async(donors, device)
    new_amp = amplitudes[donors_d[0]]
    new_mat = matrices[donors_d[1]]
    new_shift = shifts_A[donors_d[2]]
    where = np.asarray(positions)[rows.numpy()]
    # The old and the new signals in one rendering call (one filter gather, one batch).
    old, new = swap.render(
        np.concatenate([where, where]),
        torch.cat([amplitudes[rows_d], new_amp]),
        torch.cat([matrices[rows_d], new_mat]),
        torch.cat([shifts_A[rows_d], new_shift]),
    ).split(k)
    chosen = images[rows_d].float()
    scale = fit_signal_scale(chosen, old).clamp(swap.scale / SCALE_CLAMP, swap.scale * SCALE_CLAMP)
    swapped = chosen + scale[:, None, None] * (new - old).to(chosen.dtype)

    def put(values, new_values):
        return values.index_copy(0, rows_d, new_values.to(values.dtype))

    return (
        put(images, swapped),
        put(amplitudes, new_amp),
        put(matrices, new_mat),
        put(shifts_A, new_shift),
    )


def make_signal_swap(
    reference: str,
    modes: str,
    mode_numbers: list[int],
    particle_table,
    images,
    train_rows: np.ndarray,
    labels,
    fraction: float,
    image_size: int,
    pixel_size_A: float,
    sample: int = 256,
) -> SignalSwap:
    """The swap for a training set (on the CPU; move it with :meth:`SignalSwap.to`).

    ``train_rows``: particle rows of the training subset; ``labels``: theirs (all three
    parameter types); ``images``: a :class:`ParticleImages` of ``particle_table``. The median
    signal scale is measured on ``sample`` training images; InputError if the labels do not
    explain them (a reference, modes or labels file that belong to other data).
    """
    from deephemnma.align.run import load_reference
    from deephemnma.io.star import phase_flipped, select
    from deephemnma.project import atom_model, merge_narrow_gaussians

    names = {"amplitudes": "amplitudes", "matrices": "angles", "shifts_A": "shifts"}
    missing = [name for n, name in names.items() if getattr(labels, n) is None]
    if missing:
        raise InputError(
            "synthetic training images need labels of all three parameter types",
            field="--synthetic",
            expected="labels with amplitudes, angles and shifts",
            found="missing " + ", ".join(missing),
        )
    structure, mode_set = load_reference(reference, modes, mode_numbers, center=True)
    subset = select(particle_table, train_rows)
    swap = SignalSwap(
        # Gaussians narrower than half a pixel merged: the same images (NCC > 0.9999), less work.
        model=merge_narrow_gaussians(atom_model(structure, mode_set.vectors), pixel_size_A),
        ctf=_ctf_or_none(subset),
        image_size=image_size,
        pixel_size_A=pixel_size_A,
        phase_flipped=phase_flipped(particle_table),
        fraction=fraction,
        scale=1.0,
    )
    pick = np.linspace(0, len(train_rows) - 1, min(sample, len(train_rows))).astype(np.int64)
    data = torch.from_numpy(np.asarray(images.images(train_rows[pick]), dtype=np.float32))
    signal = swap.render(
        pick,
        torch.from_numpy(labels.amplitudes[pick]),
        torch.from_numpy(labels.matrices[pick]),
        torch.from_numpy(labels.shifts_A[pick]),
    )
    scale = float(torch.median(fit_signal_scale(data, signal)))
    better = labels_beat_shuffled(data, signal)
    if not scale > 0 or better < MIN_MATCHED_SHARE:
        raise InputError(
            "the labels do not explain the training images, so no signal can be swapped",
            path=reference,
            field="--synthetic",
            expected="the reference, modes and labels of these particles",
            found=f"{100 * better:.0f} % of images correlate better with their own labelled "
            f"projection than with another's (chance: 50 %), signal scale {scale:.3g}",
        )
    return replace(swap, scale=scale).with_stored_filters()


MIN_MATCHED_SHARE = 0.6
"""Labels are taken to explain the images when at least this share of a sample correlates
better with its own labelled projection than with another image's (50 % by chance)."""


def labels_beat_shuffled(images: torch.Tensor, signal: torch.Tensor) -> float:
    """Share of images whose NCC with their own projection exceeds that with the next
    image's (a cyclic shift of the sample): ~1 for right labels, ~½ for unrelated ones."""
    own = ncc(images, signal)
    other = ncc(images, torch.roll(signal, 1, dims=0))
    return float((own > other).double().mean())


def _ctf_or_none(table) -> CTFParams | None:
    """The particles' CTF, or None when their table has no CTF columns (images taken as
    carrying no CTF, as ``align --no-ctf`` does)."""
    from deephemnma.io.star import ctf_parameters

    try:
        return ctf_parameters(table)
    except InputError:
        return None
