"""Screenshots of the Explorer's views on a run's own artifacts, for ``reports/index.html``, with checks.

``make reports`` calls :func:`capture` after the notebooks: it serves the app from a thread on a free
loopback port, opens it in headless Debian Chromium through Playwright, walks a marketer's path (first
screen with the largest segment's card, comparison of the two largest segments, affinity, the lookalike
stage's audience, the plan (each, or why there is none), the export view) and saves one PNG per view into
``<reports>/screenshots/``. Nothing is exported (the export view is shown, not submitted).

Three checks a test (and a curious user) can run on a live page: :func:`overlapping_labels` (bounding boxes
of the charts' visible text that intersect), :func:`clipped_labels` (chart text running past its chart, which
the browser cuts off) and :func:`raw_names_in_text` (column names of the run's configuration that leak into
visible text).
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import Iterable

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
VIEWS = ("segment_map", "persona_card", "compare", "affinity_heatmap", "lookalike", "questions", "plan", "export")
#: Text elements of the plotly charts whose boxes must not overlap (titles, axis titles, ticks, legend).
LABEL_SELECTOR = (".gtitle, .g-xtitle, .g-ytitle, .xtick text, .ytick text, .legendtext, .annotation-text, "
                  ".cbtitle text, .colorbar .tick text")

_BOXES_JS = """(sel) => {
  const out = [];
  document.querySelectorAll('.view.active .js-plotly-plot').forEach(plot => {
    plot.querySelectorAll(sel).forEach(el => {
      const r = el.getBoundingClientRect();
      const t = (el.textContent || '').trim();
      if (t && r.width > 0 && r.height > 0) out.push({chart: plot.id, text: t, x: r.x, y: r.y, w: r.width, h: r.height,
                                                    cls: el.getAttribute('class') || el.parentNode.getAttribute('class') || ''});
    });
  });
  return out;
}"""


_CLIPPED_JS = """([sel, tol]) => {
  const out = [];
  document.querySelectorAll('.view.active .js-plotly-plot').forEach(plot => {
    const c = plot.getBoundingClientRect();
    plot.querySelectorAll(sel).forEach(el => {
      const r = el.getBoundingClientRect();
      const t = (el.textContent || '').trim();
      if (t && r.width > 0 && (r.left < c.left - tol || r.right > c.right + tol || r.top < c.top - tol
                               || r.bottom > c.bottom + tol)) out.push([plot.id, t]);
    });
  });
  return out;
}"""


class BrowserMissing(RuntimeError):
    """Chromium is not installed: ``scripts/install_browser.sh`` installs it."""


def overlapping_labels(page, tolerance: float = 1.0) -> list[tuple[str, str, str]]:
    """Pairs of visible chart labels of the active view whose bounding boxes intersect (by more than
    ``tolerance`` pixels each way): ``[(chart id, text 1, text 2), ...]``; empty when every label is clear."""
    boxes = page.evaluate(_BOXES_JS, LABEL_SELECTOR)
    bad = []
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            if a["chart"] != b["chart"]:
                continue
            dx = min(a["x"] + a["w"], b["x"] + b["w"]) - max(a["x"], b["x"])
            dy = min(a["y"] + a["h"], b["y"] + b["h"]) - max(a["y"], b["y"])
            if dx > tolerance and dy > tolerance:
                bad.append((a["chart"], a["text"], b["text"]))
    return bad


def clipped_labels(page, tolerance: float = 1.0) -> list[tuple[str, str]]:
    """Visible chart labels of the active view that run past their chart's box by more than ``tolerance``
    pixels (the browser cuts them off, as a long rotated axis title at the top): ``[(chart id, text), ...]``."""
    return [tuple(x) for x in page.evaluate(_CLIPPED_JS, [LABEL_SELECTOR, tolerance])]


def raw_names(config=None, extra: Iterable[str] = ()) -> list[str]:
    """Column names a marketer must never read: every declared column of the run configuration whose name
    is code-like (has an underscore or a lower-to-upper case change, such as ``time_on_social_media_min``,
    ``MonthlyCharges``) plus ``extra``."""
    from .. import config as cfgmod

    cfg = cfgmod.load(config)
    names = set(cfg.columns) | set(extra)
    for d in (cfg.dates.customer_since, cfg.dates.recency):
        if d:
            names.add(d)
    return sorted(n for n in names if n and ("_" in n or re.search(r"[a-z][A-Z]", n)))


def raw_names_in_text(text: str, names: Iterable[str]) -> list[str]:
    """Which of ``names`` occur as whole words in ``text``."""
    return [n for n in names if re.search(rf"(?<![A-Za-z0-9_]){re.escape(n)}(?![A-Za-z0-9_])", text)]


def visible_text(page) -> str:
    """The visible text of the page (header and active view, including chart labels)."""
    return page.evaluate("() => document.body.innerText + '\\n' + Array.from(document.querySelectorAll("
                         "'.view.active svg text')).map(t => t.textContent).join('\\n')")


def capture(data_dir: str | os.PathLike, reports_dir: str | os.PathLike, *, lookalike_size: int = 500,
            timeout_ms: int = 120_000, chromium: Path = CHROMIUM, config_path=None,
            checks: dict | None = None) -> list[Path]:
    """Save a screenshot of every Explorer view of the run in ``data_dir`` into ``reports_dir/screenshots``.

    Returns the written files. Raises :class:`BrowserMissing` when ``chromium`` does not exist. When
    ``checks`` is a dict it receives, per view, ``{"overlaps": [...], "clipped": [...], "raw_names": [...]}``.
    """
    if not Path(chromium).exists():
        raise BrowserMissing(f"{chromium} is absent: run scripts/install_browser.sh to get screenshots")
    from playwright.sync_api import sync_playwright

    from .app import create_app, make_server

    out = Path(reports_dir) / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    app = create_app(data_dir, reports_dir, n_threads=1, config_path=config_path)
    names = raw_names(app.extensions["explorer"].load().cfg)
    server = make_server(app, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    written: list[Path] = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 950}, bypass_csp=True)
            page.set_default_timeout(timeout_ms)

            def shot(view: str) -> None:
                page.wait_for_timeout(300)  # plotly's resize after a tab switch
                path = out / f"{view}.png"
                page.screenshot(path=str(path), full_page=True)
                written.append(path)
                if checks is not None:
                    checks[view] = {"overlaps": overlapping_labels(page), "clipped": clipped_labels(page),
                                    "raw_names": raw_names_in_text(visible_text(page), names)}

            page.goto(f"http://127.0.0.1:{server.server_port}/")
            page.wait_for_selector("body[data-ready='1']")
            shot("segment_map")
            page.locator("#card").scroll_into_view_if_needed()
            shot("persona_card")
            page.click("#tab-compare")
            page.wait_for_selector("#sim-chart .heatmaplayer")
            page.click("#cmp-run")
            page.wait_for_selector("#cmp-table")
            shot("compare")
            page.click("#tab-affinity")
            page.wait_for_selector("#heatmap .hm, #heatmap .heatmaplayer")
            shot("affinity_heatmap")
            page.click("#tab-lookalike")
            page.fill("#la-size", str(lookalike_size))
            page.click("#la-run")
            page.wait_for_selector("#la-chart .barlayer, #la-missing")  # the stage's audience, or why there is none
            shot("lookalike")
            page.click("#tab-questions")
            page.wait_for_selector("#q-topic option, #q-missing", state="attached")
            if page.locator("#q-missing").count() == 0:
                page.select_option("#q-topic", index=1)
                page.click("#q-run")
                page.wait_for_selector("#q-title, #q-result .error")
            shot("questions")
            page.click("#tab-plan")
            page.click("#plan-run")
            page.wait_for_selector("#plan-table, #plan-missing")
            shot("plan")
            page.click("#tab-export")
            shot("export")
            browser.close()
    finally:
        server.shutdown()
        thread.join(10)
    return written
