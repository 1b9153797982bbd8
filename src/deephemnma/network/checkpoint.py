"""Checkpoints: everything needed to resume training or to predict, in one ``torch.save`` file.

A checkpoint is a plain dict (loadable with ``torch.load(weights_only=True)``):

- ``format`` ("deephemnma-network"), ``format_version``, ``deephemnma`` (version);
- ``spec``: :class:`NetworkSpec` as a dict; ``model``: the state dict of the (unwrapped) net;
- ``normalization``: :class:`InputNormalization`; ``scaling``: :class:`TargetScaling`;
- ``mode_numbers`` (list), ``image_size`` (pixels), ``pixel_size_A``, ``phase_flipped`` (the
  training images were CTF phase-flipped; absent in older checkpoints);
- ``config``: the training configuration; ``epoch``: completed epochs; ``history``: one dict
  per epoch; ``best``: ``{"epoch", "val_loss"}``; ``bad_epochs`` (early stopping);
- for resuming only (``checkpoint.pt``, not ``best.pt``): ``optimizer``, ``scheduler``.

Files are written to a temporary name and renamed, so a ``kill -9`` leaves the previous
complete checkpoint.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from deephemnma.errors import InputError
from deephemnma.io.atomic import atomic_path
from deephemnma.network.data import InputNormalization
from deephemnma.network.model import DeepHEMNMANet, NetworkSpec, TargetScaling

FORMAT = "deephemnma-network"
FORMAT_VERSION = 1
LAST = "checkpoint.pt"
BEST = "best.pt"

__all__ = [
    "BEST",
    "LAST",
    "CheckpointWriter",
    "LoadedNetwork",
    "load_network",
    "read_checkpoint",
    "save_checkpoint",
]


def save_checkpoint(path: str | Path, state: dict) -> Path:
    """Write ``state`` (a plain dict, see the module docstring) atomically."""
    path = Path(path)
    with atomic_path(path) as tmp, _without_crc32():
        torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, **state}, tmp)
    return path


class CheckpointWriter:
    """Writes checkpoints on a background thread, so that training goes on while a file is
    being written (the H200 of run 4 spent 0.3 s of each ~2.3 s epoch saving 270 MB).

    :meth:`snapshot` copies every tensor of a state into host buffers kept from the previous
    snapshot (pinned for CUDA tensors; a fresh 270 MB copy costs more than writing it, in
    page faults), so the network and optimizer may change as soon as it returns; :meth:`write`
    starts writing files from a snapshot. A snapshot first waits for the previous write: at
    most one write is in flight, buffers are never overwritten while written, and files
    appear in the order written, each atomically. :meth:`wait` (and :meth:`close`) re-raise a
    write's error in the caller.
    """

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def snapshot(self, state):
        """``state`` (nested dicts, lists, tuples, tensors, plain values) with every tensor
        copied to a host buffer and every container new."""
        self.wait()
        cuda = []
        copied = self._copy(state, "", cuda)
        if cuda:  # the copies to pinned memory run asynchronously on each tensor's device
            for device in set(cuda):
                torch.cuda.synchronize(device)
        return copied

    def _copy(self, value, key: str, cuda: list):
        if isinstance(value, torch.Tensor):
            value = value.detach()
            buffer = self._buffers.get(key)
            if (
                buffer is None
                or buffer.shape != value.shape
                or buffer.dtype != value.dtype
                or buffer.stride() != value.stride()
            ):
                # The same strides as the source (channels-last weights stay so): a resumed
                # run must see exactly the tensors it saved.
                buffer = torch.empty_like(value, device="cpu", pin_memory=value.is_cuda)
                self._buffers[key] = buffer
            buffer.copy_(value, non_blocking=value.is_cuda)
            if value.is_cuda:
                cuda.append(value.device)
            return buffer
        if isinstance(value, dict):
            return {k: self._copy(v, f"{key}/{k}", cuda) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self._copy(v, f"{key}/{i}", cuda) for i, v in enumerate(value))
        return value

    def write(self, files: list[tuple[str | Path, dict]]) -> None:
        """Write each ``(path, state)`` in order, in the background; states from
        :meth:`snapshot` (tensors here are read while training goes on)."""
        self.wait()

        def work() -> None:
            try:
                for path, state in files:
                    save_checkpoint(path, state)
            except BaseException as error:  # re-raised by wait() in the training thread
                self._error = error

        self._thread = threading.Thread(target=work, name="checkpoint-writer", daemon=True)
        self._thread.start()

    def wait(self) -> None:
        """Block until the write in flight (if any) is on disk; re-raise its error."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def close(self) -> None:
        self.wait()
        self._buffers.clear()


@contextmanager
def _without_crc32():
    """torch.save without the zip records' CRC32 (PyTorch's reader has not checked it since
    2020, pytorch/pytorch#32244).

    A file only gets its name once complete, so the checksum guards nothing here, and it
    cost 40-50% of the time of saving a 270 MB checkpoint after every epoch (0.40-0.68 s
    → 0.22-0.29 s on the 2-core CPU; an H100 run spent 0.5 s of each ~2 s epoch saving)."""
    setter = getattr(torch.serialization, "set_crc32_options", None)  # torch >= 2.6
    if setter is None:
        yield
        return
    before = torch.serialization.get_crc32_options()
    setter(False)
    try:
        yield
    finally:
        setter(before)


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or the training folder's ``best.pt`` (else ``checkpoint.pt``)."""
    path = Path(path)
    if path.is_dir():
        for name in (BEST, LAST):
            if (path / name).is_file():
                return path / name
        raise InputError("no checkpoint in folder", path=path, expected=f"{BEST} or {LAST}")
    if not path.is_file():
        raise InputError("checkpoint not found", path=path)
    return path


def read_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """The checkpoint dict; InputError if the file is not one of ours."""
    path = resolve_checkpoint(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise InputError(
            f"cannot read the checkpoint ({exc})",
            path=path,
            expected="a file written by 'deephemnma train'",
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise InputError(
            "not a deephemnma network checkpoint",
            path=path,
            expected=f"format {FORMAT}",
            found=str(state.get("format") if isinstance(state, dict) else type(state)),
        )
    return state


@dataclass(frozen=True)
class LoadedNetwork:
    """A trained network in eval mode and how to feed it / read it."""

    model: DeepHEMNMANet
    spec: NetworkSpec
    normalization: InputNormalization
    scaling: TargetScaling
    mode_numbers: list[int]
    image_size: int
    pixel_size_A: float
    state: dict
    phase_flipped: bool | None = None  # None: a checkpoint from before this was recorded


def load_network(path: str | Path, device="cpu") -> LoadedNetwork:
    """Rebuild the network of a checkpoint (eval mode, on ``device``)."""
    state = read_checkpoint(path)
    spec = NetworkSpec.from_dict(state["spec"])
    model = DeepHEMNMANet(spec)
    model.load_state_dict(state["model"])
    model.eval().to(device)
    return LoadedNetwork(
        model=model,
        spec=spec,
        normalization=InputNormalization.from_dict(state["normalization"]),
        scaling=TargetScaling.from_dict(state["scaling"]),
        mode_numbers=[int(m) for m in state["mode_numbers"]],
        image_size=int(state["image_size"]),
        pixel_size_A=float(state["pixel_size_A"]),
        state=state,
        phase_flipped=None if "phase_flipped" not in state else bool(state["phase_flipped"]),
    )
