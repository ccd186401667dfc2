"""The economics page in Debian's Chromium: the chart draws from our own Chart.js, and
the screenshot joins docs/screenshots/."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.billing.test_economics import january  # noqa: F401  (the fixture)

pytestmark = pytest.mark.browser
DOCS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def test_economics_page_draws_its_chart(january, live_server, olga, page, shoot):  # noqa: F811
    olga.set_password("pw-for-the-browser-1")
    olga.save()
    page.goto(f"{live_server.url}/admin/login/?next=/admin/billing/usagerecord/economics/%3Fmonth%3D2026-01")
    page.fill("#id_username", "olga")
    page.fill("#id_password", "pw-for-the-browser-1")
    page.click("input[type=submit]")
    page.wait_for_selector("#economics-chart[data-rendered='1']")
    assert page.evaluate("typeof Chart") == "function"
    # The chart holds the table's numbers: one bar per GPU and series.
    drawn = page.evaluate("Chart.getChart('economics-chart').data.datasets.map(d => d.data)")
    assert drawn[0] == [2.98, 0.0]  # revenue
    assert drawn[3] == [-98.02, -100.0]  # margin
    assert "$2.98" in page.inner_text("#economics-gpus")
    DOCS.mkdir(parents=True, exist_ok=True)
    shutil.copy(shoot(page, "15-economics"), DOCS / "15-economics.png")
