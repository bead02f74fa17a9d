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
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np

from covidcxr.formats import (
    _HEADER_BYTES,
    _OTHER_FORMATS,
    _SUPPORTED_HINT,
    DICOM_SUFFIXES,
    IMAGE_SUFFIXES,
    MAX_PIXELS,
    NOT_UTF8_REASON,
    SUPPORTED_FORMATS,
    SUPPORTED_SUFFIXES,
    DicomDecoderMissingError,
    EmptyFileError,
    ImageInfo,
    ImageReadError,
    ImageTooLargeError,
    LoadedImage,
    MissingPixelDataError,
    NonFiniteValueError,
    NotAnImageError,
    TruncatedImageError,
    UnsupportedFormatError,
    UnsupportedImageError,
    _open_regular_file,
    detect_format,
    escape_path,
    failure_reason,
    file_kind,
    file_problem,
    is_dicom,
    is_utf8_path,
    sniff_format,
)

# The names of covidcxr.formats are covidcxr.io's too: readers import them from here.
__all__ = [
    "DICOM_SUFFIXES",
    "IMAGE_SUFFIXES",
    "MAX_PIXELS",
    "NOT_UTF8_REASON",
    "SUPPORTED_FORMATS",
    "SUPPORTED_SUFFIXES",
    "DicomDecoderMissingError",
    "EmptyFileError",
    "ImageInfo",
    "ImageReadError",
    "ImageTooLargeError",
    "LoadedImage",
    "MissingPixelDataError",
    "NonFiniteValueError",
    "NotAnImageError",
    "TruncatedImageError",
    "UnsupportedFormatError",
    "UnsupportedImageError",
    "detect_format",
    "escape_path",
    "failure_reason",
    "file_kind",
    "file_problem",
    "is_dicom",
    "is_utf8_path",
    "load_image",
    "load_image_bytes",
    "read_image",
    "read_mask",
    "sniff_format",
    "unique_name",
]


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


def read_image(path: str | Path, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image file into a float32 ``(H, W)`` array in ``[0, 1]``, bright = dense."""
    return load_image(path, max_pixels=max_pixels).image


def read_mask(path: str | Path, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read a lung mask file (grey, or RGB with equal channels) into a bool ``(H, W)`` array."""
    return read_image(path, max_pixels=max_pixels) >= 0.5


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
