"""``make reports`` screenshots the Explorer on the run's own artifacts (helpers.explorer.screenshots).

A module of its own: Playwright's sync API cannot start while another module's browser is still open.
"""

from __future__ import annotations

import pytest

from helpers import paths
from helpers.explorer.demo import write_demo_artifacts
from helpers.explorer.screenshots import CHROMIUM, VIEWS, capture

pytestmark = pytest.mark.browser


def test_capture_screenshots_every_view_for_make_reports(tmp_path):
    """``make reports`` screenshots the Explorer on the run's own artifacts (helpers.explorer.screenshots)."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent: run scripts/install_browser.sh")
    P = paths.resolve(tmp_path / "data", tmp_path / "reports")
    write_demo_artifacts(P, n_users=1500, seed=5)
    shots = capture(P.data, P.reports, lookalike_size=100)
    assert [p.stem for p in shots] == list(VIEWS)
    assert all(p.parent == P.reports / "screenshots" and p.stat().st_size > 10_000 for p in shots)
    assert not list(P.exports.glob("*")), "taking screenshots must not export an audience"
