"""Noise before/after the CTF gives the requested SNR, measured from signal and noise."""

import numpy as np
import pytest
import torch

from deephemnma.ctf import CTFParams, ctf_rfft
from deephemnma.noise import add_noise_before_after_ctf, rfft_mean


def test_rfft_mean_equals_full_spectrum_mean():
    x = torch.randn(3, 32, 32, dtype=torch.float64)
    full = torch.fft.fft2(x).abs() ** 2
    half = torch.fft.rfft2(x).abs() ** 2
    np.testing.assert_allclose(rfft_mean(half, 32).numpy(), full.mean((-1, -2)).numpy())


@pytest.mark.parametrize("before_fraction", [0.0, 0.5, 1.0])
def test_snr_within_ten_percent(before_fraction):
    gen = torch.Generator().manual_seed(1)
    size = 128
    yy, xx = torch.meshgrid(torch.arange(size) - 64.0, torch.arange(size) - 64.0, indexing="ij")
    blobs = torch.exp(-((xx - 10) ** 2 + yy**2) / 60) + 0.5 * torch.exp(
        -((xx + 15) ** 2 + (yy - 8) ** 2) / 30
    )
    projections = blobs.expand(32, size, size).double()
    ctf = ctf_rfft(
        CTFParams(5000.0, 5000.0, voltage_kV=200.0, cs_mm=2.0), size, 0.65, dtype=torch.float64
    ).expand(32, size, size // 2 + 1)
    noisy, clean = add_noise_before_after_ctf(projections, ctf, 0.1, before_fraction, gen)
    measured = clean.var(dim=(-1, -2)) / (noisy - clean).var(dim=(-1, -2))
    assert abs(float(measured.mean()) / 0.1 - 1) < 0.1


def test_infinite_snr_is_noise_free():
    p = torch.rand(2, 16, 16, dtype=torch.float64)
    ctf = torch.ones(2, 16, 9, dtype=torch.float64)
    noisy, clean = add_noise_before_after_ctf(p, ctf, float("inf"))
    np.testing.assert_allclose(noisy.numpy(), clean.numpy())
    np.testing.assert_allclose(clean.numpy(), p.numpy(), atol=1e-12)
