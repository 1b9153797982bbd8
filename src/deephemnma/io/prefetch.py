"""Particle images read ahead by threads and sent to the device, batch after batch.

For streaming inference from particle stacks. A ``torch`` DataLoader with worker
processes copies every batch three times on the host (the worker's read, the move into shared
memory, the main process's copy into pinned memory); on an H100 its prediction loop ran at
~33,000 images/s of 128², a third of what the network infers. Here reader threads copy each
batch once, from the page cache straight into a pinned buffer (the positional reads of
:class:`~deephemnma.io.mrc.ParticleImages` release the GIL), and the main thread only queues
the transfer: a ring of ``depth`` buffers, each reused once the device has finished copying
from it (a CUDA event). The transfers run on a stream of their own, so that batch ``i + 1``
crosses the bus while the network works on batch ``i`` (on the default stream a copy waits
for the work queued before it: a batch of 1,024 images of 128² is 67 MB, a few milliseconds
on the bus against ~11 ms of network at the 92,000 images/s an H200 infers). With it,
``deephemnma predict`` made 30,100 images/s on an H100 (23,400 on an H200 without it; 18,700
with DataLoader processes on the H100; docs/gpu.md, runs 4 and 5). Measured on 2 CPU cores
(``bench/read_images.py``, 128²): 2 threads read 83,000–90,000 images/s, 2 DataLoader
processes 29,000–32,000.

On the CPU there is nothing to transfer: each batch is a fresh array, so a batch the consumer
still holds is never overwritten.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

__all__ = ["RING_BYTES", "prefetch_images"]

RING_BYTES = 1 << 30
"""Host memory the ring may pin: 16 batches of 1,024 images of 128², 4 of 256²."""


def prefetch_images(
    images,
    batches: Sequence[np.ndarray],
    device: torch.device,
    threads: int = 2,
    depth: int | None = None,
    ring: bool | None = None,
) -> Iterator[torch.Tensor]:
    """Yield, for each array of table rows in ``batches``, the images of those rows of
    ``images`` (a :class:`~deephemnma.io.mrc.ParticleImages`, all images of one size) on
    ``device``: float32 (B, 1, H, W). ``threads`` readers (0: read in the caller's thread,
    no read-ahead) keep up to ``depth`` batches (default ``2 × threads``) read ahead.
    ``ring``: read into ``depth`` reused host buffers, pinned on a GPU (default: on a GPU
    only; on the CPU each batch is then copied out of its buffer). Errors of the reading
    (:class:`~deephemnma.errors.InputError`) are raised at the batch they concern."""
    batches = [np.asarray(b, dtype=np.int64) for b in batches]
    if not batches:
        return
    if threads <= 0:
        for rows in batches:
            yield torch.from_numpy(images.images(rows))[:, None].to(device)
        return
    depth = max(1, depth if depth is not None else 2 * threads)
    if ring is None:
        ring = device.type == "cuda"
    buffers = _Ring(images, batches, depth, device) if ring else None
    if buffers is not None:
        depth = len(buffers.buffers)
    pending: collections.deque[Future] = collections.deque()
    with ThreadPoolExecutor(threads, thread_name_prefix="deephemnma-read") as pool:
        try:
            for i, rows in enumerate(batches[:depth]):
                pending.append(_submit(pool, images, rows, buffers, i))
            for i in range(len(batches)):
                host = pending.popleft().result()[:, None]
                if buffers is None:
                    x = host.to(device)
                else:
                    x = buffers.copy_out(i, host)
                if i + depth < len(batches):
                    pending.append(_submit(pool, images, batches[i + depth], buffers, i + depth))
                yield x
        finally:
            for future in pending:
                future.cancel()


def _submit(pool, images, rows: np.ndarray, buffers: _Ring | None, i: int) -> Future:
    if buffers is None:
        return pool.submit(lambda: torch.from_numpy(images.images(rows)))
    return pool.submit(buffers.read, i, rows)


class _Ring:
    """``depth`` host buffers (pinned for a GPU), at most :data:`RING_BYTES` together but at
    least two; batch ``i`` is read into buffer ``i % depth`` once its previous batch has been
    copied out of it."""

    def __init__(self, images, batches: list[np.ndarray], depth: int, device: torch.device):
        self.images, self.device = images, device
        size = images.images(batches[0][:1]).shape[1:]
        largest = max(len(b) for b in batches)
        depth = max(2, min(depth, RING_BYTES // (4 * largest * int(np.prod(size)))))
        pin = device.type == "cuda"
        self.buffers = [
            torch.empty((largest, *size), dtype=torch.float32, pin_memory=pin) for _ in range(depth)
        ]
        self.events: list[torch.cuda.Event | None] = [None] * depth
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def read(self, i: int, rows: np.ndarray) -> torch.Tensor:
        k = i % len(self.buffers)
        if self.events[k] is not None:
            self.events[k].synchronize()  # releases the GIL while it waits
        buffer = self.buffers[k][: len(rows)]
        self.images.images(rows, out=buffer.numpy())
        return buffer

    def copy_out(self, i: int, host: torch.Tensor) -> torch.Tensor:
        """Batch ``i`` (in its buffer) on the device, for work queued on the current stream
        from now on. The buffer is free again once the (asynchronous) copy is done, which an
        event marks on a GPU."""
        if self.device.type != "cuda":  # a synchronous copy: the buffer is free at once
            return host.clone() if self.device.type == "cpu" else host.to(self.device)
        consumer = torch.cuda.current_stream(self.device)
        with torch.cuda.stream(self.stream):
            x = host.to(self.device, non_blocking=True)
            copied = torch.cuda.Event()
            copied.record(self.stream)
        self.events[i % len(self.buffers)] = copied
        consumer.wait_event(copied)
        # x's memory belongs to the copy stream's pool: without this, once x is dropped the
        # allocator could hand it to the next copy while the consumer still reads it.
        x.record_stream(consumer)
        return x
