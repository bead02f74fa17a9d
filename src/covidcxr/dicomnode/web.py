"""DICOMweb client mode: poll an archive's QIDO-RS for CR / DX instances, fetch each new one with
WADO-RS, analyse it, and store its SR and Secondary Capture with STOW-RS (dicomweb-client).

Resumable: every instance handled (analysed, ignored or failed) is appended to the state file
(one SOP Instance UID per line, flushed and fsynced), which the next run reads first, so a
restart never analyses a film twice and never skips one. As with the SCP, logs name
instances by SOP Instance UID only.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from covidcxr.dicomnode.analysis import NodeModels
from covidcxr.dicomnode.filters import XRAY_MODALITIES, why_ignored
from covidcxr.formats import MAX_PIXELS

logger = logging.getLogger(__name__)

#: Instances asked for per QIDO-RS page.
PAGE = 100
_SOP_INSTANCE, _SERIES, _STUDY = "00080018", "0020000E", "0020000D"


@dataclass
class WatchCounts:
    """What one :func:`watch_once` pass did."""

    analysed: int = 0
    ignored: int = 0
    failed: int = 0


class ProcessedLog:
    """The SOP Instance UIDs handled so far, kept in ``path`` (one per line, appended)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = self.path.read_text(encoding="ascii") if self.path.is_file() else ""
        self.done = {line.strip() for line in text.splitlines() if line.strip()}

    def add(self, uid: str) -> None:
        with self.path.open("a", encoding="ascii") as handle:
            handle.write(uid + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self.done.add(uid)


def watch_once(
    models: NodeModels, client: Any, processed: ProcessedLog, max_pixels: int = MAX_PIXELS
) -> WatchCounts:
    """One pass over the archive behind ``client`` (a ``dicomweb_client.DICOMwebClient``):
    every CR / DX instance not in ``processed`` is fetched, analysed and its results stored."""
    counts = WatchCounts()
    for modality in sorted(XRAY_MODALITIES):
        for found in _instances(client, modality):
            uid = _value(found, _SOP_INSTANCE)
            if not uid or uid in processed.done:
                continue
            outcome = _handle(models, client, found, uid, max_pixels)
            setattr(counts, outcome, getattr(counts, outcome) + 1)
            processed.add(uid)
    return counts


def watch(
    models: NodeModels,
    client: Any,
    state: Path,
    poll_s: float = 10.0,
    stop: threading.Event | None = None,
) -> None:
    """:func:`watch_once` every ``poll_s`` seconds until ``stop`` is set (or Ctrl-C); an
    archive that does not answer is logged and tried again at the next poll."""
    from covidcxr.dicomnode.scp import keep_values_out_of_logs

    keep_values_out_of_logs()
    processed = ProcessedLog(state)
    stop = stop or threading.Event()
    with contextlib.suppress(KeyboardInterrupt):  # the state file is written as it goes
        _poll(models, client, processed, poll_s, stop)


def _poll(
    models: NodeModels, client: Any, processed: ProcessedLog, poll_s: float, stop: threading.Event
) -> None:
    while not stop.is_set():
        try:
            counts = watch_once(models, client, processed)
            if counts.analysed or counts.failed:
                logger.info(
                    "poll: %d analysed, %d ignored, %d failed",
                    counts.analysed,
                    counts.ignored,
                    counts.failed,
                )
        except OSError as error:  # requests' errors are OSErrors: the archive is away
            logger.warning(
                "the archive did not answer (%s); next poll in %g s", _kind(error), poll_s
            )
        except Exception as error:  # an HTTP error status from the archive
            logger.warning(
                "the archive refused a request (%s); next poll in %g s", _kind(error), poll_s
            )
        stop.wait(poll_s)


def _instances(client: Any, modality: str) -> list[dict]:
    found: list[dict] = []
    while True:
        page = client.search_for_instances(
            search_filters={"Modality": modality}, offset=len(found), limit=PAGE
        )
        found += page
        if len(page) < PAGE:
            return found


def _handle(models: NodeModels, client: Any, found: dict, uid: str, max_pixels: int) -> str:
    """``analysed``, ``ignored`` or ``failed``: what became of one instance."""
    from covidcxr.dicomnode.results import build_overlay, build_report, result_uids
    from covidcxr.io import ImageReadError, load_image_bytes

    started = time.perf_counter()
    try:
        dataset = client.retrieve_instance(_value(found, _STUDY), _value(found, _SERIES), uid)
    except Exception as error:
        logger.warning("%s failed: it cannot be fetched (%s)", uid, _kind(error))
        return "failed"
    reason = why_ignored(dataset)
    if reason is not None:
        logger.info("%s ignored: %s", uid, reason)
        return "ignored"
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    try:
        image = load_image_bytes(buffer.getvalue(), f"film {uid}", max_pixels=max_pixels).image
    except ImageReadError as error:
        logger.warning("%s failed: %s", uid, error.reason.split(" (")[0])
        return "failed"
    except Exception as error:  # a decoder's own failure
        logger.warning("%s failed: the pixel data cannot be decoded (%s)", uid, _kind(error))
        return "failed"
    finding = models.analyse(image)
    model = models.description
    uids = result_uids(dataset, model.digest)
    results = [
        build_report(dataset, finding, model, uids),
        build_overlay(dataset, image, finding, model, uids),
    ]
    client.store_instances(results)
    logger.info(
        "%s analysed in %.1f s: report %s and overlay %s stored",
        uid,
        time.perf_counter() - started,
        uids.report_instance,
        uids.overlay_instance,
    )
    return "analysed"


def _value(found: dict, tag: str) -> str:
    values = (found.get(tag) or {}).get("Value") or [""]
    return str(values[0])


def _kind(error: BaseException) -> str:
    return type(error).__name__
