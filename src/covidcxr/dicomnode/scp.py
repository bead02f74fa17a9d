"""The DICOM node: a C-STORE SCP that analyses frontal chest radiographs and stores the results
(:mod:`covidcxr.dicomnode.results`) at a destination, usually the PACS they came from.

How a film goes through:

1. The association handler (:meth:`DicomNode.handle_store`) reads the header. An object that is
   not a frontal chest radiograph (:func:`~covidcxr.dicomnode.filters.why_ignored`: CT, a
   lateral view, an SR, our own results) is accepted and ignored, with one log line. A film
   whose pixels cannot be decoded (by :func:`covidcxr.io.load_image_bytes`, the reader every
   front door uses) gets a failure status (0xC000, "cannot understand") and is not kept.
2. A good film is written to the queue folder (``pending/``, atomically) and answered at once
   with success: a burst of studies is absorbed at the network's speed. When
   :attr:`NodeSettings.max_queued` films are waiting, the node answers 0xA700 (out of
   resources) and the sender retries later.
3. One worker thread analyses the films in arrival order, sends the SR and the Secondary
   Capture to the destination in one association, and only then deletes the film. A node
   stopped or killed mid-queue resumes where it was on the next start; the result UIDs are
   derived from the source's, so a film analysed twice gives the same objects.
   A destination that is down is retried every :attr:`NodeSettings.retry_s`; a destination
   that refuses the results :data:`MAX_ATTEMPTS` times moves the film to ``failed/``.

Privacy: log lines name a film by its SOP Instance UID only; no patient or study attribute, no
free-text header value and no decoder message (which may quote header bytes) is ever logged.

TLS (:class:`TlsSettings`): the SCP can require TLS (and client certificates signed by a CA),
and results can be sent over TLS, with Python's ``ssl`` contexts as pynetdicom takes them.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import queue
import re
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from covidcxr.dicomnode.analysis import NodeModels
from covidcxr.dicomnode.filters import why_ignored
from covidcxr.formats import MAX_PIXELS

logger = logging.getLogger(__name__)

#: C-STORE statuses (PS3.4 B.2.3).
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000
#: Times the destination may refuse a film's results before the film is set aside.
MAX_ATTEMPTS = 3
PENDING_DIR, FAILED_DIR = "pending", "failed"
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_DESTINATION = re.compile(r"^(?P<ae>[^@]{1,16})@(?P<host>\[[^\]]+\]|[^:@]+):(?P<port>[0-9]{1,5})$")


@dataclass(frozen=True)
class Destination:
    """Where results go: a DICOM application entity ``ae_title`` at ``host``:``port``."""

    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Destination:
        """``AE@HOST:PORT`` (``ORTHANC@pacs.example.org:4242``, ``PACS@[::1]:104``)."""
        match = _DESTINATION.match(text.strip())
        if match is None:
            raise ValueError(
                f"{text!r} is not a destination: expected AE@HOST:PORT, e.g. ORTHANC@127.0.0.1:4242"
            )
        port = int(match["port"])
        if not 1 <= port <= 65535:
            raise ValueError(f"{text!r}: port {port} is not in 1..65535")
        return cls(check_ae_title(match["ae"]), match["host"].strip("[]"), port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.ae_title}@{host}:{self.port}"


def check_ae_title(title: str) -> str:
    """``title`` if it is a valid AE title (1 to 16 printable ASCII characters, no backslash,
    not only spaces), else ValueError."""
    if not (
        0 < len(title) <= 16
        and title.strip()
        and all(32 <= ord(ch) < 127 for ch in title)
        and "\\" not in title
    ):
        raise ValueError(
            f"{title!r} is not an AE title: 1 to 16 printable ASCII characters, no backslash"
        )
    return title


@dataclass(frozen=True)
class TlsSettings:
    """TLS for the node. ``certificate`` and ``key`` (PEM files): the node's own; ``ca``: the
    certificates it trusts. Listening, a certificate and key are required, and with ``ca`` the
    peers must present a certificate signed by it (mutual TLS). Sending, ``ca`` verifies the
    destination (the system's CAs without it) and the certificate, when given, is presented."""

    certificate: Path | None = None
    key: Path | None = None
    ca: Path | None = None

    def __post_init__(self) -> None:
        for name in ("certificate", "key", "ca"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise FileNotFoundError(f"{path}: no such TLS {name} file")
        if (self.certificate is None) != (self.key is None):
            raise ValueError("TLS: give both a certificate and its key, or neither")

    def server_context(self) -> ssl.SSLContext:
        if self.certificate is None:
            raise ValueError("TLS: listening over TLS needs the node's certificate and key")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(str(self.certificate), str(self.key))
        if self.ca is not None:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(str(self.ca))
        return context

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=None if self.ca is None else str(self.ca)
        )
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.certificate is not None:
            context.load_cert_chain(str(self.certificate), str(self.key))
        return context


@dataclass(frozen=True)
class NodeSettings:
    """How the node listens, queues and sends. ``queue_dir`` holds the films waiting
    (``pending/``) and those set aside (``failed/``); ``tls`` secures listening when
    ``listen_tls``, sending when ``send_tls``."""

    destination: Destination
    queue_dir: Path
    ae_title: str = "COVIDCXR"
    host: str = "127.0.0.1"
    port: int = 11112
    max_queued: int = 1000
    retry_s: float = 30.0
    max_pixels: int = MAX_PIXELS
    tls: TlsSettings | None = None
    listen_tls: bool = False
    send_tls: bool = False

    def __post_init__(self) -> None:
        check_ae_title(self.ae_title)
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is not in 0..65535")
        if self.max_queued < 1:
            raise ValueError(f"max_queued should be at least 1, got {self.max_queued}")
        if self.retry_s <= 0:
            raise ValueError(f"retry_s should be positive, got {self.retry_s}")
        if (self.listen_tls or self.send_tls) and self.tls is None:
            raise ValueError("TLS was asked for but no TLS settings (certificate, key, CA) given")


class SendError(RuntimeError):
    """The destination could not be reached (``refused`` False) or refused a result (True)."""

    def __init__(self, message: str, refused: bool) -> None:
        super().__init__(message)
        self.refused = refused


@dataclass
class NodeCounts:
    """What the node has done since it started."""

    received: int = 0
    ignored: int = 0
    refused: int = 0
    analysed: int = 0
    failed: int = 0
    resumed: int = 0
    attempts: dict[str, int] = field(default_factory=dict)


class DicomNode:
    """The C-STORE SCP and its worker. :meth:`start` binds the port (``OSError`` when taken)
    and resumes the queue; :meth:`stop` ends both. ``analyse`` defaults to
    ``models.analyse``; tests slow it down to fill the queue."""

    def __init__(self, models: NodeModels, settings: NodeSettings) -> None:
        self.models = models
        self.settings = settings
        self.counts = NodeCounts()
        self.pending = Path(settings.queue_dir) / PENDING_DIR
        self.failed = Path(settings.queue_dir) / FAILED_DIR
        self._queue: queue.Queue[Path | None] = queue.Queue()
        self._waiting: set[str] = set()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._server: Any = None
        self._worker: threading.Thread | None = None
        self.analyse: Callable[[Any], Any] = models.analyse

    # ---------------------------------------------------------------------- life cycle

    def start(self) -> None:
        """Bind the port, resume the films left in the queue folder, start the worker."""
        from pynetdicom import AE, evt

        keep_values_out_of_logs()
        self.pending.mkdir(parents=True, exist_ok=True)
        self.failed.mkdir(parents=True, exist_ok=True)
        ae = AE(ae_title=self.settings.ae_title)
        ae.supported_contexts = _supported_contexts()
        ae.maximum_associations = 16
        ae.network_timeout = 60
        ae.acse_timeout = 30
        ae.dimse_timeout = 60
        context = None
        if self.settings.listen_tls:
            assert self.settings.tls is not None
            context = self.settings.tls.server_context()
        self._server = ae.start_server(
            (self.settings.host, self.settings.port),
            block=False,
            ssl_context=context,
            evt_handlers=[(evt.EVT_C_STORE, self.handle_store)],
        )
        for partial in self.pending.glob("*.partial"):
            partial.unlink(missing_ok=True)  # a write a kill interrupted: never acknowledged
        left = sorted(self.pending.glob("*.dcm"), key=lambda path: path.stat().st_mtime)
        with self._lock:
            for path in left:
                self._waiting.add(path.stem)
                self._queue.put(path)
        self.counts.resumed = len(left)
        if left:
            logger.info("resuming %d film(s) left in the queue", len(left))
        self._worker = threading.Thread(target=self._work, name="covidcxr-dicom-worker")
        self._worker.daemon = True
        self._worker.start()

    @property
    def port(self) -> int:
        """The port listened on (the one the system chose when settings.port is 0)."""
        return int(self._server.server_address[1])

    def stop(self, timeout: float = 30.0) -> None:
        """Stop listening and stop the worker after the film it is on; films still waiting
        stay in the queue folder for the next start."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
        self._queue.put(None)
        if self._worker is not None:
            self._worker.join(timeout)

    def wait_idle(self, timeout: float) -> bool:
        """True once no film is waiting or being analysed (False after ``timeout`` s)."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._waiting, timeout)

    def serve_forever(self) -> None:
        """Block until interrupted (Ctrl-C, SIGTERM as KeyboardInterrupt), then :meth:`stop`."""
        try:
            while not self._stopping.wait(1.0):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    # ---------------------------------------------------------------------- receiving

    def handle_store(self, event: Any) -> int | Any:
        """pynetdicom's EVT_C_STORE handler: ignore, refuse or queue one object."""
        self.counts.received += 1
        try:
            dataset = event.dataset
            uid = str(dataset.get("SOPInstanceUID", ""))
        except Exception as error:  # a data set pydicom cannot even parse
            self.counts.refused += 1
            logger.warning("an object refused: its data set cannot be parsed (%s)", _kind(error))
            return _failure("the data set cannot be parsed")
        if not _UID.match(uid) or len(uid) > 64:
            self.counts.refused += 1
            logger.warning("an object refused: no valid SOP Instance UID")
            return _failure("no valid SOP Instance UID")
        try:
            reason = why_ignored(dataset)
        except Exception as error:  # a header value pydicom cannot convert
            reason = f"its header cannot be read ({_kind(error)})"
        if reason is not None:
            self.counts.ignored += 1
            logger.info("%s ignored: %s", uid, reason)
            return SUCCESS
        with self._lock:
            if uid in self._waiting:  # sent again while waiting: the copy queued will do
                return SUCCESS
            if len(self._waiting) >= self.settings.max_queued:
                logger.warning("%s deferred: %d films already queued", uid, len(self._waiting))
                return OUT_OF_RESOURCES
        data = _encoded(event)
        problem = _undecodable(data, uid, self.settings.max_pixels)
        if problem is not None:
            self.counts.refused += 1
            logger.warning("%s refused: %s", uid, problem)
            return _failure(problem)
        path = self.pending / f"{uid}.dcm"
        partial = path.with_suffix(".partial")
        partial.write_bytes(data)
        os.replace(partial, path)
        with self._lock:
            self._waiting.add(uid)
            self._queue.put(path)
        logger.info("%s queued", uid)
        return SUCCESS

    # ---------------------------------------------------------------------- the worker

    def _work(self) -> None:
        while True:
            path = self._queue.get()
            if path is None or self._stopping.is_set():
                return
            try:
                done = self._process(path)
            except SendError as error:
                done = self._after_send_error(path, error)
            except Exception as error:  # one bad film never stops the node
                logger.error("%s failed: %s; set aside in %s", path.stem, _kind(error), FAILED_DIR)
                self._set_aside(path)
                done = True
            if done:
                with self._idle:
                    self._waiting.discard(path.stem)
                    self._idle.notify_all()

    def _process(self, path: Path) -> bool:
        import pydicom

        from covidcxr.dicomnode.results import build_overlay, build_report, result_uids
        from covidcxr.io import load_image_bytes

        started = time.perf_counter()
        uid = path.stem
        data = path.read_bytes()
        header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        image = load_image_bytes(data, f"film {uid}", max_pixels=self.settings.max_pixels).image
        finding = self.analyse(image)
        model = self.models.description
        uids = result_uids(header, model.digest)
        report = build_report(header, finding, model, uids)
        overlay = build_overlay(header, image, finding, model, uids)
        self.send([report, overlay])
        path.unlink(missing_ok=True)
        self.counts.analysed += 1
        logger.info(
            "%s analysed in %.1f s: report %s and overlay %s stored at %s",
            uid,
            time.perf_counter() - started,
            uids.report_instance,
            uids.overlay_instance,
            self.settings.destination,
        )
        return True

    def _after_send_error(self, path: Path, error: SendError) -> bool:
        uid = path.stem
        if error.refused:
            attempts = self.counts.attempts.get(uid, 0) + 1
            self.counts.attempts[uid] = attempts
            if attempts >= MAX_ATTEMPTS:
                logger.error("%s failed: %s (%d times); set aside", uid, error, attempts)
                self._set_aside(path)
                return True
        logger.warning("%s waits: %s; retrying in %g s", uid, error, self.settings.retry_s)
        if self._stopping.wait(self.settings.retry_s):
            return False
        self._queue.put(path)
        return False

    def _set_aside(self, path: Path) -> None:
        self.counts.failed += 1
        with contextlib.suppress(OSError):
            os.replace(path, self.failed / path.name)

    # ---------------------------------------------------------------------- sending

    def send(self, datasets: list[Any]) -> None:
        """C-STORE ``datasets`` to the destination in one association (SendError if not)."""
        from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
        from pynetdicom import AE

        destination = self.settings.destination
        ae = AE(ae_title=self.settings.ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
        for sop_class in sorted({str(dataset.SOPClassUID) for dataset in datasets}):
            ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        tls_args = None
        if self.settings.send_tls:
            assert self.settings.tls is not None
            tls_args = (self.settings.tls.client_context(), destination.host)
        association = ae.associate(
            destination.host, destination.port, ae_title=destination.ae_title, tls_args=tls_args
        )
        if not association.is_established:
            raise SendError(f"no association with {destination}", refused=False)
        try:
            for dataset in datasets:
                status = association.send_c_store(dataset)
                code = getattr(status, "Status", None)
                if code is None:
                    raise SendError(f"{destination} did not answer a C-STORE", refused=False)
                if code != SUCCESS and not 0xB000 <= code <= 0xBFFF:  # B...: warnings, stored
                    raise SendError(f"{destination} answered status 0x{code:04X}", refused=True)
        finally:
            association.release()


def keep_values_out_of_logs() -> None:
    """Stop pydicom from checking values as it reads and writes them: its warnings quote the
    value (``Invalid value for VR CS: 'DOE^JANE'``), and a free-text attribute may hold a
    patient's name. For the whole process: the node is an application of its own."""
    from pydicom import config

    config.settings.reading_validation_mode = config.IGNORE
    config.settings.writing_validation_mode = config.IGNORE


def _supported_contexts() -> list[Any]:
    """Every storage SOP class (the ignored ones are accepted too, as DICOM expects of a
    storage SCP); the radiographs in every transfer syntax pydicom can decode."""
    from pydicom.uid import AllTransferSyntaxes
    from pynetdicom import AllStoragePresentationContexts, build_context

    from covidcxr.dicomnode.filters import XRAY_SOP_CLASSES

    contexts = []
    for context in AllStoragePresentationContexts:
        syntaxes = (
            list(AllTransferSyntaxes)
            if context.abstract_syntax in XRAY_SOP_CLASSES
            else context.transfer_syntax
        )
        contexts.append(build_context(context.abstract_syntax, syntaxes))
    return contexts


def _encoded(event: Any) -> bytes:
    """The received object as a DICOM file's bytes (preamble, file meta, data set), as it came:
    not decoded and encoded again."""
    return bytes(event.encoded_dataset())


def _undecodable(data: bytes, uid: str, max_pixels: int) -> str | None:
    """None when covidcxr's reader decodes the film's pixels, else why not (our words only:
    pydicom's messages may quote header bytes)."""
    from covidcxr.io import ImageReadError, load_image_bytes

    try:
        load_image_bytes(data, f"film {uid}", max_pixels=max_pixels)
    except ImageReadError as error:
        return (
            f"the pixel data cannot be read ({type(error).__name__}: {error.reason.split(' (')[0]})"
        )
    except Exception as error:  # a decoder's own failure is still a bad film, not a crash
        return f"the pixel data cannot be decoded ({_kind(error)})"
    return None


def _failure(comment: str) -> Any:
    from pydicom.dataset import Dataset

    status = Dataset()
    status.Status = CANNOT_UNDERSTAND
    status.ErrorComment = comment[:64]
    return status


def _kind(error: BaseException) -> str:
    return type(error).__name__
