"""``deephemnma explore``: a local web app to look at the conformational space and pick groups.

- :mod:`~deephemnma.explore.project` — the project directory as the app sees it (space, groups).
- :mod:`~deephemnma.explore.density` — per-point 2D density for coloring.
- :mod:`~deephemnma.explore.models` — centroid models and trajectories along a drawn path.
- :mod:`~deephemnma.explore.jobs` — background subprocesses, one per key at a time.
- :mod:`~deephemnma.explore.reconstruction` — the reconstruct job: command, inputs, results.
- :mod:`~deephemnma.explore.security` — access token, host check, paths kept in the project.
- :mod:`~deephemnma.explore.app` — the HTTP API and the page (FastAPI).
- :mod:`~deephemnma.explore.server` — running it with uvicorn.
- :mod:`~deephemnma.explore.synthetic` — a synthetic project for tests and measurements.

The page itself (``static/``) is plain JavaScript: a WebGL scatter written for this app and the
vendored 3Dmol.js molecule viewer; nothing is fetched from the internet.
"""
