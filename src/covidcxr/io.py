"""Read any supported chest X-ray file into covidcxr's one image convention.

The convention
--------------
Every image covidcxr reads becomes a ``numpy.ndarray`` of

* dtype ``float32``, shape ``(H, W)``: one grey channel, row 0 at the top;
* values in ``[0, 1]``, where 1 is displayed white: dense tissue and bone are bright, air is dark,
  as a radiologist views the film; every value is finite (a NaN or infinite pixel is an error,
  never passed on).

Which files are read: decided by content
----------------------------------------
The format is taken from the file's first bytes (:func:`detect_format`), never from its name,
by files on disk (:func:`load_image`) and uploads held in memory (:func:`load_image_bytes`)
alike. The formats read are :data:`SUPPORTED_FORMATS`: PNG (8- and 16-bit), JPEG and DICOM.
A name that disagrees with the content does not matter: a PNG saved as ``x.jpg`` reads as a PNG.
Anything else raises :class:`UnsupportedFormatError`, naming the file, the format its content
was recognised as (GIF, TIFF, BMP, WebP, JPEG 2000, HEIF, a PDF or an archive...) and the
supported list, even when Pillow could decode it: one rule for the command line and the service.
The one use of a name: a file with a DICOM suffix (``.dcm``) whose content is not recognised is
still tried as DICOM, since old archives write DICOM without the ``DICM`` preamble.
Only regular files are opened: a directory, a FIFO, a socket or a device raises
:class:`NotAnImageError` ("not a regular file") without being opened. A file whose name is not
valid UTF-8 reads like any other; messages show such a name with its bytes as ``\\xNN``
(:func:`escape_path`). Dataset discovery leaves such files out, and lists them, since their names
cannot be written into covidcxr's UTF-8 split and report files (:mod:`covidcxr.data.layouts`).

How each format gets there:

* PNG / JPEG (Pillow), 8- or 16-bit; grey, RGB, RGBA, palette and the other Pillow modes. Colour
  is reduced to luma (ITU-R 601, Pillow's ``convert("L")``); alpha is dropped (X-rays are opaque);
  the EXIF orientation of JPEGs is applied. 8-bit values are divided by 255, 16-bit by 65535.
* DICOM (pydicom, in :mod:`covidcxr.dicom`): the first frame, then the Modality LUT / rescale,
  then the first VOI LUT or window when the file has one (scaled from that LUT's output range
  to [0, 1]); without a VOI the image is min-max scaled. MONOCHROME1 (and an INVERSE
  presentation LUT) is inverted so that bone is bright. Compressed transfer syntaxes decode
  through pydicom's plugins (RLE and JPEG baseline always work; JPEG 2000, HTJ2K and JPEG-LS
  need ``pip install 'covidcxr[dicom]'``). Header values that are not finite (NaN, infinity):
  a window or VOI LUT that cannot be applied is ignored with a logged warning (also in
  :attr:`LoadedImage.notes`) and the image min-max scaled, since a window only sets contrast;
  a RescaleSlope / RescaleIntercept that is not finite raises :class:`NonFiniteValueError`,
  since nothing recovers what the stored values mean.

Masks (:func:`read_mask`) go through the same reader and are thresholded at 0.5.

Bad files raise a subclass of :class:`ImageReadError` (itself a ``ValueError``) that names the
file, says what is wrong and, where there is one, how to fix it. A missing file (or a broken
symbolic link) raises ``FileNotFoundError``.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
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


def load_image(path: str | Path, *, max_pixels: int = MAX_PIXELS) -> LoadedImage:
    """Read a PNG, JPEG or DICOM file into the covidcxr convention (see the module docstring).

    Raises ``FileNotFoundError`` for a missing file or a broken symbolic link, and an
    :class:`ImageReadError` subclass for a file that is not a regular file, empty, of another
    format (:class:`UnsupportedFormatError`), truncated, too large, (DICOM) without pixel data, or
    whose values are not finite (:class:`NonFiniteValueError`).
    """
    path = Path(path)
    with _open_regular_file(path) as handle:
        if os.fstat(handle.fileno()).st_size == 0:
            raise EmptyFileError(path, "the file is empty (0 bytes)", "Re-export or re-copy it.")
        header = handle.read(_HEADER_BYTES)
        handle.seek(0)
        return _load(path, handle, detect_format(header), path.suffix.lower(), max_pixels)


def load_image_bytes(
    data: bytes, name: str = "upload", *, max_pixels: int = MAX_PIXELS
) -> LoadedImage:
    """:func:`load_image` for an image held in memory (an upload): nothing touches the disk.

    ``name`` stands for the file in error messages. The format is decided by the content, never
    by a name, with the same rule as for files: PNG, JPEG and DICOM are read; any other format
    raises :class:`UnsupportedFormatError` (``error.detected`` names it), content of no known
    format :class:`NotAnImageError`. This is the one entry point a service should call on
    uploaded bytes.
    """
    if not data:
        raise EmptyFileError(name, "the file is empty (0 bytes)", "Re-export or re-copy it.")
    return _load(Path(name), io.BytesIO(data), detect_format(data[:_HEADER_BYTES]), "", max_pixels)


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


def read_image(path: str | Path, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image file into a float32 ``(H, W)`` array in ``[0, 1]``, bright = dense."""
    return load_image(path, max_pixels=max_pixels).image


def read_mask(path: str | Path, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read a lung mask file (grey, or RGB with equal channels) into a bool ``(H, W)`` array."""
    return read_image(path, max_pixels=max_pixels) >= 0.5


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


def _load(
    path: Path, source: BinaryIO, kind: str | None, suffix: str, max_pixels: int
) -> LoadedImage:
    """The one dispatch by content (``kind``, from :func:`detect_format`) for files and bytes;
    ``suffix`` only lets a ``.dcm`` file of unrecognised content be tried as DICOM."""
    if kind == "DICOM" or (kind is None and suffix in DICOM_SUFFIXES):
        from covidcxr.dicom import load_dicom

        loaded = load_dicom(path, max_pixels, source)
    elif kind in ("PNG", "JPEG"):
        loaded = _load_pillow(path, max_pixels, source, kind)
    elif kind is not None:
        what = next(text for name, text, _ in _OTHER_FORMATS if name == kind)
        named = f" despite its {suffix} name" if suffix else ""
        raise UnsupportedFormatError(
            path,
            kind,
            f"is {what} (recognised from its content{named}), not a PNG, JPEG or DICOM image",
            f"{_SUPPORTED_HINT} Convert it to PNG first (any image editor, or Pillow: "
            "Image.open(path).save('image.png')).",
        )
    else:
        raise NotAnImageError(path, "is not a PNG, JPEG or DICOM image", _SUPPORTED_HINT)
    return _checked(path, loaded)


def _checked(path: Path, loaded: LoadedImage) -> LoadedImage:
    """The last guard of the convention: a finite float32 (H, W) array in [0, 1]."""
    image = loaded.image
    if image.ndim != 2 or image.size == 0:
        raise UnsupportedImageError(path, f"decodes to an array of shape {image.shape}, not (H, W)")
    finite = np.isfinite(image)
    if not finite.all():
        bad = int(image.size - np.count_nonzero(finite))
        raise NonFiniteValueError(
            path,
            f"{bad:,} of its {image.size:,} pixels decode to NaN or infinity",
            "Re-export the image from its source (for DICOM, check its header values in a viewer).",
        )
    if image.dtype != np.float32 or float(image.min()) < 0.0 or float(image.max()) > 1.0:
        image = np.clip(image, 0.0, 1.0).astype(np.float32)
        loaded = LoadedImage(image=image, info=loaded.info, notes=loaded.notes)
    return loaded


# --------------------------------------------------------------------------------------------
# PNG / JPEG

# The Pillow plugins allowed for each recognised format: Pillow must not pick another one.
# (JPEG's factory itself returns an MPO image for a multi-picture JPEG; naming "MPO" here would
# fail with a KeyError until that plugin happens to be registered.)
_PILLOW_FORMATS = {"PNG": ["PNG"], "JPEG": ["JPEG"]}


def _load_pillow(path: Path, max_pixels: int, source: BinaryIO, kind: str) -> LoadedImage:
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        # Pillow's own bomb check (a warning, then an error) would fire at its own limit; ours
        # comes first, before any pixel is decoded, and is an error.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            opened = Image.open(source, formats=_PILLOW_FORMATS[kind])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageTooLargeError(path, f"declares an image too large to decode ({error})") from None
    except UnidentifiedImageError:
        raise TruncatedImageError(
            path,
            f"starts like a {kind} file but its header is corrupt or cut off",
            "Re-export or re-copy the file.",
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise TruncatedImageError(path, f"the image header is corrupt ({error})") from None

    with opened as image:
        width, height = image.size
        if width * height > max_pixels or width <= 0 or height <= 0:
            raise ImageTooLargeError(
                path,
                f"declares {width}×{height} pixels, more than the allowed {max_pixels:,}",
                "If this is a genuine image, pass a larger max_pixels.",
            )
        try:
            image.load()
            if image.format in ("JPEG", "MPO"):
                image = ImageOps.exif_transpose(image)
            info = ImageInfo(
                format=opened.format or kind,
                width=width,
                height=height,
                mode=image.mode,
                bit_depth=_pillow_bit_depth(image.mode),
            )
            array = _pillow_to_unit_grey(image)
        except (OSError, SyntaxError, ValueError, EOFError) as error:
            raise TruncatedImageError(
                path,
                f"the image data is truncated or corrupt ({error})",
                "Re-export or re-copy the file.",
            ) from None
    return LoadedImage(image=array, info=info)


def _pillow_bit_depth(mode: str) -> int:
    if mode == "1":
        return 1
    if mode.startswith("I;16") or mode == "I":
        return 16
    if mode in ("F", "I;32"):
        return 32
    return 8


def _pillow_to_unit_grey(image) -> np.ndarray:
    mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        # 16-bit PNGs open as "I;16" (or "I" in some Pillow versions): full 16-bit range.
        values = np.asarray(image).astype(np.float32) / 65535.0
        return np.clip(values, 0.0, 1.0)
    if mode == "F":
        return np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
    if mode == "LA":
        image = image.getchannel("L")
    elif mode != "L":
        image = image.convert("L")
    return np.asarray(image, dtype=np.float32) / 255.0


def unique_name(name: str, used: set[str]) -> str:
    """``name``, or ``name-1``, ``name-2``… if taken: the first not in ``used`` (which gets it).
    Output files and folders named after inputs that share a name (``a/x.png``, ``b/x.png``)."""
    candidate, number = name, 1
    while candidate in used:
        candidate, number = f"{name}-{number}", number + 1
    used.add(candidate)
    return candidate
