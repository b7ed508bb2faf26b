"""End-to-end test of the Explorer in headless Chromium (Debian ``chromium``, driven by Playwright).

The app runs in a thread on a free loopback port over stand-in artifacts built from planted truth; the
test reads the first screen (sortable segment table), checks that the segment map's axis titles fit the chart,
clicks a segment bubble, reads its card, compares two segments, switches the heatmap's attribute family, shows
the lookalike stage's audience, compares it with its seed segment, uploads an id list, downloads an export,
and saves a screenshot of each view into ``<reports>/screenshots/<view>.png`` (reports =
``helpers.paths.resolve().reports``, i.e. ``$AUDIENCE_REPORTS_DIR`` under ``make test``), which
``reports/index.html`` links. Skips (with the reason) only when ``/usr/bin/chromium`` is absent:
``scripts/install_browser.sh`` installs it.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pandas as pd
import pytest

from helpers import export, paths
from helpers.explorer import create_app
from helpers.explorer.app import make_server
from helpers.explorer.demo import write_demo_artifacts
from helpers.explorer.screenshots import clipped_labels, overlapping_labels, raw_names, raw_names_in_text, visible_text

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
N_USERS = 2000
TIMEOUT_MS = 90_000  # a media plan on a loaded 2-core machine can take a while


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(base URL, run paths, panel) of an Explorer served from a thread on 127.0.0.1:<free port>."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent: run scripts/install_browser.sh "
                    "(apt-get install chromium chromium-driver) to run the end-to-end browser test")
    P = paths.resolve(tmp_path_factory.mktemp("explorer_e2e") / "data", paths.resolve().reports)
    panel = write_demo_artifacts(P, n_users=N_USERS, seed=3, with_media=True, with_posts=True, lookalike_segment=2)
    app = create_app(P.data, P.reports, min_export_size=50, n_threads=1)
    server = make_server(app, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", P, panel
    finally:
        server.shutdown()
        thread.join(10)


@pytest.fixture(scope="module")
def page(served):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        # bypass_csp: Playwright's wait_for_function evaluates strings (the app's own CSP forbids eval);
        # the page itself is checked under its CSP in test_marketer_path_on_a_user_table_run
        context = browser.new_context(viewport={"width": 1400, "height": 950}, accept_downloads=True,
                                      bypass_csp=True)
        pg = context.new_page()
        pg.set_default_timeout(TIMEOUT_MS)
        external: list[str] = []
        pg.on("request", lambda r: None if r.url.startswith(served[0]) or r.url.startswith("data:")
              else external.append(r.url))
        pg.goto(served[0] + "/")
        pg.wait_for_selector("body[data-ready='1']")
        pg.external_requests = external
        yield pg
        browser.close()


def _shot(pg, reports: Path, view: str) -> Path:
    out = reports / "screenshots" / f"{view}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(out), full_page=True)
    assert out.stat().st_size > 10_000, f"screenshot {out} looks empty"
    return out


def test_first_screen_answers_who_how_many_worth_what(served, page):
    url, P, panel = served
    rows = page.locator("#segments tbody tr")
    k = len(panel.params["segment_names"])
    assert rows.count() == k
    header = page.locator("#overview").inner_text()
    assert f"{N_USERS:,} customers" in header and "2026-06-30" in header and "/" not in header.replace("N/A", "")
    assert page.locator("#card-title").inner_text(), "the largest segment's card is open without a click"
    first = rows.nth(0).inner_text()
    assert "%" in first and "$" in first and "\u2013" in first, first  # share, value, intervals
    page.click("#segments th[data-key='value']")
    vals = page.locator("#segments tbody tr td:nth-child(4)").all_inner_texts()
    money = [float(v.split()[0].lstrip("$").replace(",", "")) for v in vals]
    assert money == sorted(money, reverse=True), money
    assert overlapping_labels(page) == []
    assert raw_names_in_text(visible_text(page), raw_names()) == []


def test_segment_map_and_persona_card(served, page):
    url, P, panel = served
    bubbles = page.locator("#map .scatterlayer .point")
    k = len(panel.params["segment_names"])
    assert bubbles.count() == k, "one bubble per segment"
    chart = page.locator("#map").bounding_box()
    for sel in ("#map .g-ytitle", "#map .g-xtitle"):  # the axis titles are drawn whole inside the chart
        t = page.locator(sel).bounding_box()
        assert t is not None and t["height"] > 0, sel
        assert chart["y"] - 1 <= t["y"] and t["y"] + t["height"] <= chart["y"] + chart["height"] + 1, (sel, t, chart)
        assert chart["x"] - 1 <= t["x"] and t["x"] + t["width"] <= chart["x"] + chart["width"] + 1, (sel, t, chart)
    ytitle = page.locator("#map .g-ytitle").text_content()
    assert "more" in ytitle and "\u2026" not in ytitle
    assert overlapping_labels(page) == [] and clipped_labels(page) == []
    _shot(page, P.reports, "segment_map")
    target = 4  # low-engagement seniors: a bubble no other overlaps
    box = bubbles.nth(target).bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_function(f"document.getElementById('card').dataset.segment === '{target}'")
    name = panel.params["segment_names"][target]
    assert page.locator("#card-title").inner_text() == name
    n = int((panel.truth["true_segment"] == target).sum())
    assert f"{n:,}" in page.locator("#card").inner_text(), "the card shows the segment's size"
    assert "leaves in the next 90 days" in page.locator("#card-churn").inner_text()
    _shot(page, P.reports, "persona_card")
    assert page.external_requests == [], f"the page loaded from the network: {page.external_requests}"


def test_affinity_heatmap_switch_family(served, page):
    url, P, _ = served
    page.click("#tab-affinity")
    page.wait_for_selector("#heatmap .hm, #heatmap .heatmaplayer")
    assert "Behaviour" in page.locator("#status").inner_text()
    assert "concentrate spend here" in page.locator("#aff-actions").inner_text()
    page.select_option("#aff-view", "traveler_type")
    page.wait_for_function("document.getElementById('status').textContent.includes('Traveler type')")
    ticks = page.locator("#heatmap .ytick text").all_text_contents()
    assert "business" in ticks and "luxury" in ticks, ticks
    assert overlapping_labels(page) == []
    assert raw_names_in_text(visible_text(page), raw_names()) == []
    _shot(page, P.reports, "affinity_heatmap")


def test_lookalike(served, page):
    """The lookalike stage's audience (seeded with segment 2) and the lift its held-out test measured."""
    url, P, panel = served
    page.click("#tab-lookalike")
    page.fill("#la-size", "150")
    page.click("#la-run")
    page.wait_for_selector("#la-lift")
    assert page.locator("#la-out-size").inner_text() == "150"
    assert panel.params["segment_names"][2] in page.locator("#la-title").inner_text()
    lift = float(page.locator("#la-lift").inner_text().rstrip("x"))
    stage = json.loads(P.metrics.read_text())["08_lookalike_activation"]
    assert lift == pytest.approx(stage["lookalike_outcome_lift_top5"], abs=0.006), "the stage's own lift"
    assert lift > 1.5, f"held-out lift {lift} is not better than a random draw"
    page.wait_for_selector("#la-chart .barlayer")
    assert overlapping_labels(page) == []
    _shot(page, P.reports, "lookalike")
    # compare the lookalikes with their seed segment
    page.click("#tab-compare")
    page.select_option("#cmp-a", "lookalike:150")
    page.select_option("#cmp-b", "segment:2")
    page.click("#cmp-run")
    page.wait_for_function("document.getElementById('status').textContent.startsWith('Compared 150 lookalikes')")
    assert "150" in page.locator("#cmp-table").inner_text()


def test_compare_two_segments(served, page):
    url, P, panel = served
    page.click("#tab-compare")
    page.wait_for_selector("#sim-chart .heatmaplayer")
    page.select_option("#cmp-a", "segment:0")
    page.select_option("#cmp-b", "segment:5")
    page.click("#cmp-run")
    first = panel.params["segment_names"][0]
    page.wait_for_function(f"document.getElementById('status').textContent.startsWith('Compared {first}')")
    text = page.locator("#cmp-diffs").inner_text()
    assert "Conversions" in text, text  # planted: power shoppers buy about 8 times as often
    assert overlapping_labels(page) == []
    assert raw_names_in_text(visible_text(page), raw_names()) == []
    _shot(page, P.reports, "compare")


def test_questions_then_plan(served, page):
    """Questions: customers talking about a topic -> their profile; Plan: that audience and a budget ->
    the allocation with reach and conversions intervals."""
    url, P, panel = served
    page.click("#tab-questions")
    page.wait_for_selector("#q-topic option[value='luxury_watch']", state="attached")
    page.select_option("#q-topic", "luxury_watch")
    page.click("#q-run")
    page.wait_for_selector("#q-title")
    assert "talking about luxury watch" in page.locator("#q-title").inner_text()
    assert raw_names_in_text(visible_text(page), raw_names()) == []
    _shot(page, P.reports, "questions")
    page.click("#tab-plan")
    ref = page.locator("#plan-aud option", has_text="talking about luxury watch").first.get_attribute("value")
    page.select_option("#plan-aud", ref)
    page.fill("#plan-budget", "1500")
    page.click("#plan-run")
    page.wait_for_selector("#plan-table")
    text = page.locator("#plan-table").inner_text()
    assert "Total" in text and "$1,500" in text, text
    assert "\u2013" in text, "reach and conversions carry their intervals"
    _shot(page, P.reports, "plan")


def test_export_download(served, page, tmp_path):
    url, P, panel = served
    page.click("#tab-export")
    # an uploaded list is an audience too
    members = panel.data.loc[panel.truth["true_segment"] == 3, "user_id"].astype(str).tolist()[:120]
    page.fill("#up-ids", "\n".join(members))
    page.fill("#up-name", "CRM families")
    page.click("#up-run")
    page.wait_for_selector("#up-title")
    assert "120 customers found" in page.locator("#up-title").inner_text()
    page.select_option("#ex-kind", "segment")
    page.select_option("#ex-segment", "1")
    page.click("#ex-run")
    page.wait_for_selector("#download-csv")
    with page.expect_download() as info:
        page.click("#download-csv")
    f = tmp_path / info.value.suggested_filename
    info.value.save_as(f)
    got = pd.read_csv(f) if f.suffix == ".csv" else pd.read_parquet(f)
    n = int((panel.truth["true_segment"] == 1).sum())
    assert len(got) == n, "the download holds every member of the segment"
    assert "segment_name" not in got or not got["segment_name"].astype(str).str.contains("renters").any(), \
        "a persona name built from 3rd-party traits does not travel into the export"
    assert list(got.columns[:1]) == [export.HASHED_ID], "identifiers are hashed with the keyed hash"
    raw_ids = set(panel.data["user_id"].astype(str))
    assert not raw_ids & set(got[export.HASHED_ID].astype(str)), "raw user ids leaked into the export"
    page.click("#ex-result summary")
    manifest = json.loads(page.locator("#ex-result pre").inner_text())
    assert manifest["size"] == n and manifest["min_size"] == 50, manifest
    _shot(page, P.reports, "export")


