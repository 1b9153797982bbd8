"""Time to first render of the explorer's scatter in headless Chromium (WebGL on SwiftShader,
i.e. on the CPU: a machine with a GPU browser is faster).

    python bench/explore_render.py --n 1000000 --repeats 3

Writes a synthetic project of N points, serves it, loads the page ``repeats`` times in a fresh
navigation and reads ``window.exploreFirstRenderMs``: milliseconds from the start of the
navigation to the end of the first complete draw of all N points (a pixel read back), which
includes fetching the coordinates and colors as binary Float32 arrays.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from common import report, timed
from deephemnma.explore.app import create_app
from deephemnma.explore.browser import first_render_ms, start_chromium
from deephemnma.explore.project import project_paths
from deephemnma.explore.server import ThreadedServer
from deephemnma.explore.synthetic import write_project

# One pan/zoom frame: draw all points again (median of 10, until a pixel reads back).
REDRAW = """
const s = window.explore.scatter, times = [];
for (let k = 0; k < 10; k++) {
  s.view.kx *= 1.01; s.view.ky *= 1.01;
  const t = performance.now(); s.draw(); s.sync(); times.push(performance.now() - t);
}
times.sort((a, b) => a - b);
return times[5];
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        prep: dict = {}
        with timed(prep):
            root = write_project(Path(folder) / "project", n=args.n, particles=False)
        app = create_app(project_paths(root))
        driver = start_chromium(1400, 900)
        try:
            with ThreadedServer(app) as server:
                times = []
                for _ in range(args.repeats):
                    times.append(first_render_ms(driver, server.url()))
                    time.sleep(0.5)
                renderer = driver.execute_script("return window.explore.scatter.renderer")
                redraw = driver.execute_script(REDRAW)
                version = driver.capabilities.get("browserVersion")
        finally:
            driver.quit()
    row = {
        "n_points": args.n,
        "first_render_ms_median": statistics.median(times),
        "first_render_ms_all": ", ".join(f"{t:.0f}" for t in times),
        "redraw_ms": redraw,
        "note": "first load includes the server's density computation; later loads are cached",
        "renderer": f"{renderer}, headless Chromium {version} (SwiftShader)",
        "project_write_s": prep["wall_s"],
    }
    report(
        "explore_render",
        [row],
        ["n_points", "first_render_ms_median", "first_render_ms_all", "redraw_ms", "renderer"],
    )


if __name__ == "__main__":
    main()
