"""``covidcxr predict``: class probabilities for image files, bad files listed and skipped."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

CHUNK = 256


@dataclass
class PredictionResult:
    """Per-file predictions (``rows``), the files that could not be read, and where the output
    went."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    failures: list[tuple[Path, str]] = field(default_factory=list)
    out: Path | None = None


def find_image_files(inputs: Iterable[str | Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Expand files and folders (recursively) into image files, in a stable order. Inside a
    folder, lung masks (files under a ``masks/`` folder, as in the database) are skipped.
    Inputs that do not exist are returned as failures, not raised."""
    from covidcxr.data.layouts import is_image_file, is_mask_path

    files: list[Path] = []
    missing: list[tuple[Path, str]] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
            files.extend(
                p for p in found if is_image_file(p) and not is_mask_path(p.relative_to(path))
            )
        elif path.is_file():
            files.append(path)
        else:
            missing.append((path, "no such file or folder"))
    return files, missing


def predict_files(
    model: Any,
    inputs: Sequence[str | Path],
    out: str | Path | None = None,
    batch_size: int = 64,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    seg_model: str | Path | None = None,
) -> PredictionResult:
    """Predict every image under ``inputs`` with ``model`` (a path or a loaded
    :class:`covidcxr.artifact.Classifier`). With ``out`` (``.csv`` or ``.json``) the rows are
    written there too. Unreadable files are skipped and listed in ``failures``. A classifier
    trained on lungs only (``--lungs``) segments them first, with its bundled segmenter or
    ``seg_model``."""
    import torch

    from covidcxr.artifact import Classifier, load_model
    from covidcxr.data.scan import parallel_map
    from covidcxr.engine.perf import tune_allocator

    tune_allocator()
    classifier = model if isinstance(model, Classifier) else load_model(model)
    if not isinstance(classifier, Classifier):
        raise ValueError(
            f"{model}: is a lung segmentation model; use `covidcxr segment predict` for masks"
        )
    if seg_model is not None:
        classifier.use_segmenter(seg_model)
    if classifier.lung_mode != "none":
        classifier.segmenter  # noqa: B018  (fail now, before reading thousands of files)
    files, failures = find_image_files(inputs)
    result = PredictionResult(failures=failures)
    names = classifier.class_names
    done = 0
    size = classifier.card.input_size
    for start in range(0, len(files), CHUNK):
        chunk = files[start : start + CHUNK]
        # workers decode and resize, so only small uint8 arrays travel between processes
        decoded = list(parallel_map(_read_resized, [(p, size) for p in chunk], workers))
        good = [
            (path, image)
            for path, (image, _) in zip(chunk, decoded, strict=True)
            if image is not None
        ]
        result.failures.extend(
            (path, error) for path, (_, error) in zip(chunk, decoded, strict=True) if error
        )
        if good:
            batch = torch.from_numpy(np.stack([image for _, image in good])).unsqueeze(1)
            probabilities = classifier.predict_prepared(batch, batch_size)
            for (path, _), row in zip(good, probabilities, strict=True):
                best = int(np.argmax(row))
                result.rows.append(
                    {
                        "path": str(path),
                        "predicted": names[best],
                        "confidence": float(row[best]),
                        **{f"p_{name}": float(p) for name, p in zip(names, row, strict=True)},
                    }
                )
        done += len(chunk)
        if progress is not None:
            progress(done, len(files))
    if out is not None:
        result.out = write_predictions(result, Path(out), names)
    return result


def write_predictions(result: PredictionResult, out: Path, class_names: Sequence[str]) -> Path:
    """Write the rows as CSV (``.csv``) or JSON (any other suffix), atomically; the JSON also
    lists the failures."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    if out.suffix.lower() == ".csv":
        columns = ["path", "predicted", "confidence", *[f"p_{name}" for name in class_names]]
        with partial.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(result.rows)
    else:
        failures = [{"path": str(p), "reason": r} for p, r in result.failures]
        payload = {
            "class_names": list(class_names),
            "predictions": result.rows,
            "failures": failures,
        }
        partial.write_text(json.dumps(payload, indent=2), encoding="utf-8")
    os.replace(partial, out)
    return out


def _read_resized(job: tuple[Path, int | None]) -> tuple[np.ndarray | None, str | None]:
    """uint8 (size, size) of one file (or the float image itself when size is None), or the
    reason it could not be read."""
    from covidcxr.data.transforms import resize_image
    from covidcxr.io import ImageReadError, read_image

    path, size = job
    try:
        image = read_image(path)
        return (image if size is None else resize_image(image, (size, size))), None
    except (ImageReadError, OSError) as error:
        reason = error.reason if isinstance(error, ImageReadError) else str(error)
        return None, reason
