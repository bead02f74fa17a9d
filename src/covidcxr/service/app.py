"""The web service: a FastAPI app around one classifier (and optionally a lung segmenter).

Endpoints:

* ``POST /predict`` — one X-ray (PNG, JPEG or DICOM; a multipart form field ``file`` or the raw
  body) → class probabilities, the predicted class, its (calibrated) confidence, and with
  ``?heatmap=true`` / ``?lungs=true`` a Grad-CAM overlay and a lung mask as base64 PNGs;
* ``GET /health`` — liveness and the model's name;
* ``GET /model`` — the model card;
* ``GET /`` — a page a clinician can drop an X-ray on; ``/docs`` and ``/openapi.json``.

Limits: uploads above ``max_upload_mb`` get 413 (checked on the declared length and while the
body streams in), content that is not PNG, JPEG or DICOM gets 415 (sniffed from the bytes,
never from a name), an image that cannot be decoded gets 422, and a request that takes longer
than ``timeout_s`` gets 504. Uploads are never written to disk and nothing about them is
logged; of a DICOM header only :data:`DICOM_ALLOWED_TAGS` are echoed back.
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
import threading
import time
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from covidcxr.artifact import NOTICE
from covidcxr.service.uploads import UploadError, read_upload

UNFAMILIAR = (
    "This film is unlike the ones the model was trained on (out-of-distribution check): its "
    "answer is likely meaningless. Is it a frontal chest X-ray?"
)

#: DICOM attributes the service may return: none of them identifies a patient.
DICOM_ALLOWED_TAGS = (
    "Modality",
    "PhotometricInterpretation",
    "ViewPosition",
    "Rows",
    "Columns",
    "BitsStored",
)

#: Longest side of the overlay PNGs returned (the X-ray itself may be 4,000 px).
DISPLAY_SIZE = 768

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


@dataclass(frozen=True)
class ServiceSettings:
    """Limits of the service.

    ``max_upload_mb``: largest accepted file (413). ``timeout_s``: longest a request may take,
    upload included (504); work past it is abandoned at the next stage, not left running.
    ``max_pixels``: largest image decoded (width × height; 422), well above the ~15 MP of the
    largest chest radiographs and low enough that a crafted small file cannot claim gigabytes.
    ``max_pending``: requests analysed or waiting at once; more get 503 at once rather than
    queueing without bound.
    """

    max_upload_mb: float = 32.0
    timeout_s: float = 60.0
    max_pixels: int = 6000 * 6000
    max_pending: int = 32

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)


class Analyser:
    """The models behind the service and the work of one request. The networks are used by
    one request at a time (a lock); decoding and encoding run in parallel."""

    def __init__(self, model: Any, seg_model: Any = None, max_pixels: int = 6000 * 6000) -> None:
        from covidcxr.artifact import Classifier, Segmenter, load_model

        loaded = model if isinstance(model, Classifier) else load_model(model)
        if not isinstance(loaded, Classifier):
            raise ValueError(f"{model}: a lung segmentation model; serve a classifier")
        self.classifier = loaded
        self.segmenter: Segmenter | None = None
        if seg_model is not None:
            segmenter = seg_model if isinstance(seg_model, Segmenter) else load_model(seg_model)
            if not isinstance(segmenter, Segmenter):
                raise ValueError(f"{seg_model}: not a lung segmentation model (--seg)")
            self.segmenter = segmenter
            if loaded.lung_mode != "none":
                loaded.use_segmenter(segmenter)
        elif loaded.lung_mode != "none":
            self.segmenter = loaded.segmenter  # the one saved with it (or a clear error)
        self.max_pixels = max_pixels
        self.lock = threading.Lock()
        # Decoding runs beside the networks, but no more of it than there are cores: a burst
        # of large images must not hold a decoded copy each in memory.
        self.decoding = threading.BoundedSemaphore(max(1, len(os.sched_getaffinity(0))))

    def warm_up(self) -> None:
        """One pass of everything a request may need (Grad-CAM's import, first-call setup),
        so that the first clinician does not wait for it."""
        from covidcxr.explain import saliency_maps

        image = np.linspace(0.0, 1.0, 64 * 64, dtype=np.float32).reshape(64, 64)
        with self.lock:
            saliency_maps(self.classifier, [image])
            if self.segmenter is not None:
                self.segmenter.predict_masks([image])

    def card(self) -> dict[str, Any]:
        card = asdict(self.classifier.card)
        card["segmenter"] = (
            None
            if self.segmenter is None
            else self.segmenter.card.name or (self.segmenter.card.model)
        )
        card["warnings"] = self.classifier.card.warnings()
        return card

    def analyse(
        self, data: bytes, heatmap: bool, lungs: bool, deadline: float | None = None
    ) -> dict[str, Any]:
        """Everything ``POST /predict`` returns for one file's bytes. ``deadline`` is a
        ``time.monotonic()`` after which the work stops at the next stage (UploadError 504)."""
        from covidcxr.io import ImageReadError, load_image_bytes, sniff_format

        started = time.perf_counter()
        kind = sniff_format(data)
        if kind is None:
            raise UploadError(
                415,
                "this is not a PNG, JPEG or DICOM file; send a chest X-ray in one of these formats",
            )
        if not self.decoding.acquire(timeout=_remaining(deadline)):
            raise _too_slow()
        try:
            loaded = load_image_bytes(data, "the upload", max_pixels=self.max_pixels)
        except ImageReadError as error:
            hint = f" {error.hint}" if error.hint else ""
            # pydicom's own messages may quote header bytes: for DICOM only our summary.
            reason = error.reason.split(" (")[0] if kind == "DICOM" else error.reason
            raise UploadError(422, f"the {kind} file cannot be read: {reason}.{hint}") from None
        except Exception as error:  # a decoder's own failure is still a bad file, not a 500
            raise UploadError(
                422, f"the {kind} file cannot be decoded ({type(error).__name__})"
            ) from None
        finally:
            self.decoding.release()
        image = loaded.image
        card = self.classifier.card
        mask = None
        saliency = None
        # The networks run under the lock (Grad-CAM hooks into them, and one forward pass at a
        # time keeps all cores for it); resizing a plain model's input happens outside it.
        prepared = None
        if self.classifier.lung_mode == "none":
            prepared = self.classifier.prepare([image])
        if not self.lock.acquire(timeout=_remaining(deadline)):
            raise _too_slow()
        try:
            if prepared is None:  # lung focusing runs the segmenter: inside the lock
                prepared = self.classifier.prepare([image])
            analysis = self.classifier.analyse_prepared(prepared)
            if heatmap:
                from covidcxr.explain import saliency_maps

                if _expired(deadline):
                    raise _too_slow()
                maps, _ = saliency_maps(self.classifier, [image])
                saliency = maps[0]
            if lungs and self.segmenter is not None:
                if _expired(deadline):
                    raise _too_slow()
                mask = self.segmenter.predict_masks([image])[0]
        finally:
            self.lock.release()
        if _expired(deadline):
            raise _too_slow()
        row = analysis.probabilities[0]
        best = int(np.argmax(row))
        unfamiliar = None if analysis.unfamiliar is None else bool(analysis.unfamiliar[0])
        warnings = card.warnings() + ([UNFAMILIAR] if unfamiliar else [])
        result: dict[str, Any] = {
            "model": card.name or card.model,
            "predicted": card.class_names[best],
            "confidence": float(row[best]),
            "probabilities": {
                name: float(p) for name, p in zip(card.class_names, row, strict=True)
            },
            "calibrated": card.temperature != 1.0,
            "temperature": card.temperature,
            "image": {
                "format": loaded.info.format,
                "width": loaded.info.width,
                "height": loaded.info.height,
            },
            "dicom": _dicom_summary(data) if kind == "DICOM" else None,
            "overlay_png": None,
            "lung_mask_png": None,
            "lung_fraction": None,
            "lungs_available": self.segmenter is not None,
            "unfamiliar": unfamiliar,
            "ood_score": None if unfamiliar is None else float(analysis.ood_scores[0]),
            "ood_threshold": analysis.ood_threshold,
            "warnings": warnings,
            "notice": NOTICE,
        }
        if saliency is not None or mask is not None:
            result["overlay_png"] = _overlay_png(image, saliency, mask)
        if mask is not None:
            result["lung_mask_png"] = _png_base64((mask * 255).astype(np.uint8))
        if saliency is not None and mask is not None:
            from covidcxr.explain import lung_saliency_fraction

            result["lung_fraction"] = lung_saliency_fraction(saliency, mask)
        result["elapsed_ms"] = round(1000 * (time.perf_counter() - started), 1)
        return result


def create_app(
    model: Any,
    seg_model: Any = None,
    settings: ServiceSettings | None = None,
) -> FastAPI:
    """The FastAPI app serving ``model`` (a saved classifier's path or a loaded
    :class:`~covidcxr.artifact.Classifier`), with lung outlines from ``seg_model`` (or the
    segmenter saved with a lung-focused classifier)."""
    from covidcxr import __version__

    settings = settings or ServiceSettings()
    analyser = Analyser(model, seg_model, settings.max_pixels)
    analyser.warm_up()
    pending = threading.BoundedSemaphore(settings.max_pending)
    page = resources.files("covidcxr.service").joinpath("static/index.html").read_text("utf-8")
    app = FastAPI(
        title="covidcxr",
        version=__version__,
        description=f"Chest X-ray classification with explanations. {NOTICE}",
    )
    app.state.analyser = analyser
    app.state.settings = settings
    app.state.pending = pending

    @app.exception_handler(UploadError)
    async def refuse(request: Request, error: UploadError) -> JSONResponse:
        return JSONResponse({"detail": error.detail}, status_code=error.status)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return Response(status_code=204)  # browsers ask; an empty answer keeps logs quiet

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness: the service is up and which model it serves."""
        card = analyser.classifier.card
        return {"status": "ok", "model": card.name or card.model, "version": __version__}

    @app.get("/model")
    async def model_card() -> dict[str, Any]:
        """The model card: classes, input size, preprocessing, temperature, test metrics."""
        return analyser.card()

    @app.post("/predict", openapi_extra=OPENAPI_UPLOAD)
    async def predict(
        request: Request,
        heatmap: bool = Query(False, description="Add a Grad-CAM overlay (overlay_png)."),
        lungs: bool = Query(
            False, description="Add the lung mask and outline (needs a segmenter)."
        ),
    ) -> dict[str, Any]:
        """Classify one chest X-ray (PNG, JPEG or DICOM) sent as form field ``file`` or as the
        raw body."""
        if not pending.acquire(blocking=False):
            raise UploadError(
                503, f"the service is busy ({settings.max_pending} requests in progress); retry "
                "in a moment",
            )  # fmt: skip
        deadline = time.monotonic() + settings.timeout_s
        work = None
        try:
            async with asyncio.timeout(settings.timeout_s):
                data = await read_upload(
                    request.stream(),
                    request.headers.get("content-type", "application/octet-stream"),
                    request.headers.get("content-length"),
                    settings.max_upload_bytes,
                )
                if not data:
                    raise UploadError(400, "the file is empty (0 bytes); choose the X-ray again")
                # The slot is given back by the worker thread when it stops, so abandoned work
                # still counts against max_pending until the deadline ends it.
                work = asyncio.ensure_future(
                    run_in_threadpool(_release_after, pending, analyser.analyse, data, heatmap,
                                      lungs, deadline)
                )  # fmt: skip
                # Its outcome is read here, or dropped quietly once the request has had its 504.
                work.add_done_callback(lambda done: done.cancelled() or done.exception())
                return await asyncio.shield(work)
        except TimeoutError:
            raise _too_slow(settings.timeout_s) from None
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
) -> None:
    """Run the service with uvicorn until interrupted; with no ``model``, the best shipped
    classifier with the shipped lung model (:mod:`covidcxr.zoo`)."""
    import uvicorn

    from covidcxr.engine.perf import tune_allocator

    tune_allocator()
    model, seg_model = default_models(model, seg_model)
    app = create_app(model, seg_model, settings)
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=True)


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


def _remaining(deadline: float | None) -> float:
    """Seconds left before ``deadline`` (a ``time.monotonic()``; None: no limit → -1, which
    ``Lock.acquire`` takes as "wait as long as it takes")."""
    if deadline is None:
        return -1
    return max(0.0, deadline - time.monotonic())


def _expired(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


def _too_slow(timeout: float | None = None) -> UploadError:
    limit = "the time limit" if timeout is None else f"{timeout:g} s"
    return UploadError(504, f"the analysis took longer than {limit}; try again later")


def _release_after(slot: threading.BoundedSemaphore, function: Any, *args: Any) -> Any:
    try:
        return function(*args)
    finally:
        slot.release()


def _dicom_summary(data: bytes) -> dict[str, Any]:
    """The allow-listed header attributes of a DICOM upload (nothing that names a patient)."""
    import pydicom

    dataset = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
    summary = {}
    for name in DICOM_ALLOWED_TAGS:
        value = dataset.get(name)
        if value is not None and value != "":
            summary[name] = int(value) if isinstance(value, int) else str(value)
    return summary


def _overlay_png(image: np.ndarray, saliency: np.ndarray | None, mask: np.ndarray | None) -> str:
    """The X-ray with the heatmap and / or lung outline, at most DISPLAY_SIZE px, as base64."""
    from covidcxr.data.transforms import resize_mask
    from covidcxr.explain import saliency_overlay

    height, width = image.shape
    scale = min(1.0, DISPLAY_SIZE / max(height, width))
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    shown = _resize_float(image, size)
    heat = _resize_float(saliency, size) if saliency is not None else np.zeros(size, np.float32)
    small_mask = resize_mask(mask, size) if mask is not None else None
    rgb = saliency_overlay(shown, np.clip(heat, 0.0, 1.0), small_mask)
    return _png_base64(rgb)


def _resize_float(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    if values.shape == size:
        return values.astype(np.float32, copy=False)
    resized = Image.fromarray(values.astype(np.float32), mode="F").resize(
        (size[1], size[0]), Image.Resampling.BILINEAR
    )
    return np.asarray(resized, dtype=np.float32)


def _png_base64(array: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    # zlib level 1: measured ~90 ms instead of the default level's ~320 ms for a 1024 px
    # overlay; the page does not care about the bytes saved.
    Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
    return base64.b64encode(buffer.getvalue()).decode("ascii")
