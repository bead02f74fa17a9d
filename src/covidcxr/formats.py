"""What an image file is, before it is read: the supported formats and how content is
recognised (:func:`sniff_format`, :func:`detect_format`, :func:`is_dicom`), which files may be
opened at all (:func:`file_problem`), how a name is shown (:func:`escape_path`), and the errors
and result types of reading one (:class:`ImageReadError` and its kinds, :class:`LoadedImage`).

The readers live in :mod:`covidcxr.io` (PNG, JPEG, and the entry points) and
:mod:`covidcxr.dicom`; both build on this module, which imports neither. :mod:`covidcxr.io`
re-exports every public name here, so ``from covidcxr.io import ImageReadError`` works.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

#: Largest image read by default (width × height). Real chest X-rays reach ~4,300 × 3,500 px;
#: anything far above that is more likely a decompression bomb than a radiograph.
MAX_PIXELS = 8192 * 8192


DICOM_SUFFIXES = frozenset({".dcm", ".dicom", ".dic"})


IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})


SUPPORTED_SUFFIXES = IMAGE_SUFFIXES | DICOM_SUFFIXES


#: What :func:`load_image` and :func:`load_image_bytes` read, as :func:`detect_format` names them.
SUPPORTED_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "DICOM")


_SUPPORTED_HINT = "Supported: PNG and JPEG (8/16-bit), DICOM with pixel data."


# Bytes looked at to recognise a format (DICOM's preamble ends at byte 132).
_HEADER_BYTES = 256


class ImageReadError(ValueError):
    """A file could not be read as an image. ``path`` names it, ``reason`` says why."""

    def __init__(self, path: str | Path, reason: str, hint: str = "") -> None:
        self.path = Path(path)
        self.reason = reason
        self.hint = hint
        message = f"{escape_path(self.path)}: {reason}"
        super().__init__(f"{message}. {hint}" if hint else message)


class EmptyFileError(ImageReadError):
    """The file has zero bytes."""


class NotAnImageError(ImageReadError):
    """The file is neither a supported image format nor DICOM (or not a regular file at all)."""


class UnsupportedFormatError(NotAnImageError):
    """The content is an image (or document, archive) of a format covidcxr does not read;
    ``detected`` names it (``"GIF"``, ``"TIFF"``...)."""

    def __init__(self, path: str | Path, detected: str, reason: str, hint: str = "") -> None:
        self.detected = detected
        super().__init__(path, reason, hint)


class TruncatedImageError(ImageReadError):
    """The header was readable but the image data is cut short or corrupt."""


class ImageTooLargeError(ImageReadError):
    """The header declares more pixels than allowed (a decompression bomb, or a wrong file)."""


class MissingPixelDataError(ImageReadError):
    """A DICOM file without pixel data (e.g. a structured report or a header-only export)."""


class DicomDecoderMissingError(ImageReadError):
    """A compressed DICOM whose transfer syntax needs a decoder plugin that is not installed."""


class UnsupportedImageError(ImageReadError):
    """A readable file whose content covidcxr does not handle (e.g. a 3-D volume)."""


class NonFiniteValueError(ImageReadError):
    """NaN or infinite values: in a DICOM header value the pixels depend on (RescaleSlope,
    RescaleIntercept), in float pixel data, or in the decoded image."""


@dataclass(frozen=True)
class ImageInfo:
    """What the file itself says about the image, before conversion to the convention.

    ``mode`` is Pillow's mode (``"L"``, ``"RGB"``, ``"I;16"``...) or the DICOM photometric
    interpretation; ``bit_depth`` is bits per sample as stored.
    """

    format: str
    width: int
    height: int
    mode: str
    bit_depth: int


@dataclass(frozen=True)
class LoadedImage:
    """An image in the covidcxr convention, ``image`` (H, W) float32 in [0, 1], with its info.

    ``notes`` are the warnings logged while reading it (e.g. a DICOM window that could not be
    applied, so the image was min-max scaled instead); empty for a clean read.
    """

    image: np.ndarray
    info: ImageInfo
    notes: tuple[str, ...] = ()


def sniff_format(data: bytes) -> str | None:
    """``"PNG"``, ``"JPEG"`` or ``"DICOM"`` from a file's first bytes, else None (see
    :func:`detect_format` for the name of an unsupported format).

    DICOM is recognised by its Part 10 preamble (``DICM`` at byte 128) or, for files written
    without one, by a first element in group 0x0008 (little-endian, as raw archives store it).
    """
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data[128:132] == b"DICM":
        return "DICOM"
    # No preamble: a first element of group 2 (file meta) or 8, then an explicit VR or an
    # implicit-VR length that fits a header element.
    header_like = data[4:6].isalpha() or int.from_bytes(data[4:8], "little") < 4096
    if len(data) >= 8 and data[:2] in (b"\x02\x00", b"\x08\x00") and header_like:
        return "DICOM"
    return None


# Formats recognised only to be refused by name: (name, what it is, test on the first bytes).
_OTHER_FORMATS: tuple[tuple[str, str, Callable[[bytes], bool]], ...] = (
    ("GIF", "a GIF image", lambda d: d[:6] in (b"GIF87a", b"GIF89a")),
    (
        "TIFF",
        "a TIFF image",
        lambda d: d[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"),
    ),
    (
        "BMP",
        "a BMP image",
        lambda d: (
            d[:2] == b"BM"
            and int.from_bytes(d[14:18], "little") in (12, 16, 40, 52, 56, 64, 108, 124)
        ),
    ),
    ("WebP", "a WebP image", lambda d: d[:4] == b"RIFF" and d[8:12] == b"WEBP"),
    (
        "JPEG 2000",
        "a JPEG 2000 image",
        lambda d: d.startswith(b"\x00\x00\x00\x0cjP  \r\n\x87\n") or d[:4] == b"\xff\x4f\xff\x51",
    ),
    (
        "JPEG XL",
        "a JPEG XL image",
        lambda d: d[:2] == b"\xff\x0a" or d.startswith(b"\x00\x00\x00\x0cJXL \r\n\x87\n"),
    ),
    (
        "HEIF",
        "a HEIF / AVIF image",
        lambda d: (
            d[4:8] == b"ftyp"
            and d[8:12] in (b"heic", b"heix", b"hevc", b"mif1", b"msf1", b"avif", b"avis")
        ),
    ),
    ("PSD", "a Photoshop (PSD) image", lambda d: d[:4] == b"8BPS"),
    (
        "PNM",
        "a PNM (PBM / PGM / PPM) image",
        lambda d: len(d) > 2 and d[:1] == b"P" and d[1:2] in b"123456" and d[2:3] in b" \t\r\n",
    ),
    ("PDF", "a PDF document", lambda d: d[:5] == b"%PDF-"),
    ("ZIP", "a ZIP archive", lambda d: d[:4] in (b"PK\x03\x04", b"PK\x05\x06")),
    ("gzip", "a gzip-compressed file", lambda d: d[:2] == b"\x1f\x8b"),
)


def detect_format(data: bytes) -> str | None:
    """The format of a file from its first bytes (256 are enough): one of
    :data:`SUPPORTED_FORMATS` (as :func:`sniff_format`), else the name of a format covidcxr
    recognises in order to refuse it clearly (``"GIF"``, ``"TIFF"``, ``"BMP"``, ``"WebP"``,
    ``"JPEG 2000"``, ``"JPEG XL"``, ``"HEIF"``, ``"PSD"``, ``"PNM"``, ``"PDF"``, ``"ZIP"``,
    ``"gzip"``), else None."""
    supported = sniff_format(data)
    if supported is not None:
        return supported
    for name, _, matches in _OTHER_FORMATS:
        if matches(data):
            return name
    return None


def is_dicom(path: str | Path) -> bool:
    """True when the file has a DICOM suffix or starts like DICOM (:func:`sniff_format`: the
    ``DICM`` preamble, or a bare first header element). Only regular files are opened, so a
    FIFO never blocks this."""
    path = Path(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with _open_regular_file(path) as handle:
            return sniff_format(handle.read(_HEADER_BYTES)) == "DICOM"
    except (OSError, ImageReadError):
        return False


def escape_path(path: str | Path) -> str:
    """``path`` as text that any terminal and UTF-8 file can hold: a name that is not valid
    UTF-8 (bytes that Python keeps as surrogate escapes) shows those bytes as ``\\xNN``."""
    text = os.fspath(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        try:
            return os.fsencode(text).decode("utf-8", errors="backslashreplace")
        except UnicodeEncodeError:  # a lone surrogate that no file system produced
            return text.encode("utf-8", errors="backslashreplace").decode("utf-8")
    return text


def is_utf8_path(path: str | Path) -> bool:
    """False for a path holding bytes that are not valid UTF-8 (on Linux, a file name written in
    another encoding): such a name cannot be written into covidcxr's UTF-8 CSV and JSON files."""
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def file_kind(mode: int) -> str:
    """What a ``st_mode`` is, in words: ``"a regular file"``, ``"a directory"``, ``"a FIFO
    (named pipe)"``, ``"a socket"``, ``"a character device"``, ``"a block device"``..."""
    kinds = (
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISLNK, "a symbolic link"),
    )
    return next((name for test, name in kinds if test(mode)), "not a regular file")


#: Why a file whose name is not valid UTF-8 is left out of a dataset, and how to fix it.
NOT_UTF8_REASON = (
    "its name is not valid UTF-8 (shown here with \\xNN escapes), and covidcxr writes file "
    "names into UTF-8 split, metrics and report files, so it is left out; rename it to a UTF-8 "
    "name (for a Latin-1 name: convmv -f latin1 -t utf8 --notest FILE)"
)


def file_problem(path: str | Path) -> str | None:
    """None for a regular file (or a symbolic link to one), else why ``path`` cannot be read as
    one, in words that follow its name: ``"is missing"``, ``"is a broken symbolic link
    (...)"``, ``"is a directory, ..."``, ``"is a FIFO (named pipe), not a regular file"``...
    Only ``stat`` is used: nothing is opened, so a FIFO cannot block this."""
    problem = _stat_problem(Path(path))
    return None if problem is None else problem[1]


def _stat_problem(path: Path) -> tuple[type[Exception], str, str] | None:
    """``(exception type, reason, hint)`` for a path that is not a regular file, else None."""
    not_opened = "It was not opened. Give the path of an image file."
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if not os.path.islink(path):
            return FileNotFoundError, "is missing", ""
        target = escape_path(os.readlink(path))
        reason = f"is a broken symbolic link (it points to {target}, which does not exist)"
        return FileNotFoundError, reason, "Fix or remove the link."
    except OSError as error:
        if not os.path.islink(path):
            raise
        reason = f"is a symbolic link that cannot be followed ({error.strerror})"
        return NotAnImageError, reason, not_opened
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return NotAnImageError, "is a directory, not an image file", ""
    return NotAnImageError, f"is {file_kind(mode)}, not a regular file", not_opened


def _open_regular_file(path: Path) -> BinaryIO:
    """``path`` opened for reading, once ``stat`` has shown it is a regular file.

    Nothing else is ever opened: opening a FIFO would block, and opening a device can have side
    effects. The descriptor is opened non-blocking and checked again, so a file swapped for a
    FIFO between the two steps still cannot block.
    """
    problem = _stat_problem(path)
    if problem is not None:
        kind, reason, hint = problem
        if kind is FileNotFoundError:
            message = "no such file" if reason == "is missing" else f"{reason}. {hint}"
            raise FileNotFoundError(f"{escape_path(path)}: {message}")
        raise NotAnImageError(path, reason, hint)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    descriptor = os.open(path, flags)
    try:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            raise NotAnImageError(path, f"is {file_kind(mode)}, not a regular file; not read")
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def failure_reason(error: BaseException, path: str | Path | None = None) -> str:
    """Why a file could not be used, in the words that follow its name in a list of skipped
    files (``PATH: reason``): an :class:`ImageReadError`'s reason and hint; for a file gone or
    a broken link, what :func:`file_problem` sees at ``path``; otherwise the exception's kind and
    message (a decoder's own failure is still one bad file). The one spelling every batch path
    uses."""
    if isinstance(error, ImageReadError):
        return error.reason + (f". {error.hint}" if error.hint else "")
    if isinstance(error, FileNotFoundError):
        return (file_problem(path) if path is not None else None) or "is missing"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror[0].lower() + error.strerror[1:]
    return f"{type(error).__name__}: {error}"
