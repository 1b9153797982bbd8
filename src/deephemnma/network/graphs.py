"""The network's training forward and backward replayed as CUDA graphs (``train --cuda-graphs``).

On a GPU a training step of ResNet34 + MLP at 128² is bound by launching work, not by doing
it: about 350 operators in the forward and 470 in the backward, each queued from Python or
the autograd engine (a 2-core CPU count with a dispatch-mode counter), against ~5 ms of
arithmetic for a batch of 256. The H200 of run 4 (docs/gpu.md) took 26 ms per step.
:func:`torch.cuda.make_graphed_callables` captures both passes once and replays each with a
single launch; what runs around them (reading, augmentation, the signal swap, the losses,
the optimizer) stays as it is.

Only the training mode is graphed: validation (``model.eval()``) runs the ordinary forward,
at its own batch size. The graphs need the batch size fixed (the training sampler drops the
last short batch) and one process (not under DDP).
"""

from __future__ import annotations

import warnings

import torch

__all__ = ["graph_training_passes"]


def graph_training_passes(
    model: torch.nn.Module,
    batch_size: int,
    image_size: int,
    *,
    channels_last: bool,
    bf16: bool,
    log=print,
) -> bool:
    """Capture ``model``'s training-mode forward and backward as CUDA graphs, in place.

    The capture runs a few passes on random images; the batch-norm statistics they would
    leave are put back, so training starts from the model as it was. Returns True when the
    model is graphed; False, with a message to ``log``, where it cannot be (not on CUDA) or
    the capture fails (the model then runs as before).
    """
    device = next(model.parameters()).device
    if device.type != "cuda":
        log("--cuda-graphs: ignored (not on a CUDA device)")
        return False
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    was_training = model.training
    model.train()
    sample = torch.randn(batch_size, 1, image_size, image_size, device=device)
    if channels_last:
        sample = sample.contiguous(memory_format=torch.channels_last)
    try:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16, cache_enabled=False):
            torch.cuda.make_graphed_callables(model, (sample,))
        graphed = True
        _quiet_replay_warnings()
    except Exception as error:  # noqa: BLE001 - any capture failure falls back to eager
        log(f"--cuda-graphs: capture failed ({type(error).__name__}: {error}); training without")
        graphed = False
        torch.cuda.empty_cache()  # a capture that ran out of memory leaves its pool behind
    with torch.no_grad():
        for name, b in model.named_buffers():
            b.copy_(buffers[name])
    model.train(was_training)
    return graphed


def _quiet_replay_warnings() -> None:
    """Silence two warnings that the replayed backward raises on every run (run 5, H100):
    its autograd thread starts without a current CUDA context (cuBLAS then takes the primary
    one, as it would anyway), and the gradient accumulators were made on the capture's side
    stream. Neither changes a result, and the graphed step was measured 20% faster with them."""
    warnings.filterwarnings("ignore", message="Attempting to run cuBLAS, but there was no current")
    warnings.filterwarnings("ignore", message="The AccumulateGrad node's stream does not match")
