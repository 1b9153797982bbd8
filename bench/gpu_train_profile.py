"""Where a training step's time goes on a GPU (for a short lease; about a minute):

    python bench/gpu_train_profile.py [--device cuda] [--size 128] [--out results.json]

The first H200 runs trained at 4,600–6,500 images/s (batch 128–256), a third of what the
network alone should do (~21,500 images/s at batch 256, bf16, channels-last), with or without
loader processes. This times, on random device-resident images of the paper's size:

- ``model``: forward + backward + AdamW step of the network alone, per batch size, with and
  without channels-last;
- ``+losses``: the same with the training losses (6D rotation, chordal loss, scaled targets);
- ``+augment``: plus the label-exact augmentation (dihedral mirror + Fourier-shear rotation);
- ``+augment graphed``: the same with the network's passes as CUDA graphs (``train
  --cuda-graphs``, :mod:`deephemnma.network.graphs`);

each as images/s (median of ``--repeats`` timed steps after warm-up, CUDA-synchronized), and
the top operators of one profiled full step. Writes JSON and prints a table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from deephemnma.network.data import augment_batch  # noqa: E402
from deephemnma.network.graphs import graph_training_passes  # noqa: E402
from deephemnma.network.model import (  # noqa: E402
    DeepHEMNMANet,
    LossConfig,
    NetworkSpec,
    TargetScaling,
    compute_losses,
)
from deephemnma.network.train import use_fast_kernels  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _batch(b: int, size: int, device: torch.device) -> dict:
    from deephemnma.geometry import euler_to_matrix

    angles = torch.rand(b, 3, dtype=torch.float64) * torch.tensor([360.0, 180.0, 360.0])
    return {
        "images": torch.randn(b, 1, size, size, device=device),
        "amplitudes": torch.randn(b, 3, device=device) * 50,
        "matrices": euler_to_matrix(angles).float().to(device),
        "shifts_A": torch.randn(b, 2, device=device),
        "positions": torch.arange(b),
    }


def time_steps(variant: str, b: int, size: int, device, channels_last: bool, repeats: int):
    spec = NetworkSpec(n_amplitudes=3)
    model = DeepHEMNMANet(spec).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    scaling = TargetScaling((0.0,) * 3, (50.0,) * 3, (0.0, 0.0), (1.0, 1.0))
    loss_config = LossConfig("l1", "chordal", {"amplitudes": 1.0, "rotation": 0.25, "shifts": 1.0})
    batch = _batch(b, size, device)
    bf16 = device.type == "cuda"
    generator = torch.Generator().manual_seed(0)
    base, _, graphs = variant.partition(" ")
    if graphs and not graph_training_passes(model, b, size, channels_last=channels_last,
                                            bf16=bf16):  # fmt: skip
        return None, None

    def step():
        x, m, s = batch["images"], batch["matrices"], batch["shifts_A"]
        if base == "+augment":
            images, m, s = augment_batch(x[:, 0], m, s, "rotation", generator)
            x = images[:, None]
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16,
                            cache_enabled=not graphs):  # fmt: skip
            raw = model(x)
        if base == "model":
            loss = sum(v.float().abs().mean() for v in raw.values())
        else:
            target = {**batch, "matrices": m, "shifts_A": s}
            loss = compute_losses(raw, target, spec, scaling, loss_config)["total"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(5):
        step()
    _sync(device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t)
    # Throughput with the queue kept full (no sync between steps), as training runs.
    t = time.perf_counter()
    for _ in range(repeats):
        step()
    _sync(device)
    queued = (time.perf_counter() - t) / repeats
    return {
        "variant": variant,
        "batch": b,
        "channels_last": channels_last,
        "step_ms_synced": round(1e3 * statistics.median(times), 2),
        "img_per_s_synced": round(b / statistics.median(times), 1),
        "img_per_s_queued": round(b / queued, 1),
    }, step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", default="cuda")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batches", default="128,256,512")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--variants", default="model,+losses,+augment,+augment graphed")
    p.add_argument("--profile", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--out", default="train_profile.json")
    args = p.parse_args()
    device = torch.device(args.device)
    use_fast_kernels(device)
    rows, last_step = [], None
    for b in (int(v) for v in args.batches.split(",")):
        for variant in args.variants.split(","):
            for channels_last in (True, False) if variant == "model" else (True,):
                row, step = time_steps(variant, b, args.size, device, channels_last, args.repeats)
                if row is None:
                    continue
                last_step = step if not variant.endswith("graphed") else last_step
                rows.append(row)
                print(json.dumps(row), flush=True)
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "size": args.size, "rows": rows}  # fmt: skip
    if last_step is not None and args.profile:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + (
            [ProfilerActivity.CUDA] if device.type == "cuda" else []
        )
        with profile(activities=activities) as prof:
            for _ in range(3):
                last_step()
            _sync(device)
        key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
        table = prof.key_averages().table(sort_by=key, row_limit=25)
        result["profile"] = table
        print(table)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"{'variant':17s} {'batch':>6s} {'CL':>3s} {'img/s synced':>13s} {'img/s queued':>13s}")
    for r in rows:
        print(f"{r['variant']:17s} {r['batch']:6d} {int(r['channels_last']):3d} "
              f"{r['img_per_s_synced']:13.0f} {r['img_per_s_queued']:13.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
