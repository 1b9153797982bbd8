"""Electron form factors of neutral atoms (Peng et al. 1996, Acta Cryst. A52, 257–276).

``f(s) = Σ_i a_i exp(−b_i s²)`` with ``s = sin θ / λ = |k| / 2`` (Å⁻¹) and ``b_i`` in Å². These
are the five-Gaussian elastic parameters of Peng's Table 3, the ones Xmipp (and so HEMNMA, the
paper's simulator) uses. In real space each term is a 3D Gaussian of standard deviation
``σ_i = sqrt(b_i / (8π²))`` (Å) and weight ``a_i``; its integral over all space is ``a_i``.
"""

from __future__ import annotations

import numpy as np

from deephemnma.errors import InputError

# element: (a1..a5, b1..b5 [Å²])
PENG_1996: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "H": ((0.0088, 0.0449, 0.1481, 0.2356, 0.0914), (0.1152, 1.0867, 4.9755, 16.5591, 43.2743)),
    "C": ((0.0489, 0.2091, 0.7537, 1.1420, 0.3555), (0.1140, 1.0825, 5.4281, 17.8811, 51.1341)),
    "N": ((0.0267, 0.1328, 0.5301, 1.1020, 0.4215), (0.0541, 0.5165, 2.8207, 10.6297, 34.3764)),
    "O": ((0.0365, 0.1729, 0.5805, 0.8814, 0.3121), (0.0652, 0.6184, 2.9449, 9.6298, 28.2194)),
    "S": ((0.0915, 0.4312, 1.0847, 2.4671, 1.0852), (0.0838, 0.7788, 4.3462, 15.5846, 44.6365)),
    "P": ((0.1005, 0.4615, 1.0663, 2.5854, 1.2725), (0.0977, 0.9084, 4.9654, 18.5471, 54.3648)),
    "NA": ((0.1260, 0.6442, 0.8893, 1.8197, 1.2988), (0.1684, 1.7150, 8.8386, 50.8265, 147.2073)),
    "MG": ((0.1130, 0.5575, 0.9046, 2.1580, 1.4735), (0.1356, 1.3579, 6.9255, 32.3165, 92.1138)),
    "CL": ((0.0799, 0.3891, 1.0037, 2.3332, 1.0507), (0.0694, 0.6443, 3.5351, 12.5058, 35.8633)),
    "K": ((0.2149, 0.8703, 2.4999, 2.3591, 3.0318), (0.1660, 1.6906, 8.7447, 46.7825, 165.6923)),
}

_MASS = {
    "H": 1.008,
    "C": 12.011,
    "N": 14.007,
    "O": 15.999,
    "S": 32.06,
    "P": 30.974,
    "NA": 22.990,
    "MG": 24.305,
    "CL": 35.45,
    "K": 39.098,
    "CA": 40.078,
    "FE": 55.845,
    "ZN": 65.38,
    "MN": 54.938,
    "SE": 78.971,
}


def atomic_mass(element: np.ndarray) -> np.ndarray:
    """Atomic masses (Da) for an array of element symbols; unknown symbols count as carbon."""
    return np.array([_MASS.get(str(e).upper(), _MASS["C"]) for e in element], dtype=np.float64)


def peng_parameters(
    element: np.ndarray, source: str = "structure"
) -> tuple[np.ndarray, np.ndarray]:
    """Per-atom Peng parameters ``(a, b_A2)``, each (N, 5) float64.

    Raises :class:`InputError` naming the unknown elements, so a user can remove them or
    choose a selection without them (ions and metals beyond the table are rare in references).
    """
    element = np.char.upper(np.asarray(element).astype(str))
    unknown = sorted(set(element.tolist()) - set(PENG_1996))
    if unknown:
        raise InputError(
            "no Peng 1996 form factor for element(s) " + ", ".join(unknown),
            path=source,
            field="element",
            expected="one of " + " ".join(sorted(PENG_1996)),
            found=", ".join(unknown),
        )
    table_a = {k: v[0] for k, v in PENG_1996.items()}
    table_b = {k: v[1] for k, v in PENG_1996.items()}
    a = np.array([table_a[e] for e in element], dtype=np.float64).reshape(-1, 5)
    b = np.array([table_b[e] for e in element], dtype=np.float64).reshape(-1, 5)
    return a, b


def gaussian_sigma_A(b_A2: np.ndarray, bfactor_A2: float = 0.0) -> np.ndarray:
    """Real-space standard deviation (Å) of each Gaussian term, with an optional extra
    temperature factor ``B`` (Å², Debye–Waller ``exp(−B s²)``) that adds to every ``b_i``."""
    return np.sqrt((np.asarray(b_A2) + bfactor_A2) / (8.0 * np.pi**2))
