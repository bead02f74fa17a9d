"""The report of a training run: :mod:`.gather` reads the run, the dataset and the model into
sections of findings, tables and figures (:mod:`.blocks`, plain data); :mod:`.render` writes
them as one self-contained HTML page from a Jinja2 template."""

from covidcxr.analysis.report.blocks import Section
from covidcxr.analysis.report.gather import SECTIONS, ReportResult, build_report

__all__ = ["SECTIONS", "ReportResult", "Section", "build_report"]
