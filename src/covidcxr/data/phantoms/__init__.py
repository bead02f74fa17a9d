"""Synthetic chest X-ray phantoms, the embedded default dataset: :mod:`.anatomy` draws one
film and its lung mask (:func:`render_phantom`), :mod:`.writer` writes a dataset in the
database's layout (:func:`write_phantoms`)."""

from covidcxr.data.phantoms.anatomy import render_phantom
from covidcxr.data.phantoms.writer import FOLDER_NAMES, PhantomSummary, write_phantoms

__all__ = ["FOLDER_NAMES", "PhantomSummary", "render_phantom", "write_phantoms"]
