"""The report page from sections of plain data: every text escaped, figures embedded."""

from __future__ import annotations

import base64
import re

from covidcxr.analysis.report.blocks import Bullets, Figure, Gallery, Paragraph, Section, Table
from covidcxr.analysis.report.render import render_report

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg=="
)


def test_every_text_is_escaped_and_every_block_is_drawn() -> None:
    sections = [
        Section("data", "Dataset <1>", "finding <script>alert(1)</script>", [
            Table(["class", "images"], [["<b>COVID</b>", 3]]),
            Paragraph("p & q"),
            Bullets(["one <i>", "two"]),
        ]),
        Section("gallery", "Gallery", "two films", [
            Figure(PNG, "film <1>"), Gallery([Figure(PNG, "a"), Figure(PNG, "b")]),
        ]),
    ]  # fmt: skip
    page = render_report("covidcxr report: <x>", sections, ["trained on phantoms <!>"],
                         {"data": "/data/<set>", "commit": "abc"})  # fmt: skip
    assert "<script>" not in page and "<b>COVID" not in page and "<i>" not in page
    assert "&lt;script&gt;" in page and "&lt;b&gt;COVID&lt;/b&gt;" in page and "p &amp; q" in page
    assert page.count("<section id=") == 2 and page.count('<a href="#') == 2
    assert page.count("<td>") == 2 and page.count("<li>") == 2
    assert page.count("data:image/png;base64,") == 3 and '<div class="gallery">' in page
    assert "trained on phantoms &lt;!&gt;" in page and "/data/&lt;set&gt;" in page
    assert "not a diagnostic device" in page
    assert re.search(r"<style>[^<]*\.finding\{", page)  # the styles are inlined
