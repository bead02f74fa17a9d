"""The web service: a FastAPI app around one classifier (and optionally a lung segmenter).

Endpoints:

Every answer's body is a pydantic model of :mod:`covidcxr.service.schemas`.

* ``POST /predict`` — one X-ray (PNG, JPEG or DICOM; a multipart form field ``file`` or the raw
  body) → class probabilities, the predicted class, its (calibrated) confidence, and with
  ``?heatmap=true`` / ``?lungs=true`` a Grad-CAM overlay and a lung mask as base64 PNGs;
* ``GET /health`` — liveness and the model's name;
* ``GET /model`` — the model card;
* ``GET /`` — a page a clinician can drop an X-ray on (``static/``); ``/docs`` and
  ``/openapi.json``.

Limits (:class:`~covidcxr.service.settings.ServiceSettings`): uploads above ``max_upload_mb``
get 413 (checked on the declared length and while the body streams in), a body that arrives too
slowly 408, content that is not PNG, JPEG or DICOM 415 (sniffed from the bytes, never from a
name), an image that cannot be decoded 422, more requests than ``max_pending`` 503 and a
request that takes longer than ``timeout_s`` 504. Decoded images share a memory budget
(``decode_budget_mb``). Uploads are never written to disk and nothing about them is logged; of
a DICOM header only :data:`DICOM_ALLOWED_TAGS` are echoed back. Every answer carries a
Content-Security-Policy and the other headers of :mod:`covidcxr.service.security`, and only
the Host names of ``ServiceSettings.allowed_hosts_for`` are answered.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from covidcxr.inference.artifact import NOTICE
from covidcxr.service.analysis import (
    DICOM_ALLOWED_TAGS,
    DISPLAY_SIZE,
    UNFAMILIAR,
    Analyser,
    too_slow,
)
from covidcxr.service.schemas import Health, ModelInfo, Prediction
from covidcxr.service.security import SecurityHeaders, headers_for, policy_for_page
from covidcxr.service.server import LOGGER
from covidcxr.service.settings import ServiceSettings
from covidcxr.service.uploads import BodyPace, UploadError, read_upload

__all__ = [
    "DICOM_ALLOWED_TAGS",
    "DISPLAY_SIZE",
    "NOTICE",
    "UNFAMILIAR",
    "Analyser",
    "ServiceSettings",
    "create_app",
    "default_models",
    "serve",
]

log = logging.getLogger(LOGGER)

OPENAPI_UPLOAD = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


#: One item of FastAPI's 422 ``detail`` list (its ``ValidationError`` schema, inline).
VALIDATION_ERROR = {
    "type": "object",
    "properties": {
        "loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
        "msg": {"type": "string"},
        "type": {"type": "string"},
    },
    "required": ["loc", "msg", "type"],
}


def _refusal(description: str, detail: dict[str, Any] | None = None) -> dict[str, Any]:
    schema = {"type": "object", "properties": {"detail": detail or {"type": "string"}}}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


#: The refusals of ``POST /predict``, for the OpenAPI schema. Each has a sentence as its
#: ``detail``, but 422 has FastAPI's list of invalid parameters too.
PREDICT_REFUSALS: dict[int | str, dict[str, Any]] = {
    400: _refusal("Empty file, malformed form or no field named file."),
    408: _refusal("The upload arrived too slowly."),
    413: _refusal("The upload is larger than max_upload_mb."),
    415: _refusal("Not a PNG, JPEG or DICOM file."),
    422: _refusal(
        "An image that cannot be decoded (a sentence), or invalid query parameters (a list).",
        {
            "anyOf": [
                {"type": "string"},
                {"type": "array", "items": VALIDATION_ERROR},
            ]
        },
    ),
    503: _refusal("max_pending requests are already in progress; retry in a moment."),
    504: _refusal("The analysis took longer than the time limit."),
}


def create_app(
    model: Any,
    seg_model: Any = None,
    settings: ServiceSettings | None = None,
    *,
    host: str | None = None,
) -> FastAPI:
    """The FastAPI app serving ``model`` (a saved classifier's path or a loaded
    :class:`~covidcxr.inference.artifact.Classifier`), with lung outlines from ``seg_model`` (or the
    segmenter saved with a lung-focused classifier). ``host``: the address it will listen on,
    which decides the Host names it answers to (``ServiceSettings.allowed_hosts_for``)."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from starlette.middleware.trustedhost import TrustedHostMiddleware
    from starlette.staticfiles import StaticFiles

    from covidcxr import __version__

    settings = settings or ServiceSettings()
    analyser = Analyser(model, seg_model, settings)
    analyser.warm_up()
    pending = threading.BoundedSemaphore(settings.max_pending)
    pace = BodyPace(settings.body_timeout_s, settings.min_upload_kib_s * 1024)
    page = resources.files("covidcxr.service").joinpath("static/index.html").read_text("utf-8")
    app = FastAPI(
        title="covidcxr",
        version=__version__,
        description=f"Chest X-ray classification with explanations. {NOTICE}",
        docs_url=None,  # served below, with a Content-Security-Policy that fits the page
        redoc_url=None,
    )
    docs = get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{app.title} - Swagger UI")
    app.state.analyser = analyser
    app.state.settings = settings
    app.state.pending = pending
    app.add_middleware(
        TrustedHostMiddleware, allowed_hosts=settings.allowed_hosts_for(host), www_redirect=False
    )
    # Added last, so outermost: the Host check's refusals carry the headers too.
    app.add_middleware(SecurityHeaders, policies={"/docs": policy_for_page(docs.body.decode())})
    app.mount("/static", StaticFiles(packages=[("covidcxr.service", "static")]), name="static")

    @app.exception_handler(UploadError)
    async def refuse(request: Request, error: UploadError) -> JSONResponse:
        headers = {"Connection": "close"} if error.close else None
        return JSONResponse({"detail": error.detail}, status_code=error.status, headers=headers)

    @app.exception_handler(Exception)
    async def crash(request: Request, error: Exception) -> JSONResponse:
        # Starlette sends this from outside every middleware: the headers are set here. The
        # traceback is still logged (the error is raised again after this answer).
        return JSONResponse(
            {"detail": "internal error: the service logged it; please report it"},
            status_code=500,
            headers=headers_for(),
        )

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    async def api_docs() -> HTMLResponse:
        return docs

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return Response(status_code=204)  # browsers ask; an empty answer keeps logs quiet

    @app.get("/health", response_model=Health)
    async def health() -> Health:
        """Liveness: the service is up and which model it serves."""
        card = analyser.classifier.card
        return Health(status="ok", model=card.name or card.model, version=__version__)

    @app.get("/model", response_model=ModelInfo)
    async def model_card() -> BaseModel:
        """The model card: classes, input size, preprocessing, temperature, test metrics."""
        return analyser.card()

    @app.post(
        "/predict",
        response_model=Prediction,
        openapi_extra=OPENAPI_UPLOAD,
        responses=PREDICT_REFUSALS,
    )
    async def predict(
        request: Request,
        heatmap: bool = Query(
            False,
            description="Add the Grad-CAM overlay (overlay_png) and its layers: the plain film "
            "(film_png), the heatmap alone with transparency (heatmap_png) and, with lungs, "
            "the lung outline alone (lung_outline_png).",
        ),
        lungs: bool = Query(
            False, description="Add the lung mask and outline (needs a segmenter)."
        ),
    ) -> Any:
        """Classify one chest X-ray (PNG, JPEG or DICOM) sent as form field ``file`` or as the
        raw body."""
        deadline = time.monotonic() + settings.timeout_s
        try:
            async with asyncio.timeout(settings.timeout_s):
                data = await read_upload(
                    request.stream(),
                    request.headers.get("content-type", "application/octet-stream"),
                    request.headers.get("content-length"),
                    settings.max_upload_bytes,
                    pace=pace,
                )
        except TimeoutError:
            raise UploadError(
                408,
                f"the upload did not complete within {settings.timeout_s:g} s; check the "
                "network connection and send the file again",
                close=True,
            ) from None
        except ClientDisconnect:
            log.info("a client closed its connection before its upload was complete")
            return Response(status_code=400)  # nobody is left to read it
        if not data:
            raise UploadError(400, "the file is empty (0 bytes); choose the X-ray again")
        # A slot is taken only now that the whole body is here: a slow upload holds its
        # connection, never one of the max_pending slots.
        if not pending.acquire(blocking=False):
            raise UploadError(
                503, f"the service is busy ({settings.max_pending} requests in progress); retry "
                "in a moment",
            )  # fmt: skip
        work = None
        try:
            # The slot is given back by the worker thread when it stops, so abandoned work
            # still counts against max_pending until the deadline ends it.
            work = asyncio.ensure_future(
                run_in_threadpool(_release_after, pending, analyser.analyse, data, heatmap, lungs,
                                  deadline)
            )  # fmt: skip
            # Its outcome is read here, or dropped quietly once the request has had its 504.
            work.add_done_callback(lambda done: done.cancelled() or done.exception())
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                return await asyncio.shield(work)
        except TimeoutError:
            raise too_slow(settings.timeout_s) from None
        finally:
            if work is None:
                pending.release()

    return app


def serve(
    model: str | Path | None = None,
    seg_model: str | Path | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    settings: ServiceSettings | None = None,
    announce: Callable[[str | Path, str | Path | None], None] | None = None,
) -> None:
    """Run the service with uvicorn until interrupted; with no ``model``, the best shipped
    classifier with the shipped lung model (:mod:`covidcxr.zoo`). uvicorn runs with the limits
    of :func:`~covidcxr.service.server.server_config`.

    Everything that can fail is done first: the models are loaded and the address is bound
    (``OSError`` when it is taken), and only then is ``announce(model, seg_model)`` called, so
    a "serving..." line is never printed for a service that does not start.

    Unlike training (``covidcxr.perf.tune_allocator``, which keeps a process's peak
    memory for its whole life), the service has large buffers unmapped as soon as they are
    freed (:func:`~covidcxr.service.budget.unmap_large_buffers`): its peaks are bursts of
    large images."""
    import uvicorn

    from covidcxr.service.budget import unmap_large_buffers
    from covidcxr.service.server import keep_uploads_out_of_logs, listen, server_config

    keep_uploads_out_of_logs()
    unmap_large_buffers()
    settings = settings or ServiceSettings()
    model, seg_model = default_models(model, seg_model)
    app = create_app(model, seg_model, settings, host=host)
    config = server_config(app, settings, host, port)
    listening = listen(host, port)  # before the announcement: a taken port fails here
    if announce is not None:
        announce(model, seg_model)
    uvicorn.Server(config).run(sockets=[listening])


def default_models(
    model: str | Path | None, seg_model: str | Path | None
) -> tuple[str | Path, str | Path | None]:
    """``(model, seg_model)`` with the shipped defaults filled in when ``model`` is None."""
    from covidcxr import zoo

    if model is not None:
        return model, seg_model
    classifier = zoo.default_model("classification")
    if classifier is None:
        raise ValueError("no pretrained classifier ships with this installation; name a model")
    return classifier, seg_model if seg_model is not None else zoo.default_model("segmentation")


def _release_after(slot: threading.BoundedSemaphore, function: Any, *args: Any) -> Any:
    try:
        return function(*args)
    finally:
        slot.release()
