"""The report as one self-contained HTML page: :func:`render_report` fills ``report.html.j2``
(styles from ``report.css`` inlined, figures as data URLs) with autoescaping, so no text from a
run or a dataset is ever read as HTML."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from importlib.resources import files
from typing import Any

from covidcxr.analysis.report.blocks import Bullets, Figure, Gallery, Paragraph, Section, Table

TEMPLATE = "report.html.j2"
STYLES = "report.css"


def render_report(
    title: str,
    sections: Sequence[Section],
    warnings: Sequence[str] = (),
    provenance: Mapping[str, Any] | None = None,
) -> str:
    """The HTML page: ``title``, the model's ``warnings``, the research-use notice, the
    ``provenance`` line, a table of contents and every section."""
    from jinja2 import Environment, select_autoescape

    here = files("covidcxr.analysis.report")
    environment = Environment(
        autoescape=select_autoescape(default=True), keep_trailing_newline=True
    )
    environment.filters["data_url"] = _data_url
    environment.tests.update(
        table=lambda block: isinstance(block, Table),
        figure=lambda block: isinstance(block, Figure),
        gallery=lambda block: isinstance(block, Gallery),
        paragraph=lambda block: isinstance(block, Paragraph),
        bullets=lambda block: isinstance(block, Bullets),
    )
    template = environment.from_string(here.joinpath(TEMPLATE).read_text(encoding="utf-8"))
    return template.render(
        title=title,
        styles=here.joinpath(STYLES).read_text(encoding="utf-8"),
        sections=sections,
        warnings=list(warnings),
        provenance=dict(provenance or {}),
    )


def _data_url(figure: Figure) -> str:
    return "data:image/png;base64," + base64.b64encode(figure.png).decode("ascii")
