"""Screenshots of the Explorer's views on a run's own artifacts, for ``reports/index.html``.

``make reports`` calls :func:`capture` after the notebooks: it serves the app from a thread on a free
loopback port, opens it in headless Debian Chromium through Playwright, and saves one PNG per view into
``<reports>/screenshots/``. Nothing is exported (the export view is shown, not submitted).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
VIEWS = ("segment_map", "persona_card", "affinity_heatmap", "lookalike", "export")


class BrowserMissing(RuntimeError):
    """Chromium is not installed: ``scripts/install_browser.sh`` installs it."""


def capture(data_dir: str | os.PathLike, reports_dir: str | os.PathLike, *, lookalike_size: int = 500,
            timeout_ms: int = 120_000, chromium: Path = CHROMIUM) -> list[Path]:
    """Save a screenshot of every Explorer view of the run in ``data_dir`` into ``reports_dir/screenshots``.

    Returns the written files. Raises :class:`BrowserMissing` when ``chromium`` does not exist.
    """
    if not Path(chromium).exists():
        raise BrowserMissing(f"{chromium} is absent: run scripts/install_browser.sh to get screenshots")
    from playwright.sync_api import sync_playwright
    from .app import create_app, make_server

    out = Path(reports_dir) / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    app = create_app(data_dir, reports_dir, n_threads=1)
    server = make_server(app, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    written: list[Path] = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 950})
            page.set_default_timeout(timeout_ms)

            def shot(view: str) -> None:
                path = out / f"{view}.png"
                page.screenshot(path=str(path), full_page=True)
                written.append(path)

            page.goto(f"http://127.0.0.1:{server.server_port}/")
            page.wait_for_selector("body[data-ready='1']")
            shot("segment_map")
            # the largest bubble's persona card (bubbles are drawn by plotly as scatter points)
            bubbles = page.locator("#map .scatterlayer .point")
            box = bubbles.nth(0).bounding_box()
            page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.wait_for_function("document.getElementById('card').dataset.segment !== undefined")
            shot("persona_card")
            page.click("#tab-affinity")
            page.wait_for_selector("#heatmap .hm, #heatmap .heatmaplayer")
            shot("affinity_heatmap")
            page.click("#tab-lookalike")
            page.fill("#la-size", str(lookalike_size))
            page.click("#la-run")
            page.wait_for_selector("#la-chart .barlayer")
            shot("lookalike")
            page.click("#tab-export")
            shot("export")
            browser.close()
    finally:
        server.shutdown()
        thread.join(10)
    return written
