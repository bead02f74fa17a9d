"""Builders of small synthetic test files (PNG, JPEG, DICOM) and the real sample's location."""

from __future__ import annotations

from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
REAL_SAMPLE = REPO.parent / "shared" / "data" / "real-sample"
REAL_DATASET = REAL_SAMPLE / "COVID-19_Radiography_Dataset"


def write_png(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    """Write ``array`` (uint8 or uint16; (H, W) or (H, W, C)) as a PNG, creating folders."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    if mode is not None:
        image = image.convert(mode)
    image.save(path)
    return path


def gradient(height: int = 33, width: int = 47) -> np.ndarray:
    """A uint8 (H, W) left-to-right ramp from 0 to 255 (odd sizes catch shape bugs)."""
    row = np.linspace(0, 255, width).round().astype(np.uint8)
    return np.repeat(row[None, :], height, axis=0)


def write_dicom(
    path: Path,
    pixels: np.ndarray | None,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    preamble: bool = True,
    **attributes,
) -> Path:
    """Write a single-frame DX DICOM file with ``pixels`` (uint16 (H, W), or (F, H, W) for a
    multi-frame object, or None for no pixel data) and any extra ``attributes``."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = meta.MediaStorageSOPClassUID
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.Modality = "DX"
    dataset.PatientName = "Test^Phantom"
    if pixels is not None:
        if pixels.ndim == 3:
            dataset.NumberOfFrames = pixels.shape[0]
        dataset.Rows, dataset.Columns = pixels.shape[-2:]
        dataset.SamplesPerPixel = 1
        dataset.PhotometricInterpretation = photometric
        dataset.BitsAllocated = 16
        dataset.BitsStored = bits_stored
        dataset.HighBit = bits_stored - 1
        dataset.PixelRepresentation = 0
        dataset.PixelData = pixels.astype(np.uint16).tobytes()
    for name, value in attributes.items():
        setattr(dataset, name, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.save_as(path, enforce_file_format=preamble)
    return path


def save_untrained(
    folder: Path,
    model: str = "tiny-cnn",
    *,
    lungs: str = "none",
    temperature: float = 1.0,
    seed: int = 0,
    class_names: tuple[str, ...] = ("Normal", "COVID", "Viral Pneumonia"),
) -> Path:
    """A saved classifier with freshly initialised (seeded) weights, as `covidcxr train`
    writes one; with ``lungs`` crop or mask, a seeded tiny-unet is bundled as its segmenter."""
    import torch

    from covidcxr.inference.artifact import SEGMENTER_DIR, load_model, save_classifier
    from covidcxr.inference.artifact import save_untrained as save_initialised

    save_initialised(
        folder, model, class_names, seed, temperature=temperature,
        lungs={"mode": lungs, "margin": 0.05, "masks": "segmenter"},
        metrics={"test_accuracy": 0.5},
    )  # fmt: skip
    if lungs != "none":
        bundled = save_initialised(folder / SEGMENTER_DIR, "tiny-unet", ["lung"], seed)
        segmenter = load_model(bundled)
        with torch.no_grad():  # zero output weights, positive bias: all "lung", never empty
            segmenter.network.unet.final_conv.weight.zero_()
            segmenter.network.unet.final_conv.bias.fill_(2.0)
        save_classifier(bundled, segmenter.network, segmenter.card)
    return folder


def real_images(root: Path, count: int | None = None) -> list[Path]:
    """The real-sample X-rays (not masks), sorted."""
    files = sorted(p for p in root.rglob("images/*.png"))
    return files if count is None else files[:count]
