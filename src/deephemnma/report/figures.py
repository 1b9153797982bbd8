"""Figures the report draws itself (when a stage wrote numbers but no picture), as PNG bytes,
and mode movies as GIF bytes."""

from __future__ import annotations

import io

import numpy as np

from deephemnma.plotting import plt
from deephemnma.report.model import Image

COLOR = "#2f6690"
ACCENT = "#d1495b"


def png_bytes(fig, dpi: int = 100) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=dpi, format="png")
    plt.close(fig)
    return buffer.getvalue()


def modes_figure(mode_numbers, eigenvalues, collectivity) -> bytes:
    """Eigenvalue (γ units, log scale) and collectivity per mode, two bar panels."""
    numbers = [str(int(m)) for m in mode_numbers]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8.0, 2.8))
    ax1.bar(numbers, np.maximum(np.asarray(eigenvalues, float), 1e-12), color=COLOR)
    ax1.set_yscale("log")
    ax1.set_ylabel("eigenvalue (γ)")
    ax1.set_title("eigenvalues", fontsize=10)
    ax2.bar(numbers, collectivity, color=ACCENT)
    ax2.set_ylim(0, 1)
    ax2.set_ylabel("collectivity κ")
    ax2.set_title("collectivity", fontsize=10)
    for ax in (ax1, ax2):
        ax.set_xlabel("mode")
        ax.tick_params(labelsize=8)
        if len(numbers) > 20:
            ax.set_xticks(ax.get_xticks()[:: max(1, len(numbers) // 15)])
    fig.tight_layout()
    return png_bytes(fig)


def history_figure(rows: list[dict[str, str]]) -> bytes | None:
    """Training curves from history.csv rows: losses (log) and validation errors."""
    columns = set(rows[0])
    if "epoch" not in columns:
        return None

    def values(key):
        out = []
        for row in rows:
            try:
                out.append(float(row.get(key, "nan")))
            except ValueError:
                out.append(np.nan)
        return np.asarray(out)

    epochs = values("epoch")
    panels = [("loss", [k for k in ("train_total", "val_total") if k in columns], True)]
    for key, title in (
        ("val_amp_mae", "amplitude MAE"),
        ("val_angle_deg", "angle error (°)"),
        ("val_shift_mae_A", "shift MAE (Å)"),
    ):
        if key in columns:
            panels.append((title, [key], False))
    panels = [p for p in panels if p[1]]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 2.8), squeeze=False)
    for ax, (title, keys, log) in zip(axes[0], panels, strict=True):
        for key in keys:
            ax.plot(epochs, values(key), marker=".", label=key.replace("_total", ""))
        if log:
            ax.set_yscale("log")
            ax.legend(fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.tick_params(labelsize=8)
    fig.tight_layout()
    return png_bytes(fig)


def fsc_figure(rows: list[dict[str, str]], title: str = "") -> bytes | None:
    """FSC curves from fsc.csv rows (``frequency_invA`` or ``resolution_A``, then one
    ``fsc`` or ``fsc_<name>`` column per curve), with the 0.143 and 0.5 thresholds."""
    columns = list(rows[0])

    def values(key):
        out = []
        for row in rows:
            try:
                out.append(float(row[key]))
            except (TypeError, ValueError):
                out.append(np.nan)
        return np.asarray(out)

    if "frequency_invA" in columns:
        frequency = values("frequency_invA")
    elif "resolution_A" in columns:
        with np.errstate(divide="ignore"):
            frequency = 1.0 / values("resolution_A")
    else:
        return None
    curves = [c for c in columns if c == "fsc" or c.startswith("fsc_")]
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(5.0, 3.2))
    for key in curves:
        name = key[4:] if key.startswith("fsc_") else "half maps"
        ax.plot(frequency, values(key), label=name.replace("_", " "))
    for level, style in ((0.143, ":"), (0.5, "--")):
        ax.axhline(level, color="gray", lw=0.8, ls=style)
    ax.set_ylim(-0.1, 1.05)
    ax.set_xlabel("spatial frequency (Å⁻¹)")
    ax.set_ylabel("FSC")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return png_bytes(fig)


def mode_movie(modes, mode_number: int, rms_A: float, n_frames: int, size: int) -> Image:
    """GIF of the reference moving along one mode over ±``rms_A`` Å RMS displacement
    (amplitude ±rms·√N for unit-norm 3N vectors), views along z and x side by side."""
    import tempfile
    from pathlib import Path

    from deephemnma.analysis.trajectory import render_frames, write_gif

    one = modes.select([mode_number])
    n_atoms = one.vectors.shape[1]
    amplitude = rms_A * np.sqrt(n_atoms)
    frames = render_frames(one, np.linspace(-amplitude, amplitude, n_frames)[:, None], size)
    with tempfile.TemporaryDirectory() as folder:
        path = write_gif(Path(folder) / "mode.gif", frames, fps=8.0)
        data = path.read_bytes()
    caption = (
        f"Mode {mode_number}: the reference displaced over ±{rms_A:g} Å RMS "
        f"(amplitude ±{amplitude:.0f}), viewed along z (left) and x (right)."
    )
    return Image(data, "image/gif", caption, "drawn by the report")
