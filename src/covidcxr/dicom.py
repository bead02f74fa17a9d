"""DICOM: pixel data into covidcxr's image convention, and the header values fit to show.

:func:`covidcxr.io.load_image` (and ``load_image_bytes``) come here for DICOM content; the
convention and the error classes are :mod:`covidcxr.io`'s. How the pixels get there: the first
frame, then the Modality LUT / rescale, then the first VOI LUT or window (scaled from that
LUT's output range to [0, 1]), else min-max scaling; MONOCHROME1 (or an INVERSE presentation
LUT) is inverted so that bone is bright.

Header values that are not finite numbers
-----------------------------------------
* A window (WindowCenter / WindowWidth) or VOI LUT that is NaN, infinite or maps to NaN or
  infinity is ignored, with a logged warning (kept in ``LoadedImage.notes``), and the image
  min-max scaled: a window only sets contrast, so this is what a viewer shows without one.
* A RescaleSlope / RescaleIntercept (or Modality LUT) that gives NaN or infinity raises
  :class:`NonFiniteValueError`: no contrast choice recovers what the stored values mean (the
  slope's sign alone decides whether bone is bright).
* Float pixel data holding NaN or infinity raises :class:`NonFiniteValueError` too.

Header values shown to a user
-----------------------------
:func:`header_summary` returns a few allow-listed attributes (:data:`SUMMARY_TAGS`), each
checked first: coded values must be one of the attribute's defined terms in DICOM PS3.3 / PS3.16
(:data:`DEFINED_TERMS`), numbers must be in range, and any other text is stripped of control
characters and cut to :data:`MAX_TEXT_LENGTH`. A value that fails is dropped and the reason
noted, never echoed: a free-text ViewPosition has been seen carrying a person's name.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from covidcxr.formats import (
    DicomDecoderMissingError,
    ImageInfo,
    ImageReadError,
    ImageTooLargeError,
    LoadedImage,
    MissingPixelDataError,
    NonFiniteValueError,
    NotAnImageError,
    TruncatedImageError,
    UnsupportedImageError,
    escape_path,
)

logger = logging.getLogger(__name__)


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


def load_dicom(path: Path, max_pixels: int, source: BinaryIO) -> LoadedImage:
    """Parse DICOM content from ``source`` (an open binary file or buffer) into the convention;
    ``path`` names it in errors. Called by :func:`covidcxr.io.load_image` once the content (or
    a DICOM suffix) says DICOM."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        # force: the content was recognised as DICOM already (or the name says .dcm), and old
        # archives write DICOM without the preamble pydicom otherwise insists on.
        dataset = pydicom.dcmread(source, force=True)
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
    notes: list[str] = []
    # NaN and infinity are looked for explicitly below; numpy need not warn about them too.
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        grey = _dicom_to_unit_grey(path, pixels, dataset, photometric, notes)
    return LoadedImage(image=grey, info=info, notes=tuple(notes))


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
    if pixels.ndim not in (2, 3) or pixels.size == 0:
        raise UnsupportedImageError(
            path, f"has pixel data of shape {pixels.shape}, not a 2-D image"
        )
    if pixels.dtype.kind == "f" and not np.isfinite(pixels).all():
        bad = int(pixels.size - np.count_nonzero(np.isfinite(pixels)))
        raise NonFiniteValueError(
            path,
            f"its float pixel data holds {bad:,} NaN or infinite values",
            "Re-export the image from the archive; what those pixels show cannot be known.",
        )
    return pixels


def _dicom_to_unit_grey(
    path: Path, pixels: np.ndarray, dataset, photometric: str, notes: list[str]
) -> np.ndarray:
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi, apply_windowing

    if photometric == "PALETTE COLOR":
        pixels = apply_color_lut(pixels, dataset)
    if pixels.ndim == 3:  # colour (RGB after pydicom's YBR conversion): reduce to luma
        rgb = pixels[..., :3].astype(np.float64)
        return _min_max(rgb @ np.array([0.299, 0.587, 0.114])).astype(np.float32)

    values = apply_modality_lut(pixels, dataset)
    if not np.isfinite(values).all():
        raise _rescale_error(path, dataset)
    voi_items = dataset.get("VOILUTSequence") or []
    has_lut = bool(voi_items) and "LUTDescriptor" in voi_items[0] and "LUTData" in voi_items[0]
    monochrome = photometric in ("MONOCHROME1", "MONOCHROME2")
    window = None if has_lut or not monochrome else _first_window(path, dataset, notes)
    grey = None
    if has_lut:
        descriptor = [int(v) for v in voi_items[0].LUTDescriptor]
        entries, first_mapped = descriptor[0] or 65536, descriptor[1]
        domain = np.arange(first_mapped, first_mapped + entries, dtype=np.int64)
        lut_out = apply_voi(domain, dataset).astype(np.float64)
        low, high = float(lut_out.min()), float(lut_out.max())
        mapped = apply_voi(np.rint(values).astype(np.int64), dataset).astype(np.float64)
        if math.isfinite(low) and math.isfinite(high) and np.isfinite(mapped).all():
            grey = _scale(mapped, low, high)
        else:
            _note(path, notes, "its VOI LUT maps to NaN or infinity; min-max scaled instead")
    elif window is not None:
        windowed = apply_windowing(values.astype(np.float64), dataset)
        # The window maps to [y_min, y_max]; probing far outside the window gives that range.
        centre, width = window
        probe = np.array([centre - 100 * abs(width) - 1, centre + 100 * abs(width) + 1])
        low, high = apply_windowing(probe, dataset).tolist()
        if math.isfinite(low) and math.isfinite(high) and np.isfinite(windowed).all():
            grey = _scale(windowed, min(low, high), max(low, high))
        else:
            _note(
                path,
                notes,
                f"its window (WindowCenter {centre:g}, WindowWidth {width:g}) maps to NaN or "
                "infinity; the window is ignored and the image min-max scaled",
            )
    if grey is None:
        grey = _min_max(values.astype(np.float64))

    inverse = str(dataset.get("PresentationLUTShape", "")).upper() == "INVERSE"
    if (photometric == "MONOCHROME1") != inverse:
        grey = 1.0 - grey
    return grey.astype(np.float32)


def _rescale_error(path: Path, dataset) -> NonFiniteValueError:
    """Why the Modality LUT / rescale gave NaN or infinity, with the fix."""
    for name in ("RescaleSlope", "RescaleIntercept"):
        with contextlib.suppress(Exception):
            value = _dicom_number(dataset[name])
            if value is not None and not math.isfinite(value):
                return NonFiniteValueError(
                    path,
                    f"its {name} is {value}, not a finite number, so its stored pixel values "
                    "cannot be converted to the modality's units",
                    f"Correct {name} in the header (e.g. dcmodify -m {name}="
                    f"{1 if name == 'RescaleSlope' else 0} FILE, if that is its true value) or "
                    "re-export the image from the archive.",
                )
    return NonFiniteValueError(
        path,
        "its Modality LUT / rescale (RescaleSlope, RescaleIntercept) turns the stored pixel "
        "values into NaN or infinity",
        "Check those header values with a DICOM viewer and re-export the image.",
    )


def _first_window(path: Path, dataset, notes: list[str]) -> tuple[float, float] | None:
    """The first (WindowCenter, WindowWidth), or None when there is none to apply: absent,
    empty, of zero (or negative) width, which maps nothing, or not finite (noted)."""
    if "WindowCenter" not in dataset or "WindowWidth" not in dataset:
        return None
    try:
        centre = _dicom_number(dataset["WindowCenter"])
        width = _dicom_number(dataset["WindowWidth"])
    except (TypeError, ValueError, IndexError):
        _note(path, notes, "its WindowCenter / WindowWidth are not numbers; min-max scaled instead")
        return None
    if centre is None or width is None:
        return None
    if not (math.isfinite(centre) and math.isfinite(width)):
        _note(
            path,
            notes,
            f"its window is not finite (WindowCenter {centre}, WindowWidth {width}); the window "
            "is ignored and the image min-max scaled",
        )
        return None
    return (centre, width) if width >= 1 else None


def _dicom_number(element) -> float | None:
    """The first value of a numeric DICOM element as a float; None when it is empty."""
    value = element.value
    if element.VM == 0 or value is None or value == "":
        return None
    return float(value[0]) if element.VM > 1 else float(value)


def _scale(values: np.ndarray, low: float, high: float) -> np.ndarray:
    if high <= low:
        return np.zeros_like(values, dtype=np.float64)
    return np.clip((values - low) / (high - low), 0.0, 1.0)


def _min_max(values: np.ndarray) -> np.ndarray:
    return _scale(values, float(values.min()), float(values.max()))


def _note(path: Path, notes: list[str], message: str) -> None:
    """A warning about one file: logged, and kept for :attr:`LoadedImage.notes`."""
    logger.warning("%s: %s", escape_path(path), message)
    notes.append(message)


# --------------------------------------------------------------------------------------------
# Header values fit to show

#: The attributes :func:`header_summary` returns by default: none of them identifies a patient.
SUMMARY_TAGS: tuple[str, ...] = (
    "Modality",
    "PhotometricInterpretation",
    "ViewPosition",
    "BodyPartExamined",
    "Rows",
    "Columns",
    "BitsStored",
)

#: Longest text returned for an attribute without defined terms (after control characters go).
MAX_TEXT_LENGTH = 64


def _terms(words: str) -> frozenset[str]:
    return frozenset(words.split())


#: The values a coded attribute may take: Modality (PS3.3 C.7.3.1.1.1, defined terms, retired
#: ones left out), PhotometricInterpretation (C.7.6.3.1.2, enumerated), ViewPosition (C.8.11.5,
#: DX positioning; CR uses the same terms), BodyPartExamined (PS3.16 Annex L, the code strings
#: of the common anatomic regions; a value outside this list is dropped, which errs on the side
#: of privacy).
DEFINED_TERMS: dict[str, frozenset[str]] = {
    "Modality": _terms(
        "AR ASMT AU BDUS BI BMD CFM CR CT CTPROTOCOL DG DMS DOC DX ECG EEG EMG EOG EPS ES FID "
        "GM HC HD IO IOL IVOCT IVUS KER KO LEN LS M3D MG MR NM OAM OCT OP OPM OPT OPTBSV OPTENF "
        "OPV OSS OT PA PLAN POS PR PT PX REG RESP RF RG RTDOSE RTIMAGE RTINTENT RTPLAN RTRAD "
        "RTRECORD RTSEGANN RTSTRUCT RWV SEG SM SMR SR SRF STAIN TEXTUREMAP TG US VA XA "
        "XAPROTOCOL XC"
    ),
    "PhotometricInterpretation": frozenset(
        {
            "MONOCHROME1",
            "MONOCHROME2",
            "PALETTE COLOR",
            "RGB",
            "YBR_FULL",
            "YBR_FULL_422",
            "YBR_PARTIAL_420",
            "YBR_PARTIAL_422",
            "YBR_ICT",
            "YBR_RCT",
            "XYB",
        }
    ),
    "ViewPosition": _terms("AP PA LL RL RLD LLD RLO LLO"),
    "BodyPartExamined": _terms(
        "ABDOMEN ABDOMENPELVIS ADRENAL ANKLE AORTA ARM AXILLA BACK BLADDER BRAIN BREAST "
        "BRONCHUS BUTTOCK CALCANEUS CALF CAROTID CEREBELLUM CERVIX CHEEK CHEST CHESTABDOMEN "
        "CHESTABDPELVIS CLAVICLE COCCYX COLON CSPINE CTSPINE DUODENUM EAR ELBOW ESOPHAGUS "
        "EXTREMITY EYE FACE FEMUR FINGER FOOT FOREARM GALLBLADDER HAND HEAD HEADNECK HEART HIP "
        "HUMERUS JAW KIDNEY KNEE LARYNX LEG LIVER LSPINE LSSPINE LUNG MEDIASTINUM NECK "
        "NECKCHEST NECKCHESTABDOMEN NECKCHESTABDPELV NOSE ORBIT PANCREAS PELVIS PHARYNX RIB "
        "SACRUM SCAPULA SHOULDER SKULL SPINE SPLEEN SSPINE STERNUM STOMACH THIGH THUMB THYROID "
        "TIBIA TLSPINE TMJ TOE TRACHEA TSPINE WHOLEBODY WRIST"
    ),
}

# Unsigned 16-bit attributes and the values that make sense for them.
_INTEGER_RANGES: dict[str, tuple[int, int]] = {
    "Rows": (1, 65535),
    "Columns": (1, 65535),
    "BitsStored": (1, 64),
    "BitsAllocated": (1, 64),
    "SamplesPerPixel": (1, 4),
    "NumberOfFrames": (1, 2**31 - 1),
}


@dataclass(frozen=True)
class HeaderSummary:
    """What :func:`header_summary` found: ``values`` that passed their check, and for each
    attribute present but dropped, ``dropped[name]``: why (never the value itself)."""

    values: dict[str, str | int] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)


def header_summary(
    source: bytes | str | Path | Any, tags: Sequence[str] = SUMMARY_TAGS
) -> HeaderSummary:
    """The checked values of ``tags`` in a DICOM header: ``source`` is the file's bytes, its
    path, or a parsed ``pydicom.Dataset``. Absent and empty attributes are left out.

    Raises :class:`covidcxr.io.ImageReadError` when ``source`` is not readable as DICOM.
    """
    dataset = _header_of(source)
    summary = HeaderSummary()
    for name in tags:
        value = dataset.get(name)
        if value is None or value == "":
            continue
        checked, why = _checked_value(name, value)
        if why is None:
            summary.values[name] = checked
        else:
            summary.dropped[name] = why
    return summary


def _header_of(source: bytes | str | Path | Any) -> Any:
    import pydicom

    if isinstance(source, pydicom.Dataset):
        return source
    from covidcxr.formats import is_dicom, sniff_format

    in_memory = isinstance(source, bytes | bytearray)
    name = "the upload" if in_memory else source
    if not (sniff_format(bytes(source[:256])) == "DICOM" if in_memory else is_dicom(source)):
        raise NotAnImageError(name, "is not DICOM content, so it has no DICOM header")
    stream = io.BytesIO(source) if in_memory else source
    try:
        return pydicom.dcmread(stream, stop_before_pixels=True, force=True)
    except FileNotFoundError:
        raise
    except Exception as error:  # pydicom raises many kinds on corrupt headers
        raise TruncatedImageError(
            name, f"the DICOM header cannot be read ({type(error).__name__})"
        ) from None


def _checked_value(name: str, value: Any) -> tuple[str | int, str | None]:
    """``(value to show, None)``, or ``("", why it is dropped)``."""
    from pydicom.multival import MultiValue

    if name in _INTEGER_RANGES:
        low, high = _INTEGER_RANGES[name]
        try:
            number = int(value)
        except (TypeError, ValueError):
            return "", "not an integer"
        if not low <= number <= high:
            return "", f"outside the range {low}..{high}"
        return number, None
    parts = list(value) if isinstance(value, MultiValue) else [value]
    texts = [_clean_text(str(part)) for part in parts]
    terms = DEFINED_TERMS.get(name)
    if terms is not None:
        wrong = [text for text in texts if text.upper() not in terms]
        if wrong or not texts:
            return "", (
                f"not one of its defined terms ({', '.join(sorted(terms)[:12])}"
                + (", ..." if len(terms) > 12 else "")
                + ")"
            )
        return "\\".join(text.upper() for text in texts), None
    text = "\\".join(texts)
    if not text:
        return "", "nothing printable in it"
    return text[:MAX_TEXT_LENGTH], None


def _clean_text(text: str) -> str:
    """``text`` without control, format or unassigned characters (categories C*), trimmed."""
    return "".join(ch for ch in text if unicodedata.category(ch)[0] != "C").strip()
