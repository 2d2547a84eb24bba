"""The portal's front-end libraries are vendored from the npm registry at the version the
lockfile pins, with their license, and no page loads anything from elsewhere."""

from __future__ import annotations

import re

from scripts.vendor_js import FILES, VENDOR, pinned
from tests.portal.conftest import ROOT

TEMPLATES = ROOT / "portal" / "templates"


def test_chart_js_is_the_pinned_version_with_its_license() -> None:
    version = pinned("chart.js")
    head = (VENDOR / "chart.umd.min.js").read_text(encoding="utf-8")[:200]
    assert f"Chart.js v{version}" in head
    assert "MIT" in (VENDOR / "chart.js.LICENSE.md").read_text(encoding="utf-8")
    assert {name for files in FILES.values() for _, name in files} == {
        p.name for p in VENDOR.iterdir()
    }


def test_no_page_loads_a_script_or_style_from_elsewhere() -> None:
    for template in TEMPLATES.glob("*.html"):
        text = template.read_text(encoding="utf-8")
        assert not re.search(r"""(src|href)=["'](https?:)?//""", text), template.name
        assert "<script>" not in text and "style=" not in text, template.name  # CSP: none inline
