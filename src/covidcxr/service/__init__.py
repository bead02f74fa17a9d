"""The web service: ``covidcxr serve`` (FastAPI + uvicorn) and its page.

Names are imported lazily: importing the package loads neither FastAPI nor torch.
"""

from __future__ import annotations

from covidcxr._lazy import lazy_exports

_EXPORTS = {
    "create_app": "covidcxr.service.app",
    "serve": "covidcxr.service.app",
    "ServiceSettings": "covidcxr.service.app",
    "NOTICE": "covidcxr.service.app",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
