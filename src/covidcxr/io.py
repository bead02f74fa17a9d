"""Read any supported chest X-ray file into covidcxr's one image convention.

The convention
--------------
Every image covidcxr reads becomes a ``numpy.ndarray`` of

* dtype ``float32``, shape ``(H, W)``: one grey channel, row 0 at the top;
* values in ``[0, 1]``, where 1 is displayed white: dense tissue and bone are bright, air is dark,
  as a radiologist views the film.

How each format gets there:

* PNG / JPEG (Pillow), 8- or 16-bit; grey, RGB, RGBA, palette and the other Pillow modes. Colour
  is reduced to luma (ITU-R 601, Pillow's ``convert("L")``); alpha is dropped (X-rays are opaque);
  the EXIF orientation of JPEGs is applied. 8-bit values are divided by 255, 16-bit by 65535.
* DICOM (pydicom): the first frame, then the Modality LUT / rescale, then the first VOI LUT or
  window when the file has one (scaled from that LUT's output range to [0, 1]); without a VOI the
  image is min-max scaled. MONOCHROME1 (and an INVERSE presentation LUT) is inverted so that bone
  is bright. Compressed transfer syntaxes decode through pydicom's plugins (RLE and JPEG baseline
  always work; JPEG 2000, HTJ2K and JPEG-LS need ``pip install 'covidcxr[dicom]'``).

Masks (:func:`read_mask`) go through the same reader and are thresholded at 0.5.

Bad files raise a subclass of :class:`ImageReadError` (itself a ``ValueError``) that names the
file, says what is wrong and, where there is one, how to fix it. A missing file raises
``FileNotFoundError``.
"""

from __future__ import annotations

import contextlib
import io
import warnings
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


class ImageReadError(ValueError):
    """A file could not be read as an image. ``path`` names it, ``reason`` says why."""

    def __init__(self, path: str | Path, reason: str, hint: str = "") -> None:
        self.path = Path(path)
        self.reason = reason
        self.hint = hint
        message = f"{self.path}: {reason}"
        super().__init__(f"{message}. {hint}" if hint else message)


class EmptyFileError(ImageReadError):
    """The file has zero bytes."""


class NotAnImageError(ImageReadError):
    """The file is neither a supported image format nor DICOM."""


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
    """An image in the covidcxr convention, ``image`` (H, W) float32 in [0, 1], with its info."""

    image: np.ndarray
    info: ImageInfo


def load_image(path: str | Path, *, max_pixels: int = MAX_PIXELS) -> LoadedImage:
    """Read a PNG, JPEG or DICOM file into the covidcxr convention (see the module docstring).

    Raises ``FileNotFoundError`` for a missing file and an :class:`ImageReadError` subclass for a
    file that is empty, not an image, truncated, too large or (DICOM) without pixel data.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if not path.is_file():
        raise NotAnImageError(path, "is a directory, not an image file")
    size = path.stat().st_size
    if size == 0:
        raise EmptyFileError(path, "the file is empty (0 bytes)", "Re-export or re-copy it.")
    if is_dicom(path):
        return _load_dicom(path, max_pixels, force=path.suffix.lower() in DICOM_SUFFIXES)
    return _load_pillow(path, max_pixels)


def load_image_bytes(
    data: bytes, name: str = "upload", *, max_pixels: int = MAX_PIXELS
) -> LoadedImage:
    """:func:`load_image` for an image held in memory (an upload): nothing touches the disk.
    ``name`` stands for the file in error messages. The format is sniffed from the content
    (:func:`sniff_format`), never from a name."""
    if not data:
        raise EmptyFileError(name, "the file is empty (0 bytes)", "Re-export or re-copy it.")
    kind = sniff_format(data)
    if kind == "DICOM":
        return _load_dicom(name, max_pixels, force=True, source=io.BytesIO(data))
    if kind is None:
        raise NotAnImageError(
            name,
            "is not a PNG, JPEG or DICOM image",
            "Supported: PNG and JPEG (8/16-bit), DICOM with pixel data.",
        )
    return _load_pillow(name, max_pixels, source=io.BytesIO(data))


def sniff_format(data: bytes) -> str | None:
    """``"PNG"``, ``"JPEG"`` or ``"DICOM"`` from a file's first bytes, else None.

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


def read_image(path: str | Path, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image file into a float32 ``(H, W)`` array in ``[0, 1]``, bright = dense."""
    return load_image(path, max_pixels=max_pixels).image


def read_mask(path: str | Path, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read a lung mask file (grey, or RGB with equal channels) into a bool ``(H, W)`` array."""
    return read_image(path, max_pixels=max_pixels) >= 0.5


def is_dicom(path: str | Path) -> bool:
    """True when the file has a DICOM suffix or starts like DICOM (:func:`sniff_format`: the
    ``DICM`` preamble, or a bare first header element)."""
    path = Path(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with path.open("rb") as handle:
            return sniff_format(handle.read(256)) == "DICOM"
    except OSError:
        return False


# --------------------------------------------------------------------------------------------
# PNG / JPEG


def _load_pillow(path: str | Path, max_pixels: int, source: BinaryIO | None = None) -> LoadedImage:
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    try:
        # Pillow's own bomb check (a warning, then an error) would fire at its own limit; ours
        # comes first, before any pixel is decoded, and is an error.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            opened = Image.open(path if source is None else source)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageTooLargeError(path, f"declares an image too large to decode ({error})") from None
    except UnidentifiedImageError:
        kind = _sniff_source(path, source)
        if kind is not None:
            raise TruncatedImageError(
                path,
                f"starts like a {kind} file but its header is corrupt or cut off",
                "Re-export or re-copy the file.",
            ) from None
        raise NotAnImageError(
            path,
            "is not a PNG, JPEG or DICOM image",
            "Supported: PNG and JPEG (8/16-bit), DICOM with pixel data.",
        ) from None
    except (OSError, SyntaxError, ValueError) as error:
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
            if image.format == "JPEG":
                image = ImageOps.exif_transpose(image)
        except (OSError, SyntaxError, ValueError, EOFError) as error:
            raise TruncatedImageError(
                path,
                f"the image data is truncated or corrupt ({error})",
                "Re-export or re-copy the file.",
            ) from None
        info = ImageInfo(
            format=opened.format or path.suffix.lstrip(".").upper(),
            width=width,
            height=height,
            mode=image.mode,
            bit_depth=_pillow_bit_depth(image.mode),
        )
        array = _pillow_to_unit_grey(image)
    return LoadedImage(image=array, info=info)


def _sniff_source(path: Path, source: BinaryIO | None) -> str | None:
    """:func:`sniff_format` of the first bytes of ``source`` (or of the file at ``path``)."""
    try:
        if source is not None:
            source.seek(0)
            return sniff_format(source.read(256))
        with path.open("rb") as handle:
            return sniff_format(handle.read(256))
    except OSError:
        return None


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


# --------------------------------------------------------------------------------------------
# DICOM

# Which pip packages decode which compressed transfer syntaxes (pydicom's plugin names).
_DICOM_DECODER_HINTS: dict[str, str] = {
    "1.2.840.10008.1.2.4.80": "pyjpegls",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81": "pyjpegls",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90": "pylibjpeg pylibjpeg-openjpeg",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91": "pylibjpeg pylibjpeg-openjpeg",  # JPEG 2000
    "1.2.840.10008.1.2.4.201": "pylibjpeg pylibjpeg-openjpeg",  # HTJ2K lossless
    "1.2.840.10008.1.2.4.202": "pylibjpeg pylibjpeg-openjpeg",  # HTJ2K lossless RPCL
    "1.2.840.10008.1.2.4.203": "pylibjpeg pylibjpeg-openjpeg",  # HTJ2K
    "1.2.840.10008.1.2.4.57": "python-gdcm",  # JPEG lossless
    "1.2.840.10008.1.2.4.70": "python-gdcm",  # JPEG lossless SV1
}


def _load_dicom(
    path: str | Path, max_pixels: int, force: bool, source: BinaryIO | None = None
) -> LoadedImage:
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    try:
        dataset = pydicom.dcmread(path if source is None else source, force=force)
    except InvalidDicomError:
        raise NotAnImageError(path, "is not a valid DICOM file") from None
    except Exception as error:  # pydicom raises many kinds on corrupt headers
        raise TruncatedImageError(
            path, f"the DICOM header is truncated or corrupt ({type(error).__name__}: {error})"
        ) from None
    try:
        return _dicom_image(path, dataset, max_pixels)
    except ImageReadError:
        raise
    except Exception as error:  # values pydicom cannot apply (bad LUTs, VRs, rescale...)
        raise TruncatedImageError(
            path,
            f"the DICOM file cannot be converted to an image ({type(error).__name__}: {error})",
            "Check the file with a DICOM viewer; re-export it from the archive.",
        ) from None


def _dicom_image(path: Path, dataset, max_pixels: int) -> LoadedImage:
    """The image of a parsed DICOM dataset, in the covidcxr convention."""
    if not any(tag in dataset for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        modality = dataset.get("Modality", "unknown modality")
        sop = getattr(dataset.get("SOPClassUID", None), "name", "unknown SOP class")
        raise MissingPixelDataError(
            path,
            f"the DICOM file has no pixel data ({modality}, {sop})",
            "Export the image series rather than reports or header-only objects.",
        )
    try:
        rows, columns = int(dataset.Rows), int(dataset.Columns)
    except (AttributeError, TypeError, ValueError):
        raise TruncatedImageError(path, "the DICOM file lacks Rows / Columns") from None
    if rows * columns > max_pixels:
        raise ImageTooLargeError(
            path,
            f"declares {columns}×{rows} pixels, more than the allowed {max_pixels:,}",
            "If this is a genuine image, pass a larger max_pixels.",
        )
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    info = ImageInfo(
        format="DICOM",
        width=columns,
        height=rows,
        mode=photometric,
        bit_depth=int(dataset.get("BitsStored", dataset.get("BitsAllocated", 0)) or 0),
    )
    pixels = _decode_dicom_pixels(path, dataset)
    return LoadedImage(image=_dicom_to_unit_grey(pixels, dataset, photometric), info=info)


def _decode_dicom_pixels(path: Path, dataset) -> np.ndarray:
    from pydicom.pixels import pixel_array

    syntax = dataset.file_meta.get("TransferSyntaxUID") if hasattr(dataset, "file_meta") else None
    try:
        # Only the first frame of a multi-frame object is decoded: radiographs are single-frame.
        frames = int(dataset.get("NumberOfFrames", 1) or 1)
        pixels = pixel_array(dataset, index=0 if frames > 1 else None)
    except (RuntimeError, NotImplementedError) as error:
        message = str(error)
        compressed = False
        with contextlib.suppress(Exception):  # an unknown syntax UID has no is_compressed
            compressed = syntax is not None and bool(syntax.is_compressed)
        if compressed and (
            "missing" in message.lower() or "no pixel data decoders" in message.lower()
        ):
            packages = _DICOM_DECODER_HINTS.get(
                str(syntax), "pylibjpeg pylibjpeg-openjpeg pyjpegls"
            )
            raise DicomDecoderMissingError(
                path,
                f"its pixel data is compressed with {syntax.name} ({syntax}) and no installed "
                "decoder plugin handles it",
                f"Install one: pip install {packages}  (or pip install 'covidcxr[dicom]').",
            ) from None
        raise TruncatedImageError(
            path, f"the DICOM pixel data cannot be decoded ({error})"
        ) from None
    except (ValueError, EOFError, KeyError, AttributeError, TypeError) as error:
        raise TruncatedImageError(
            path, f"the DICOM pixel data is truncated or corrupt ({error})"
        ) from None
    if pixels.ndim == 3 and pixels.shape[-1] not in (3, 4):
        raise UnsupportedImageError(
            path, f"has pixel data of shape {pixels.shape}, not a 2-D image"
        )
    return pixels


def _dicom_to_unit_grey(pixels: np.ndarray, dataset, photometric: str) -> np.ndarray:
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi, apply_windowing

    if photometric == "PALETTE COLOR":
        pixels = apply_color_lut(pixels, dataset)
    if pixels.ndim == 3:  # colour (RGB after pydicom's YBR conversion): reduce to luma
        rgb = pixels[..., :3].astype(np.float64)
        return _min_max(rgb @ np.array([0.299, 0.587, 0.114]))

    values = apply_modality_lut(pixels, dataset)
    voi_items = dataset.get("VOILUTSequence") or []
    has_lut = bool(voi_items) and "LUTDescriptor" in voi_items[0] and "LUTData" in voi_items[0]
    # A window of zero (or negative) width maps nothing: treat the image as unwindowed.
    has_window = (
        "WindowCenter" in dataset and "WindowWidth" in dataset and _first_window(dataset)[1] >= 1
    )
    if has_lut:
        descriptor = [int(v) for v in voi_items[0].LUTDescriptor]
        entries, first_mapped = descriptor[0] or 65536, descriptor[1]
        domain = np.arange(first_mapped, first_mapped + entries, dtype=np.int64)
        lut_out = apply_voi(domain, dataset).astype(np.float64)
        low, high = float(lut_out.min()), float(lut_out.max())
        values = apply_voi(np.rint(values).astype(np.int64), dataset).astype(np.float64)
        grey = _scale(values, low, high)
    elif has_window and photometric in ("MONOCHROME1", "MONOCHROME2"):
        windowed = apply_windowing(values.astype(np.float64), dataset)
        # The window maps to [y_min, y_max]; probing far outside the window gives that range.
        centre, width = _first_window(dataset)
        probe = np.array([centre - 100 * abs(width) - 1, centre + 100 * abs(width) + 1])
        low, high = apply_windowing(probe, dataset).tolist()
        grey = _scale(windowed, min(low, high), max(low, high))
    else:
        grey = _min_max(values.astype(np.float64))

    inverse = str(dataset.get("PresentationLUTShape", "")).upper() == "INVERSE"
    if (photometric == "MONOCHROME1") != inverse:
        grey = 1.0 - grey
    return grey.astype(np.float32)


def _first_window(dataset) -> tuple[float, float]:
    def first(element) -> float:
        return float(element.value[0]) if element.VM > 1 else float(element.value)

    return first(dataset["WindowCenter"]), first(dataset["WindowWidth"])


def _scale(values: np.ndarray, low: float, high: float) -> np.ndarray:
    if high <= low:
        return np.zeros_like(values, dtype=np.float64)
    return np.clip((values - low) / (high - low), 0.0, 1.0)


def _min_max(values: np.ndarray) -> np.ndarray:
    return _scale(values, float(values.min()), float(values.max()))


def unique_name(name: str, used: set[str]) -> str:
    """``name``, or ``name-1``, ``name-2``… if taken: the first not in ``used`` (which gets it).
    Output files and folders named after inputs that share a name (``a/x.png``, ``b/x.png``)."""
    candidate, number = name, 1
    while candidate in used:
        candidate, number = f"{name}-{number}", number + 1
    used.add(candidate)
    return candidate
