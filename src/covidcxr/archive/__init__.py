"""Archive-scale prediction on a Ray cluster: ``covidcxr predict --engine ray``.

A front door beside :mod:`covidcxr.service`, built on :mod:`covidcxr.inference` (the same
decoding, rows and model identity as the local engine, :func:`covidcxr.inference.predict_files`)
and never on the training engine. Ray is an optional extra (``pip install 'covidcxr[ray]'``)
imported only inside the functions that need it, so importing this package stays light.

Names are imported lazily (``from covidcxr.archive import predict_on_ray``).
"""

from __future__ import annotations

from covidcxr._lazy import lazy_exports

_EXPORTS = {
    "predict_on_ray": "covidcxr.archive.ray_engine",
    "ArchiveOutput": "covidcxr.archive.store",
    "RayMissingError": "covidcxr.archive.ray_engine",
    "iter_sources": "covidcxr.archive.sources",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
