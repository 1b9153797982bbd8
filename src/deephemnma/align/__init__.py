"""Stage 1: HEMNMA-style elastic + rigid 3D-to-2D alignment of particle images.

Global pose search over a projection library at low resolution, then joint gradient
refinement of normal-mode amplitudes, rotation and shift, coarse to fine
(:mod:`deephemnma.align.search`, :mod:`deephemnma.align.refine`), chunked and resumable
(:mod:`deephemnma.align.run`).
"""
