"""Screenshots of every Explorer view, checked (helpers.explorer.screenshots), and a marketer's path on a
user-table run (the Telco sample under its configuration).

A module of its own: Playwright's sync API cannot start while another module's browser is still open.
"""

from __future__ import annotations

import threading

import pandas as pd
import pytest

from helpers import export, paths
from helpers.explorer import create_app
from helpers.explorer.app import make_server
from helpers.explorer.demo import write_demo_artifacts, write_table_run
from helpers.explorer.screenshots import (CHROMIUM, CHROMIUM_ARGS, VIEWS, capture, clipped_labels, overlapping_labels,
                                          raw_names, raw_names_in_text, visible_text)

pytestmark = pytest.mark.browser
TIMEOUT_MS = 90_000


@pytest.fixture(autouse=True)
def _chromium():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent: run scripts/install_browser.sh")


def test_capture_screenshots_every_view_checked(tmp_path):
    """``make reports`` screenshots the Explorer on the run's own artifacts; every view has no overlapping
    or cut-off chart label and no raw column name in its visible text."""
    P = paths.resolve(tmp_path / "data", tmp_path / "reports")
    write_demo_artifacts(P, n_users=1500, seed=5, with_posts=True, with_media=True, lookalike_segment=2)
    checks: dict = {}
    shots = capture(P.data, P.reports, lookalike_size=100, checks=checks)
    assert [p.stem for p in shots] == list(VIEWS)
    assert all(p.parent == P.reports / "screenshots" and p.stat().st_size > 10_000 for p in shots)
    assert not list(P.exports.glob("*")), "taking screenshots must not export an audience"
    assert set(checks) == set(VIEWS)
    for view, c in checks.items():
        assert c["overlaps"] == [], (view, c["overlaps"])
        assert c["clipped"] == [], (view, c["clipped"])
        assert c["raw_names"] == [], (view, c["raw_names"])


def test_checks_catch_overlaps_and_raw_names(tmp_path):
    """The checks fail on a page that has the defects (so a passing check means something)."""
    from playwright.sync_api import sync_playwright

    html = ("<html><body><div class='view active'><div class='js-plotly-plot' id='c'><svg width='400' height='100'>"
            "<g class='xtick'><text x='10' y='50'>Social-first young adults</text></g>"
            "<g class='xtick'><text x='40' y='52'>Binge-streaming renters</text></g></svg></div>"
            "<div class='js-plotly-plot' id='m' style='width:300px;height:200px;overflow:hidden'>"
            "<svg width='300' height='200'><g class='g-ytitle'><text transform='rotate(-90 14 100)' x='14' y='100' "
            "text-anchor='middle'>more podcast listening time and monthly spend and more of the same</text></g>"
            "</svg></div>"
            "<p>time_on_social_media_min</p></div></body></html>")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        pg = browser.new_page()
        pg.set_content(html)
        assert overlapping_labels(pg), "two tick labels drawn on top of each other"
        assert clipped_labels(pg) == [("m", "more podcast listening time and monthly spend and more of the same")]
        assert raw_names_in_text(visible_text(pg), raw_names()) == ["time_on_social_media_min"]
        browser.close()


# --- a user-table run (Telco configuration) -----------------------------------------------------------
def test_marketer_path_on_a_user_table_run(tmp_path_factory):
    """open -> pick a segment -> compare -> lookalike -> export on the Telco sample under its configuration:
    no column name of the table on screen, no overlapping chart label."""
    from playwright.sync_api import sync_playwright

    P = paths.resolve(tmp_path_factory.mktemp("explorer_telco") / "data",
                      tmp_path_factory.mktemp("explorer_telco_reports"))
    table = write_table_run(P, "telco", n_users=1500, seed=1, lookalike_segment=0)
    app = create_app(P.data, P.reports, min_export_size=50, n_threads=1)
    server = make_server(app, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    names = raw_names("telco")
    assert "MonthlyCharges" in names and "customerID" in names
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            strict = browser.new_page(viewport={"width": 1400, "height": 950})  # the app's CSP enforced
            csp_errors: list[str] = []
            strict.on("console", lambda m: csp_errors.append(m.text) if "Content Security Policy" in m.text else None)
            strict.goto(f"http://127.0.0.1:{server.server_port}/")
            strict.wait_for_selector("body[data-ready='1']", timeout=TIMEOUT_MS)
            strict.wait_for_selector("#map .scatterlayer .point", timeout=TIMEOUT_MS)
            assert csp_errors == [], csp_errors
            strict.close()
            pg = browser.new_context(viewport={"width": 1400, "height": 950}, accept_downloads=True,
                                     bypass_csp=True).new_page()
            pg.set_default_timeout(TIMEOUT_MS)
            pg.goto(f"http://127.0.0.1:{server.server_port}/")
            pg.wait_for_selector("body[data-ready='1']")
            assert "Monthly charges" in pg.locator("#segments").inner_text()
            checks = {"open": (overlapping_labels(pg), raw_names_in_text(visible_text(pg), names))}
            assert clipped_labels(pg) == [], "the map's axis titles (the configuration's labels) fit the chart"
            pg.locator("#segments tbody tr").nth(1).click()
            pg.wait_for_function("document.getElementById('status').textContent.startsWith('Segment card')")
            pg.click("#tab-compare")
            pg.click("#cmp-run")
            pg.wait_for_selector("#cmp-table")
            checks["compare"] = (overlapping_labels(pg), raw_names_in_text(visible_text(pg), names))
            pg.click("#tab-affinity")
            pg.wait_for_selector("#heatmap .heatmaplayer")
            pg.select_option("#aff-view", "Contract")
            pg.wait_for_function("document.getElementById('status').textContent.includes('Contract')")
            checks["affinity"] = (overlapping_labels(pg), raw_names_in_text(visible_text(pg), names))
            pg.click("#tab-lookalike")
            pg.fill("#la-size", "100")
            pg.click("#la-run")
            pg.wait_for_selector("#la-lift")
            pg.wait_for_selector("#la-chart .barlayer")
            checks["lookalike"] = (overlapping_labels(pg), raw_names_in_text(visible_text(pg), names))
            pg.click("#tab-export")
            pg.select_option("#ex-kind", "lookalike")
            pg.fill("#ex-size", "100")
            pg.click("#ex-run")
            pg.wait_for_selector("#download-csv")
            with pg.expect_download() as info:
                pg.click("#download-csv")
            f = tmp_path_factory.mktemp("telco_dl") / info.value.suggested_filename
            info.value.save_as(f)
            browser.close()
    finally:
        server.shutdown()
        thread.join(10)
    got = pd.read_csv(f)
    assert len(got) == 100 and list(got.columns[:1]) == [export.HASHED_ID]
    assert not set(table["customerID"].astype(str)) & set(got[export.HASHED_ID].astype(str))
    for view, (overlaps, leaked) in checks.items():
        assert overlaps == [], (view, overlaps)
        assert leaked == [], (view, leaked)
