"""CTF against its closed form: zeros, sign at low frequency, astigmatism axis."""

import math

import numpy as np
import torch

from deephemnma.ctf import CTFParams, ctf_rfft, electron_wavelength_A, phase_flip


def _params(**kw):
    base = dict(
        defocus_u_A=15000.0,
        defocus_v_A=15000.0,
        voltage_kV=300.0,
        cs_mm=2.7,
        amplitude_contrast=0.07,
    )
    base.update(kw)
    return CTFParams(**base)


def test_wavelength_known_values():
    assert abs(float(electron_wavelength_A(300.0)) - 0.019687) < 1e-5
    assert abs(float(electron_wavelength_A(200.0)) - 0.025079) < 1e-5


def test_ctf_at_zero_is_plus_q_and_positive_at_low_frequency_for_underfocus():
    ctf = ctf_rfft(_params(), 256, 1.0, dtype=torch.float64)
    assert abs(float(ctf[0, 0]) - 0.07) < 1e-12
    assert float(ctf[0, 1]) > 0.07 and float(ctf[1, 0]) > 0.07


def test_zeros_where_theory_puts_them():
    n, pix, q = 1024, 0.5, 0.1
    p = _params(amplitude_contrast=q)
    lam = float(electron_wavelength_A(300.0))
    cs = 2.7e7
    profile = ctf_rfft(p, n, pix, dtype=torch.float64)[0].numpy()  # along +k_x
    k = np.fft.rfftfreq(n, d=pix)
    # CTF = sin(χ + φ) with φ = atan(Q/√(1−Q²)): zeros where χ(k) + φ = mπ.
    phi = math.atan(q / math.sqrt(1 - q * q))
    chi = math.pi * lam * 15000.0 * k**2 - 0.5 * math.pi * cs * lam**3 * k**4
    crossings = np.where(np.diff(np.sign(profile)) != 0)[0]
    assert len(crossings) > 5
    for i in crossings[:8]:
        # The analytic zero lies between the two samples around each sign change.
        m = np.round((chi[i] + phi) / math.pi)
        lo, hi = sorted([chi[i] + phi - m * math.pi, chi[i + 1] + phi - m * math.pi])
        assert lo <= 1e-9 and hi >= -1e-9


def test_astigmatism_defocus_u_along_the_angle():
    angle = 30.0
    p = _params(defocus_u_A=20000.0, defocus_v_A=10000.0, defocus_angle_deg=angle)
    single_u = _params(defocus_u_A=20000.0, defocus_v_A=20000.0)
    single_v = _params(defocus_u_A=10000.0, defocus_v_A=10000.0)
    n, pix = 512, 1.0
    ctf, cu, cv = (
        ctf_rfft(x, n, pix, dtype=torch.float64).numpy() for x in (p, single_u, single_v)
    )
    ky = np.fft.fftfreq(n)[:, None] * np.ones((1, n // 2 + 1))
    kx = np.fft.rfftfreq(n)[None, :] * np.ones((n, 1))
    theta = np.degrees(np.arctan2(ky, kx))
    along_u = np.abs(theta - angle) < 0.5
    along_v = np.abs(theta - (angle + 90)) < 0.5
    np.testing.assert_allclose(ctf[along_u], cu[along_u], atol=0.05)
    np.testing.assert_allclose(ctf[along_v], cv[along_v], atol=0.05)


def test_batched_parameters_and_bfactor_envelope():
    p = _params(
        defocus_u_A=torch.tensor([10000.0, 20000.0]),
        defocus_v_A=torch.tensor([10000.0, 20000.0]),
        bfactor_A2=torch.tensor([0.0, 100.0]),
    )
    ctf = ctf_rfft(p, 64, 1.0)
    assert ctf.shape == (2, 64, 33)
    assert float(ctf[1].abs().max()) <= 1.0
    one = ctf_rfft(p.index(slice(0, 1)), 64, 1.0)
    np.testing.assert_allclose(one[0].numpy(), ctf[0].numpy())


def test_phase_flip_twice_restores_the_image_where_ctf_is_nonzero():
    image = torch.randn(1, 64, 64, dtype=torch.float64)
    ctf = ctf_rfft(_params(), 64, 1.0, dtype=torch.float64)[None]
    twice = phase_flip(phase_flip(image, ctf), ctf)
    np.testing.assert_allclose(twice.numpy(), image.numpy(), atol=1e-10)
