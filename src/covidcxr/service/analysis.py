"""The work behind ``POST /predict``: one upload's bytes in, the answer's fields out.

:class:`Analyser` holds the networks (used by one request at a time, under a lock) and the
memory budget of decoded images; decoding, resizing and PNG encoding run in parallel.
"""

from __future__ import annotations

import base64
import io
import os
import threading
import time
from typing import Any

import numpy as np
from pydantic import BaseModel

from covidcxr.inference.artifact import NOTICE
from covidcxr.inference.ood import UNFAMILIAR
from covidcxr.service.budget import MemoryBudget, declared_pixels, return_freed_memory
from covidcxr.service.schemas import Prediction, model_info
from covidcxr.service.settings import DECODED_BYTES_PER_PIXEL, ServiceSettings
from covidcxr.service.uploads import UploadError

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


class Analyser:
    """The models behind the service and the work of one request. The networks are used by
    one request at a time (a lock); decoding and encoding run in parallel, within the memory
    budget ``decoded`` (:class:`~covidcxr.service.budget.MemoryBudget`)."""

    def __init__(
        self, model: Any, seg_model: Any = None, settings: ServiceSettings | None = None
    ) -> None:
        from covidcxr.inference.artifact import load_classifier

        settings = settings or ServiceSettings()
        self.classifier, self.segmenter = load_classifier(
            model, seg_model, instead="serve a classifier"
        )
        self.max_pixels = settings.max_pixels
        self.lock = threading.Lock()
        # Decoding runs beside the networks, but no more of it than there are cores.
        self.decoding = threading.BoundedSemaphore(max(1, len(os.sched_getaffinity(0))))
        self.decoded = MemoryBudget(settings.decode_budget_bytes)

    def warm_up(self) -> None:
        """One pass of everything a request may need (Grad-CAM's import, first-call setup),
        so that the first clinician does not wait for it (the first Grad-CAM pass takes ~2 s
        longer than the next ones). What the pass freed is then handed back to the OS
        (:func:`~covidcxr.service.budget.return_freed_memory`): requests run on other
        threads, whose allocator arenas would never reuse it (~90 MB with the shipped
        models)."""
        from covidcxr.analysis.explain import saliency_maps

        image = np.linspace(0.0, 1.0, 64 * 64, dtype=np.float32).reshape(64, 64)
        with self.lock:
            saliency_maps(self.classifier, [image])
            if self.segmenter is not None:
                self.segmenter.predict_masks([image])
        return_freed_memory()

    def card(self) -> BaseModel:
        """``GET /model``'s answer (:data:`~covidcxr.service.schemas.ModelInfo`)."""
        segmenter = None if self.segmenter is None else self.segmenter.card
        return model_info(
            self.classifier.card, None if segmenter is None else segmenter.name or segmenter.model
        )

    def analyse(
        self, data: bytes, heatmap: bool, lungs: bool, deadline: float | None = None
    ) -> Prediction:
        """Everything ``POST /predict`` returns for one file's bytes. ``deadline`` is a
        ``time.monotonic()`` after which the work stops at the next stage (UploadError 504).

        Before anything is decoded, the memory the image will take (its declared pixels ×
        :data:`~covidcxr.service.settings.DECODED_BYTES_PER_PIXEL`) is reserved from
        ``decoded``, waiting for room until ``deadline``; it is given back with the answer."""
        from covidcxr.io import sniff_format

        started = time.perf_counter()
        kind = sniff_format(data)
        if kind is None:
            raise UploadError(
                415,
                "this is not a PNG, JPEG or DICOM file; send a chest X-ray in one of these formats",
            )
        # A header that cannot be read reserves as much as the largest image allowed.
        pixels = min(declared_pixels(data, kind) or self.max_pixels, self.max_pixels)
        reserved = pixels * DECODED_BYTES_PER_PIXEL
        if not self.decoded.acquire(reserved, timeout=_wait_time(deadline)):
            raise too_slow()
        try:
            return self._analyse(data, kind, heatmap, lungs, deadline, started)
        finally:
            self.decoded.release(reserved)

    def _analyse(
        self,
        data: bytes,
        kind: str,
        heatmap: bool,
        lungs: bool,
        deadline: float | None,
        started: float,
    ) -> Prediction:
        from covidcxr.io import ImageReadError, load_image_bytes

        if not self.decoding.acquire(timeout=_wait_time(deadline)):
            raise too_slow()
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
            raise too_slow()
        try:
            if prepared is None:  # lung focusing runs the segmenter: inside the lock
                prepared = self.classifier.prepare([image])
            analysis = self.classifier.analyse_prepared(prepared)
            if heatmap:
                from covidcxr.analysis.explain import saliency_maps

                if _expired(deadline):
                    raise too_slow()
                maps, _ = saliency_maps(self.classifier, [image])
                saliency = maps[0]
            if lungs and self.segmenter is not None:
                if _expired(deadline):
                    raise too_slow()
                mask = self.segmenter.predict_masks([image])[0]
        finally:
            self.lock.release()
        if _expired(deadline):
            raise too_slow()
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
            "film_png": None,
            "heatmap_png": None,
            "lung_outline_png": None,
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
            result.update(_display_pngs(image, saliency, mask))
        if mask is not None:
            # uint8 throughout: ``mask * 255`` would be a full-size int64 array first.
            result["lung_mask_png"] = _png_base64(mask.astype(np.uint8) * np.uint8(255))
        if saliency is not None and mask is not None:
            from covidcxr.analysis.explain import lung_saliency_fraction

            result["lung_fraction"] = lung_saliency_fraction(saliency, mask)
        result["elapsed_ms"] = round(1000 * (time.perf_counter() - started), 1)
        return Prediction(**result)


def _remaining(deadline: float | None) -> float:
    """Seconds left before ``deadline`` (a ``time.monotonic()``; None: no limit → -1, which
    ``Lock.acquire`` takes as "wait as long as it takes")."""
    if deadline is None:
        return -1
    return max(0.0, deadline - time.monotonic())


def _wait_time(deadline: float | None) -> float | None:
    """Seconds left before ``deadline`` for a ``timeout=`` that takes None as no limit."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _expired(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


def too_slow(timeout: float | None = None) -> UploadError:
    limit = "the time limit" if timeout is None else f"{timeout:g} s"
    return UploadError(504, f"the analysis took longer than {limit}; try again later")


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


def _display_pngs(
    image: np.ndarray, saliency: np.ndarray | None, mask: np.ndarray | None
) -> dict[str, str | None]:
    """The pictures of one answer, at most DISPLAY_SIZE px on the longest side, as base64 PNGs.

    ``overlay_png``: the X-ray with the heatmap and / or lung outline drawn in (RGB). The same
    picture in layers, for a viewer that lets the reader fade the heatmap: ``film_png`` the
    plain X-ray (grey); ``heatmap_png`` (RGBA, None without ``saliency``) each pixel's
    "inferno" colour at opacity = its saliency, so that laid over the film at opacity ``a``
    it gives the overlay of :func:`~covidcxr.analysis.explain.saliency_overlay` with ``alpha=a``
    (the overlay's is 0.45); ``lung_outline_png`` (RGBA, None without ``mask``) the cyan
    outline on a transparent ground."""
    from matplotlib import colormaps

    from covidcxr.analysis.explain import COLORMAP, saliency_overlay
    from covidcxr.data.transforms import resize_float_map, resize_mask

    height, width = image.shape
    scale = min(1.0, DISPLAY_SIZE / max(height, width))
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    shown = np.clip(resize_float_map(image, size), 0.0, 1.0)
    heat = resize_float_map(saliency, size) if saliency is not None else np.zeros(size, np.float32)
    heat = np.clip(heat, 0.0, 1.0)
    small_mask = resize_mask(mask, size) if mask is not None else None
    pngs: dict[str, str | None] = {
        "overlay_png": _png_base64(saliency_overlay(shown, heat, small_mask)),
        "film_png": _png_base64(_to_uint8(shown)),
        "heatmap_png": None,
        "lung_outline_png": None,
    }
    if saliency is not None:
        colours = colormaps[COLORMAP](heat)  # (H, W, 4) in [0, 1]
        colours[..., 3] = heat
        pngs["heatmap_png"] = _png_base64(_to_uint8(colours))
    if small_mask is not None:
        # The outline alone: drawn on a black film with no heat, it is the only colour there.
        blank = np.zeros(size, np.float32)
        outline = saliency_overlay(blank, blank, small_mask)
        opacity = np.where(outline.any(axis=2), np.uint8(255), np.uint8(0))
        pngs["lung_outline_png"] = _png_base64(np.dstack([outline, opacity]))
    return pngs


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """``values`` in ``[0, 1]`` as uint8 in ``[0, 255]``, rounded as saliency_overlay does."""
    return np.clip(np.rint(values * 255.0), 0, 255).astype(np.uint8)


def _png_base64(array: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    # zlib level 1: measured ~90 ms instead of the default level's ~320 ms for a 1024 px
    # overlay; the page does not care about the bytes saved.
    Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
    return base64.b64encode(buffer.getvalue()).decode("ascii")
