"""The page in a real headless Chromium (tests and measurements), driven by selenium.

Uses the system's Chromium and chromedriver (Debian: ``apt-get install chromium
chromium-driver``; ``make test`` installs them when run as root). Without a GPU, WebGL runs on
SwiftShader, Chromium's CPU renderer. selenium is a development dependency.
"""

from __future__ import annotations

import io
import os
import shutil
import time

import numpy as np

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
DRIVERS = ("chromedriver",)
FLAGS = (
    "--headless=new",
    "--no-sandbox",  # CI runs as root
    "--disable-dev-shm-usage",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",  # WebGL without a GPU
    "--ignore-gpu-blocklist",
    "--disable-extensions",
    "--no-first-run",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
)


def _which(env: str, names: tuple[str, ...]) -> str | None:
    given = os.environ.get(env)
    if given:
        return given if os.path.isfile(given) else None
    return next((p for p in map(shutil.which, names) if p), None)


def find_browser() -> tuple[str, str] | None:
    """(chromium, chromedriver) paths, or None when either is missing.

    ``DEEPHEMNMA_CHROMIUM`` and ``DEEPHEMNMA_CHROMEDRIVER`` override the search.
    """
    browser = _which("DEEPHEMNMA_CHROMIUM", BROWSERS)
    driver = _which("DEEPHEMNMA_CHROMEDRIVER", DRIVERS)
    return (browser, driver) if browser and driver else None


def start_chromium(width: int = 1400, height: int = 900):
    """A selenium WebDriver for headless Chromium (caller quits it)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    found = find_browser()
    if found is None:
        raise RuntimeError(
            "chromium and chromedriver not found (apt-get install chromium chromium-driver)"
        )
    browser, driver = found
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--window-size={width},{height}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(driver))


def wait_for(driver, script: str, timeout_s: float = 30.0, interval_s: float = 0.05):
    """Run ``script`` (a JS expression after ``return``) until it is truthy; its value."""
    deadline = time.time() + timeout_s
    while True:
        value = driver.execute_script("return " + script)
        if value:
            return value
        if time.time() > deadline:
            errors = [e["message"] for e in driver.get_log("browser")][-5:]
            raise TimeoutError(f"waited {timeout_s} s for {script!r}; console: {errors}")
        time.sleep(interval_s)


def first_render_ms(driver, url: str, timeout_s: float = 120.0) -> float:
    """Load ``url`` and return the page's time to first render of all points (ms).

    The page sets ``window.exploreFirstRenderMs`` (``performance.now()``, i.e. since the
    navigation started) after the first complete draw of the scatter (a pixel read back).
    """
    driver.get(url)
    return float(wait_for(driver, "window.exploreFirstRenderMs", timeout_s))


def pixel_spread(png: bytes) -> float:
    """Standard deviation of the grey values of a PNG screenshot (0 for a blank image)."""
    import matplotlib.image

    image = matplotlib.image.imread(io.BytesIO(png), format="png")
    grey = np.asarray(image, dtype=np.float64)[..., :3].mean(axis=-1)
    return float(grey.std())
