"""Time to first render of the explorer's scatter in headless Chromium (WebGL on SwiftShader,
i.e. on the CPU: a machine with a GPU browser is faster), and its frames while the user pans
and zooms.

    python bench/explore_render.py --n 1000000 --repeats 3

Writes a synthetic project of N points, serves it, loads the page ``repeats`` times in a fresh
navigation and reads ``window.exploreFirstRenderMs``: milliseconds from the start of the
navigation to the end of the first complete draw of all N points (a pixel read back), which
includes fetching the coordinates and colors as binary Float32 arrays.

Then it interacts for ``--seconds`` each way and times the frames:

- zoom: a wheel event on the plot at every animation frame (dispatched by the page's own
  JavaScript, so nothing outside the page limits the rate);
- drag: a pan with the mouse, moves sent through the DevTools protocol (the browser's real
  input path; each move waits for the page to take it, which adds the driver's round trip).

``interval`` is the median time between consecutive frames (draw calls) while interacting:
what the user sees. With the page's level of detail, ``frame`` and ``points`` are the median
time and point count the page records for its interactive frames
(``window.explore.scatter.frameLog``, also ``performance`` measures named ``explore-frame``),
and ``settle`` the time from the last pan/zoom event to the start of the final draw of all
points.

``--static DIR`` serves the page from another copy of ``explore/static`` (e.g. an older
version, ``git archive``) to compare on the same machine.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

from common import report, timed
from deephemnma.explore import app as explore_app
from deephemnma.explore.app import create_app
from deephemnma.explore.browser import first_render_ms, start_chromium, wait_for
from deephemnma.explore.project import project_paths
from deephemnma.explore.server import ThreadedServer
from deephemnma.explore.synthetic import write_project

# One pan/zoom frame without level of detail: draw all points again (median of 10, until a
# pixel reads back).
REDRAW = """
const s = window.explore.scatter, times = [];
for (let k = 0; k < 10; k++) {
  s.view.kx *= 1.01; s.view.ky *= 1.01;
  const t = performance.now(); s.draw(); s.sync(); times.push(performance.now() - t);
}
times.sort((a, b) => a - b);
s.fit();
return times[5];
"""

# Record the start of every draw (works with any version of the page).
RECORD = """
const s = window.explore.scatter;
window.__draws = [];
if (!s.__recorded) {
  const draw = s.draw.bind(s);
  s.draw = function () { window.__draws.push(performance.now()); return draw(); };
  s.__recorded = true;
}
s.frameLog = s.frameLog ? [] : undefined;
return performance.now();
"""

# Zoom in and out around the plot's centre with one wheel event per animation frame.
ZOOM = """
const [seconds, done] = [arguments[0], arguments[arguments.length - 1]];
const overlay = document.getElementById("overlay"), rect = overlay.getBoundingClientRect();
const t0 = performance.now();
let last = t0;
function step(now) {
  if (now - t0 > 1000 * seconds) { done(last); return; }
  const deltaY = 40 * Math.cos((2 * Math.PI * (now - t0)) / 1500);
  overlay.dispatchEvent(new WheelEvent("wheel", {
    deltaY, clientX: rect.left + rect.width / 2, clientY: rect.top + rect.height / 2,
    cancelable: true, bubbles: true,
  }));
  last = performance.now();
  requestAnimationFrame(step);
}
requestAnimationFrame(step);
"""


def drag(driver, seconds: float) -> float:
    """Pan in circles for ``seconds`` by mouse; the page's time of the last move."""
    cx, cy = driver.execute_script(
        "const r = document.getElementById('overlay').getBoundingClientRect();"
        "return [r.left + r.width / 2, r.top + r.height / 2];"
    )

    def mouse(kind: str, x: float, y: float, **extra) -> None:
        event = {"type": kind, "x": x, "y": y, "button": "left", "buttons": 1, **extra}
        driver.execute_cdp_cmd("Input.dispatchMouseEvent", event)

    mouse("mousePressed", cx, cy, clickCount=1)
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        angle = 2 * math.pi * elapsed / 1.5
        mouse("mouseMoved", cx + 80 * math.sin(angle), cy + 80 * (1 - math.cos(angle)))
    last = driver.execute_script("return performance.now()")
    mouse("mouseReleased", cx, cy, clickCount=1)
    return last


def interaction(driver, how: str, seconds: float, n: int) -> dict:
    start = driver.execute_script(RECORD)
    if how == "zoom":
        driver.set_script_timeout(seconds + 60)
        last = driver.execute_async_script(ZOOM, seconds)
    else:
        last = drag(driver, seconds)
    time.sleep(0.5)  # the final full draw is issued after SETTLE_MS
    draws = [t for t in driver.execute_script("return window.__draws") if t >= start]
    during = [t for t in draws if t <= last]
    intervals = [b - a for a, b in zip(during, during[1:], strict=False)]
    row = {
        f"{how}_frames": len(during),
        f"{how}_interval_ms": statistics.median(intervals) if intervals else None,
    }
    log = driver.execute_script("return window.explore.scatter.frameLog || null")
    if log:  # a page with level of detail
        frames = [f for f in log if f["interactive"]]
        final = log[-1]
        assert not final["interactive"] and final["points"] == n, final
        row[f"{how}_frame_ms"] = statistics.median(f["ms"] for f in frames)
        row[f"{how}_points"] = statistics.median(f["points"] for f in frames)
        last_event = driver.execute_script("return window.explore.scatter.lastInteraction")
        row[f"{how}_settle_ms"] = final["t"] - last_event
    time.sleep(1.0)  # let the full draw finish
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0, help="of each interaction")
    parser.add_argument("--static", type=Path, help="serve the page from this folder")
    args = parser.parse_args()
    if args.static:
        explore_app.STATIC = args.static.resolve()
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
                wait_for(driver, "document.body.dataset.ready === '1'", 60)
                time.sleep(1.0)
                renderer = driver.execute_script("return window.explore.scatter.renderer")
                redraw = driver.execute_script(REDRAW)
                time.sleep(1.0)
                frames = {}
                for how in ("zoom", "drag"):
                    frames.update(interaction(driver, how, args.seconds, args.n))
                version = driver.capabilities.get("browserVersion")
        finally:
            driver.quit()
    row = {
        "n_points": args.n,
        "page": str(args.static) if args.static else "package",
        "first_render_ms_median": statistics.median(times),
        "first_render_ms_all": ", ".join(f"{t:.0f}" for t in times),
        "redraw_ms": redraw,
        **frames,
        "note": "first load includes the server's density computation; later loads are cached",
        "renderer": f"{renderer}, headless Chromium {version} (SwiftShader)",
        "project_write_s": prep["wall_s"],
    }
    columns = ["n_points", "first_render_ms_median", "first_render_ms_all", "redraw_ms"]
    columns += [c for c in frames if c.endswith(("interval_ms", "frame_ms", "points"))]
    report("explore_render" if not args.static else "explore_render_other_page", [row], columns)


if __name__ == "__main__":
    main()
