"""Normal-mode analysis: elastic network (Tirion/ANM), RTB, solvers, collectivity, overlap.

Main entry points: :func:`compute_modes` → :class:`Modes`; :func:`save_modes` /
:func:`load_modes`; :func:`deform`. Analysis in :mod:`deephemnma.nma.analysis`, exports
(NMWiz, ContinuousFlex, animations, figure) in :mod:`deephemnma.nma.export`.
"""

from deephemnma.nma.modes import (
    Modes,
    compute_modes,
    deform,
    load_modes,
    parse_mode_numbers,
    save_modes,
)

__all__ = [
    "Modes",
    "compute_modes",
    "deform",
    "load_modes",
    "parse_mode_numbers",
    "save_modes",
]
