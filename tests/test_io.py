"""covidcxr.io: every supported format reaches the one convention; every bad file gets its error."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from covidcxr.io import (
    DicomDecoderMissingError,
    EmptyFileError,
    ImageReadError,
    ImageTooLargeError,
    MissingPixelDataError,
    NotAnImageError,
    TruncatedImageError,
    is_dicom,
    load_image,
    read_image,
    read_mask,
)
from helpers import gradient, write_dicom, write_png


def assert_convention(image: np.ndarray, shape: tuple[int, int]) -> None:
    assert image.dtype == np.float32
    assert image.shape == shape
    assert image.min() >= 0.0 and image.max() <= 1.0


# --------------------------------------------------------------------------- PNG / JPEG


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "LA", "1"])
def test_png_modes_reach_the_convention(tmp_path: Path, mode: str) -> None:
    ramp = gradient()
    path = write_png(tmp_path / f"ramp-{mode}.png", ramp, mode=mode)
    loaded = load_image(path)
    assert_convention(loaded.image, (33, 47))
    assert loaded.info.mode == mode
    assert (loaded.info.width, loaded.info.height) == (47, 33)
    if mode in ("L", "RGB", "RGBA", "LA"):  # lossless grey paths keep the exact ramp
        np.testing.assert_allclose(loaded.image, ramp / 255.0, atol=1e-6)
    # dark on the left, bright on the right, whatever the mode
    assert loaded.image[:, 0].mean() < 0.1 and loaded.image[:, -1].mean() > 0.9


def test_rgb_with_colour_becomes_luma(tmp_path: Path) -> None:
    rgb = np.zeros((5, 6, 3), dtype=np.uint8)
    rgb[..., 0] = 255  # pure red
    image = read_image(write_png(tmp_path / "red.png", rgb))
    np.testing.assert_allclose(image, 76 / 255.0, atol=1 / 255)  # ITU-R 601: 0.299 * 255


def test_sixteen_bit_png_uses_the_full_range(tmp_path: Path) -> None:
    values = np.array([[0, 256, 32768, 65535]], dtype=np.uint16)
    path = tmp_path / "sixteen.png"
    Image.fromarray(values).save(path)
    loaded = load_image(path)
    assert loaded.info.bit_depth == 16
    np.testing.assert_allclose(loaded.image, values / 65535.0, atol=1e-6)


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_jpeg(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "ramp.jpg"
    Image.fromarray(gradient()).convert(mode).save(path, quality=95)
    loaded = load_image(path)
    assert loaded.info.format == "JPEG"
    assert_convention(loaded.image, (33, 47))
    np.testing.assert_allclose(loaded.image, gradient() / 255.0, atol=0.05)


def test_jpeg_exif_orientation_is_applied(tmp_path: Path) -> None:
    path = tmp_path / "rotated.jpeg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    Image.fromarray(gradient(10, 20)).save(path, exif=exif)
    assert read_image(path).shape == (20, 10)


# --------------------------------------------------------------------------- DICOM

RAMP_12BIT = (np.arange(48 * 64).reshape(48, 64) % 4096).astype(np.uint16)


def test_dicom_monochrome2_min_max(tmp_path: Path) -> None:
    loaded = load_image(write_dicom(tmp_path / "m2.dcm", RAMP_12BIT))
    assert loaded.info.format == "DICOM"
    assert loaded.info.mode == "MONOCHROME2" and loaded.info.bit_depth == 12
    assert_convention(loaded.image, (48, 64))
    np.testing.assert_allclose(loaded.image, RAMP_12BIT / RAMP_12BIT.max(), atol=1e-6)


def test_dicom_monochrome1_is_inverted(tmp_path: Path) -> None:
    normal = read_image(write_dicom(tmp_path / "m2.dcm", RAMP_12BIT))
    inverted = read_image(write_dicom(tmp_path / "m1.dcm", RAMP_12BIT, photometric="MONOCHROME1"))
    np.testing.assert_allclose(inverted, 1.0 - normal, atol=1e-6)


def test_dicom_sixteen_bit(tmp_path: Path) -> None:
    pixels = np.array([[0, 1000], [40000, 65535]], dtype=np.uint16)
    loaded = load_image(write_dicom(tmp_path / "b16.dcm", pixels, bits_stored=16))
    assert loaded.info.bit_depth == 16
    np.testing.assert_allclose(loaded.image, pixels / 65535.0, atol=1e-6)


def test_dicom_window_maps_the_window_to_zero_one(tmp_path: Path) -> None:
    pixels = np.array([[0, 500, 1000, 1500, 4000]], dtype=np.uint16)
    path = write_dicom(tmp_path / "window.dcm", pixels, WindowCenter=1000, WindowWidth=1000)
    image = read_image(path)
    assert image[0, 0] == 0.0 and image[0, 1] == pytest.approx(0.0, abs=2e-3)
    assert image[0, 2] == pytest.approx(0.5, abs=2e-3)
    assert image[0, 3] == pytest.approx(1.0, abs=2e-3) and image[0, 4] == 1.0


def test_dicom_rescale_then_window(tmp_path: Path) -> None:
    # stored 0..4095 with HU = 2 * stored - 1024; a window centred on 0 HU, 400 wide
    pixels = np.array([[312, 412, 512, 612, 712]], dtype=np.uint16)  # -400, -200, 0, 200, 400 HU
    path = write_dicom(
        tmp_path / "rescaled.dcm",
        pixels,
        RescaleSlope=2,
        RescaleIntercept=-1024,
        WindowCenter=0,
        WindowWidth=400,
    )
    np.testing.assert_allclose(read_image(path)[0], [0, 0, 0.5, 1, 1], atol=3e-3)


def test_dicom_voi_lut_sequence(tmp_path: Path) -> None:
    from pydicom.dataset import Dataset

    item = Dataset()
    item.LUTDescriptor = [4, 0, 16]  # 4 entries from stored value 0, 16-bit output
    item.add_new(0x00283006, "US", [0, 1000, 3000, 4000])  # LUT Data
    pixels = np.array([[0, 1, 2, 3, 9]], dtype=np.uint16)
    path = write_dicom(tmp_path / "lut.dcm", pixels, VOILUTSequence=[item])
    # output range of the LUT (0..4000) maps to [0, 1]; values past the LUT take its last entry
    np.testing.assert_allclose(read_image(path)[0], [0, 0.25, 0.75, 1, 1], atol=1e-6)


def test_dicom_multiframe_reads_the_first_frame(tmp_path: Path) -> None:
    frames = np.stack([RAMP_12BIT, 4095 - RAMP_12BIT])
    image = read_image(write_dicom(tmp_path / "frames.dcm", frames))
    np.testing.assert_allclose(image, RAMP_12BIT / RAMP_12BIT.max(), atol=1e-6)


def test_dicom_without_suffix_is_sniffed(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "IM0001", RAMP_12BIT)
    assert is_dicom(path)
    assert read_image(path).shape == (48, 64)


def test_dicom_rle_compressed_matches_uncompressed(tmp_path: Path) -> None:
    import pydicom
    from pydicom.uid import RLELossless

    plain = write_dicom(tmp_path / "plain.dcm", RAMP_12BIT)
    dataset = pydicom.dcmread(plain)
    dataset.compress(RLELossless)
    dataset.save_as(tmp_path / "rle.dcm")
    np.testing.assert_array_equal(read_image(tmp_path / "rle.dcm"), read_image(plain))


def test_dicom_missing_decoder_plugin_names_the_package(tmp_path: Path) -> None:
    import pydicom
    from pydicom.uid import JPEGLSLossless

    dataset = pydicom.dcmread(write_dicom(tmp_path / "plain.dcm", RAMP_12BIT))
    dataset.compress(JPEGLSLossless)  # needs pyjpegls, installed with covidcxr[dicom]
    path = tmp_path / "jpegls.dcm"
    dataset.save_as(path)
    np.testing.assert_allclose(read_image(path), RAMP_12BIT / RAMP_12BIT.max(), atol=1e-6)

    # Now as on a machine without the plugins: their imports fail in a fresh interpreter.
    blocked = ["pylibjpeg", "openjpeg", "libjpeg", "jpeg_ls", "_CharLS", "gdcm", "rle"]
    script = (
        "import sys\n"
        f"for name in {blocked!r}: sys.modules[name] = None\n"
        "from covidcxr.io import read_image, DicomDecoderMissingError\n"
        "try:\n"
        f"    read_image({str(path)!r})\n"
        "except DicomDecoderMissingError as error:\n"
        "    print('MISSING', error)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "MISSING" in result.stdout
    assert str(path) in result.stdout and "pip install pyjpegls" in result.stdout
    assert "JPEG-LS" in result.stdout
    assert issubclass(DicomDecoderMissingError, ImageReadError)


def test_dicom_without_pixel_data(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "report.dcm", None)
    with pytest.raises(MissingPixelDataError, match="no pixel data") as caught:
        read_image(path)
    assert caught.value.path == path and str(path) in str(caught.value)


def test_dicom_truncated_pixel_data(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "cut.dcm", RAMP_12BIT)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 2000])
    with pytest.raises(TruncatedImageError, match="truncated or corrupt"):
        read_image(path)


# --------------------------------------------------------------------------- bad files


def test_missing_file() -> None:
    with pytest.raises(FileNotFoundError, match=r"no-such\.png"):
        read_image("no-such.png")


def test_directory_is_not_an_image(tmp_path: Path) -> None:
    with pytest.raises(NotAnImageError, match="directory"):
        read_image(tmp_path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.touch()
    with pytest.raises(EmptyFileError, match="empty") as caught:
        read_image(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".txt"])
def test_not_an_image(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"notes{suffix}"
    path.write_text("patient notes, not a picture\n" * 20)
    with pytest.raises(NotAnImageError, match="not a PNG, JPEG or DICOM") as caught:
        read_image(path)
    assert caught.value.path == path


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_image(tmp_path: Path, suffix: str) -> None:
    rng = np.random.default_rng(0)
    full = tmp_path / f"full{suffix}"
    Image.fromarray(rng.integers(0, 255, (200, 200), dtype=np.uint8)).save(full)
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(TruncatedImageError, match="truncated") as caught:
        read_image(cut)
    assert str(cut) in str(caught.value)


def _png_with_declared_size(path: Path, width: int, height: int) -> Path:
    """A tiny valid PNG whose IHDR is rewritten to claim width × height (a decompression bomb)."""
    write_png(path, np.zeros((2, 2), dtype=np.uint8))
    data = bytearray(path.read_bytes())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr : ihdr + 17]))
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", crc)
    path.write_bytes(bytes(data))
    return path


def test_decompression_bomb_header(tmp_path: Path) -> None:
    path = _png_with_declared_size(tmp_path / "bomb.png", 100_000, 100_000)
    with pytest.raises(ImageTooLargeError, match=r"too large|more than the allowed"):
        read_image(path)


def test_max_pixels_is_configurable(tmp_path: Path) -> None:
    path = write_png(tmp_path / "ramp.png", gradient())
    with pytest.raises(ImageTooLargeError, match="47×33"):
        read_image(path, max_pixels=1000)
    dicom = write_dicom(tmp_path / "big.dcm", RAMP_12BIT)
    with pytest.raises(ImageTooLargeError):
        read_image(dicom, max_pixels=1000)


# --------------------------------------------------------------------------- real files


def test_every_real_sample_image_and_mask_reads(real_dataset: Path) -> None:
    images = sorted(real_dataset.glob("*/images/*.png"))
    assert len(images) == 44
    for path in images:
        loaded = load_image(path)
        assert_convention(loaded.image, (loaded.info.height, loaded.info.width))
        assert loaded.image.std() > 0.05, f"{path} looks blank"
    rgb = load_image(real_dataset / "Viral Pneumonia" / "images" / "Viral Pneumonia-140.png")
    assert rgb.info.mode == "RGB" and rgb.image.ndim == 2
    mask = read_mask(real_dataset / "Viral Pneumonia" / "masks" / "Viral Pneumonia-1.png")
    assert mask.dtype == bool and mask.shape == (256, 256)
    assert 0.1 < mask.mean() < 0.6  # two lungs, not everything


def test_bytes_are_read_like_files(tmp_path: Path) -> None:
    from covidcxr.io import load_image_bytes, sniff_format

    png = write_png(tmp_path / "a.png", gradient())
    dicom = write_dicom(tmp_path / "a", (np.arange(20 * 30).reshape(20, 30) * 6).astype(np.uint16))
    bare = write_dicom(tmp_path / "b", np.ones((4, 4), np.uint16), preamble=False)
    assert sniff_format(png.read_bytes()) == "PNG"
    assert sniff_format(dicom.read_bytes()) == "DICOM"
    assert sniff_format(bare.read_bytes()) == "DICOM"
    assert sniff_format(b"GIF89a....") is None and sniff_format(b"") is None
    for path in (png, dicom):
        from_bytes = load_image_bytes(path.read_bytes(), "upload")
        from_file = load_image(path)
        assert np.array_equal(from_bytes.image, from_file.image)
        assert from_bytes.info == from_file.info


def test_bad_bytes_name_the_upload_and_say_why() -> None:
    from covidcxr.io import EmptyFileError, NotAnImageError, TruncatedImageError, load_image_bytes

    with pytest.raises(EmptyFileError, match=r"^my-upload: the file is empty"):
        load_image_bytes(b"", "my-upload")
    with pytest.raises(NotAnImageError, match="not a PNG, JPEG or DICOM"):
        load_image_bytes(b"plain text", "my-upload")
    with pytest.raises(TruncatedImageError, match="starts like a PNG file"):
        load_image_bytes(b"\x89PNG\r\n\x1a\n" + bytes(30), "my-upload")


# --------------------------------------------------------------------------- values not finite


@pytest.mark.filterwarnings("ignore:Invalid value for VR DS:UserWarning")
@pytest.mark.parametrize(
    ("centre", "width"), [("NaN", 400), (2048, "inf"), ("-inf", "NaN"), (2048, "nan")]
)
def test_dicom_window_not_finite_falls_back_to_min_max(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, centre: object, width: object
) -> None:
    path = write_dicom(
        tmp_path / "bad-window.dcm", RAMP_12BIT, WindowCenter=centre, WindowWidth=width
    )
    with caplog.at_level("WARNING", logger="covidcxr"):
        loaded = load_image(path)
    assert_convention(loaded.image, (48, 64))
    # what the file shows without a window: the min-max scaled image
    np.testing.assert_allclose(loaded.image, RAMP_12BIT / RAMP_12BIT.max(), atol=1e-6)
    assert loaded.notes and "window" in loaded.notes[0] and "min-max" in loaded.notes[0]
    assert str(path) in caplog.text and "not finite" in caplog.text


def test_dicom_valid_window_reads_without_notes(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "w.dcm", RAMP_12BIT, WindowCenter=1000, WindowWidth=1000)
    assert load_image(path).notes == ()


@pytest.mark.filterwarnings("ignore:Invalid value for VR DS:UserWarning")
@pytest.mark.parametrize(
    ("attributes", "named"),
    [
        ({"RescaleSlope": "NaN", "RescaleIntercept": 0}, "RescaleSlope"),
        ({"RescaleSlope": "inf", "RescaleIntercept": 0}, "RescaleSlope"),
        ({"RescaleSlope": 1, "RescaleIntercept": "-inf"}, "RescaleIntercept"),
        (
            {"RescaleSlope": "NaN", "RescaleIntercept": 0, "WindowCenter": 0, "WindowWidth": 9},
            "RescaleSlope",
        ),
    ],
)
def test_dicom_rescale_not_finite_is_an_error_naming_the_file(
    tmp_path: Path, attributes: dict, named: str
) -> None:
    from covidcxr.io import NonFiniteValueError

    path = write_dicom(tmp_path / "bad-rescale.dcm", RAMP_12BIT, **attributes)
    with pytest.raises(NonFiniteValueError, match=named) as caught:
        read_image(path)
    message = str(caught.value)
    assert str(path) in message and "not a finite number" in message and "dcmodify" in message
    with pytest.raises(NonFiniteValueError, match=named):
        from covidcxr.io import load_image_bytes

        load_image_bytes(path.read_bytes(), "the upload")


def test_dicom_rescale_overflow_is_an_error(tmp_path: Path) -> None:
    from covidcxr.io import NonFiniteValueError

    path = write_dicom(tmp_path / "huge.dcm", RAMP_12BIT, RescaleSlope="1e308", RescaleIntercept=0)
    with pytest.raises(NonFiniteValueError, match="NaN or infinity"):
        read_image(path)


def test_dicom_float_pixels_not_finite(tmp_path: Path) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from covidcxr.io import NonFiniteValueError

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.30"  # parametric map: float pixels
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID, dataset.SOPInstanceUID = meta.MediaStorageSOPClassUID, generate_uid()
    pixels = np.linspace(0, 1, 33 * 47, dtype=np.float32).reshape(33, 47)
    dataset.Rows, dataset.Columns = pixels.shape
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
    dataset.BitsAllocated = 32
    dataset.FloatPixelData = pixels.tobytes()
    good = tmp_path / "float.dcm"
    dataset.save_as(good, enforce_file_format=True)
    np.testing.assert_allclose(read_image(good), pixels, atol=1e-6)
    pixels[3, 4] = np.nan
    dataset.FloatPixelData = pixels.tobytes()
    bad = tmp_path / "float-nan.dcm"
    dataset.save_as(bad, enforce_file_format=True)
    with pytest.raises(NonFiniteValueError, match="1 NaN or infinite") as caught:
        read_image(bad)
    assert str(bad) in str(caught.value)


def test_the_last_guard_refuses_any_non_finite_pixel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever a decoder returns, a NaN never leaves covidcxr.io."""
    import covidcxr.dicom
    from covidcxr.io import LoadedImage, NonFiniteValueError

    def broken(path, max_pixels, source):
        image = np.full((4, 5), np.nan, dtype=np.float32)
        return LoadedImage(image=image, info=None)  # type: ignore[arg-type]

    monkeypatch.setattr(covidcxr.dicom, "load_dicom", broken)
    path = write_dicom(tmp_path / "x.dcm", RAMP_12BIT)
    with pytest.raises(NonFiniteValueError, match="20 of its 20 pixels") as caught:
        read_image(path)
    assert str(path) in str(caught.value)


# --------------------------------------------------------------------------- formats by content


@pytest.mark.parametrize(
    ("pillow_format", "detected"),
    [("GIF", "GIF"), ("TIFF", "TIFF"), ("BMP", "BMP"), ("WEBP", "WebP"), ("PPM", "PNM")],
)
def test_other_formats_are_refused_by_content_whatever_the_name(
    tmp_path: Path, pillow_format: str, detected: str
) -> None:
    from covidcxr.io import UnsupportedFormatError, detect_format, load_image_bytes

    path = tmp_path / "disguised.png"
    Image.fromarray(gradient()).save(path, format=pillow_format)
    assert detect_format(path.read_bytes()[:256]) == detected
    with pytest.raises(UnsupportedFormatError) as caught:
        read_image(path)
    error = caught.value
    assert error.detected == detected and error.path == path
    message = str(error)
    assert str(path) in message and detected in message and ".png name" in message
    assert "Supported: PNG and JPEG" in message
    # the service's entry point gives the same answer for the same bytes
    with pytest.raises(UnsupportedFormatError, match=detected) as from_bytes:
        load_image_bytes(path.read_bytes(), "the upload")
    assert from_bytes.value.detected == detected


def test_a_name_that_disagrees_with_supported_content_is_fine(tmp_path: Path) -> None:
    png = write_png(tmp_path / "really-a-png.png", gradient())
    for disguise in ("x.jpg", "x.dcm", "x.gif", "no-suffix"):
        target = tmp_path / disguise
        target.write_bytes(png.read_bytes())
        loaded = load_image(target)
        assert loaded.info.format == "PNG"
        np.testing.assert_allclose(loaded.image, gradient() / 255.0, atol=1e-6)
    dicom = write_dicom(tmp_path / "d.dcm", RAMP_12BIT)
    (tmp_path / "dicom.png").write_bytes(dicom.read_bytes())
    assert load_image(tmp_path / "dicom.png").info.format == "DICOM"


def test_detect_format_names_documents_and_archives() -> None:
    from covidcxr.io import SUPPORTED_FORMATS, detect_format

    assert SUPPORTED_FORMATS == ("PNG", "JPEG", "DICOM")
    assert detect_format(b"%PDF-1.7\n") == "PDF"
    assert detect_format(b"PK\x03\x04" + bytes(30)) == "ZIP"
    assert detect_format(b"\x1f\x8b\x08" + bytes(20)) == "gzip"
    assert detect_format(b"BMW owners manual, not a bitmap") is None
    assert detect_format(b"plain text") is None


# --------------------------------------------------------------------------- not regular files


def test_fifo_is_not_a_regular_file_and_is_never_opened(tmp_path: Path) -> None:
    import signal

    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)

    def blocked(signum, frame):
        raise AssertionError("the reader opened the FIFO and blocked")

    previous = signal.signal(signal.SIGALRM, blocked)
    signal.alarm(10)
    try:
        with pytest.raises(NotAnImageError, match="FIFO") as caught:
            read_image(fifo)
        assert "not a regular file" in str(caught.value) and "directory" not in str(caught.value)
        assert str(fifo) in str(caught.value)
        bare_fifo = tmp_path / "IM0001"  # no suffix: is_dicom would sniff its first bytes
        os.mkfifo(bare_fifo)
        assert not is_dicom(bare_fifo)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_broken_symbolic_link_says_so(tmp_path: Path) -> None:
    link = tmp_path / "gone.png"
    link.symlink_to(tmp_path / "deleted.png")
    with pytest.raises(FileNotFoundError, match="broken symbolic link") as caught:
        read_image(link)
    assert str(link) in str(caught.value) and "deleted.png" in str(caught.value)
    loop = tmp_path / "loop.png"
    loop.symlink_to(loop)
    with pytest.raises(NotAnImageError, match="cannot be followed"):
        read_image(loop)


def test_a_name_that_is_not_utf8_reads_and_errors_print(tmp_path: Path) -> None:
    from covidcxr.io import escape_path, is_utf8_path

    name = os.fsdecode(b"Normal-\xff.png")
    path = write_png(tmp_path / name, gradient())
    assert not is_utf8_path(path) and escape_path(path).endswith("Normal-\\xff.png")
    assert read_image(path).shape == (33, 47)  # readable: only file listings leave it out
    empty = tmp_path / os.fsdecode(b"empty-\xe9.png")
    empty.touch()
    with pytest.raises(EmptyFileError) as caught:
        read_image(empty)
    str(caught.value).encode("utf-8")  # printable, with the byte as \xe9
    assert "empty-\\xe9.png" in str(caught.value)
