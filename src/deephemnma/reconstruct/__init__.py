"""3D reconstruction by direct Fourier inversion with CTF correction, half maps and FSC.

- :mod:`~deephemnma.reconstruct.fourier`: central slices (insert, extract), Friedel symmetry,
  the gridding kernel's profile.
- :mod:`~deephemnma.reconstruct.backproject`: CTF-weighted sums, Wiener division, maps.
- :mod:`~deephemnma.reconstruct.fsc`: Fourier shell correlation, resolution, CSV, figure.
- :mod:`~deephemnma.reconstruct.group`: one group's half sets → maps → FSC → files.

See docs/reconstruct.md for the method, the choices and the output layout.
"""

from deephemnma.reconstruct.backproject import (
    FourierAccumulator,
    backproject,
    finish,
    new_accumulator,
    shell_mean_weight,
    wiener_map,
    wiener_tau,
)
from deephemnma.reconstruct.fsc import FSCCurve, fourier_shell_correlation
from deephemnma.reconstruct.group import (
    GroupReconstruction,
    ParticleData,
    ReconstructionSettings,
    model_map,
    particle_data,
    reconstruct_group,
)

__all__ = [
    "FSCCurve",
    "FourierAccumulator",
    "GroupReconstruction",
    "ParticleData",
    "ReconstructionSettings",
    "backproject",
    "finish",
    "fourier_shell_correlation",
    "model_map",
    "new_accumulator",
    "particle_data",
    "reconstruct_group",
    "shell_mean_weight",
    "wiener_map",
    "wiener_tau",
]
