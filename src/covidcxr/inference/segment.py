"""``covidcxr segment predict`` and ``segment evaluate``: lung masks for files, and how good
they are against a dataset's own masks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from covidcxr.inference.artifact import load_segmenter
from covidcxr.io import unique_name

CHUNK = 8


@dataclass
class SegmentResult:
    """One row per segmented file (``path``, ``mask``, ``overlay``, ``lung_fraction``) and the
    files that could not be read."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    failures: list[tuple[Path, str]] = field(default_factory=list)


def segment_files(
    model: Any,
    inputs: Sequence[str | Path],
    out: str | Path,
    postprocess: bool | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SegmentResult:
    """Write ``<name>_mask.png`` (the input's own size, 0/255) and ``<name>_overlay.png`` (the
    lung outline on the X-ray) into ``out`` for every image under ``inputs``. Bad files are
    skipped and listed."""
    from covidcxr.data.overlay import lung_outline_overlay, mask_to_png, save_overlay
    from covidcxr.inference.predict import find_image_files
    from covidcxr.io import ImageReadError, failure_reason, read_image
    from covidcxr.perf import tune_allocator

    tune_allocator()
    segmenter = load_segmenter(model)
    files, failures = find_image_files(inputs)
    result = SegmentResult(failures=list(failures))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    for start in range(0, len(files), CHUNK):
        images, paths = [], []
        for path in files[start : start + CHUNK]:
            try:
                images.append(read_image(path))
                paths.append(path)
            except (ImageReadError, OSError) as error:
                result.failures.append((path, failure_reason(error)))
        masks = segmenter.predict_masks(images, postprocess=postprocess) if images else []
        for path, image, mask in zip(paths, images, masks, strict=True):
            stem = unique_name(path.stem, used)
            mask_path, overlay_path = out / f"{stem}_mask.png", out / f"{stem}_overlay.png"
            mask_to_png(mask).save(mask_path)
            save_overlay(overlay_path, lung_outline_overlay(image, mask))
            result.rows.append(
                {
                    "path": str(path),
                    "mask": str(mask_path),
                    "overlay": str(overlay_path),
                    "lung_fraction": float(mask.mean()),
                }
            )
        if progress is not None:
            progress(min(len(files), start + CHUNK), len(files))
    return result
