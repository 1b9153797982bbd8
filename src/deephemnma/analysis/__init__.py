"""Stage 3: the conformational space (paper §2.3) — PCA, groups, trajectories, export.

A notebook user can call each step::

    from deephemnma.analysis import axis_bins, fit_space, pc_trajectory, save_space
    space = fit_space(amplitudes, mode_numbers)          # PCA of (N, M) amplitudes
    groups = axis_bins(space.coords, 7, min_per_group=900)  # the paper's ribosome bins
    t, amps = pc_trajectory(space, pc=0, n_frames=10)     # ±2 std along PC1

``analyze`` (:func:`deephemnma.analysis.run.analyze`) and ``export``
(:func:`deephemnma.analysis.export.export`) chain them for the command line.
"""

from deephemnma.analysis.grouping import (
    automatic_groups,
    axis_bins,
    density_peak_groups,
    gmm_groups,
    kmeans_groups,
)
from deephemnma.analysis.pca import PCAFit, fit_pca, fit_space, subspace_angles_deg
from deephemnma.analysis.space import ConformationalSpace, load_space, save_space
from deephemnma.analysis.trajectory import (
    group_centroids,
    path_trajectory,
    pc_trajectory,
    read_path,
    render_frames,
    write_gif,
    write_trajectory_pdb,
)

__all__ = [
    "ConformationalSpace",
    "PCAFit",
    "automatic_groups",
    "axis_bins",
    "density_peak_groups",
    "fit_pca",
    "fit_space",
    "gmm_groups",
    "group_centroids",
    "kmeans_groups",
    "load_space",
    "path_trajectory",
    "pc_trajectory",
    "read_path",
    "render_frames",
    "save_space",
    "subspace_angles_deg",
    "write_gif",
    "write_trajectory_pdb",
]
