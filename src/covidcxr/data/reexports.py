"""Re-exports of a real film, the kinds the public copies of the database hold: crops, another
scale or aspect, borders, a burnt-in letter, a text line, JPEG. The twin matcher's tests and
benchmark (``benchmarks/bench_twins.py``) are built from them; :func:`reexports` is public so a
user can measure the matcher on films of their own."""

from __future__ import annotations

import numpy as np


def reexports(image: np.ndarray) -> dict[str, np.ndarray]:
    """Edited copies of ``image`` (uint8 (H, W)) by name, each uint8 2-D."""
    import cv2

    height, width = image.shape
    out = {
        "crop 3 % all round": image[
            int(0.03 * height) : height - int(0.03 * height),
            int(0.03 * width) : width - int(0.03 * width),
        ],
        "crop 5 % of one side": image[:, int(0.05 * width) :],
        "crop 8 % of two sides": image[int(0.08 * height) :, : width - int(0.08 * width)],
        "half size": cv2.resize(image, (width // 2, height // 2), interpolation=cv2.INTER_AREA),
        "224 x 224": cv2.resize(image, (224, 224), interpolation=cv2.INTER_AREA),
        "256 x 256": cv2.resize(image, (256, 256), interpolation=cv2.INTER_AREA),
        "black border": cv2.copyMakeBorder(
            image,
            height // 12,
            height // 12,
            width // 12,
            width // 12,
            cv2.BORDER_CONSTANT,
            value=0,
        ),
        "white border": cv2.copyMakeBorder(
            image,
            height // 20,
            height // 10,
            width // 20,
            width // 20,
            cv2.BORDER_CONSTANT,
            value=255,
        ),
    }
    letter = image.copy()
    thickness = max(2, height // 100)
    cv2.putText(letter, "L", (width // 12, height // 6), 0, height / 150, 255, thickness)
    out["burnt-in letter"] = letter
    text = image.copy()
    cv2.putText(
        text, "PORTABLE AP", (width // 3, height // 12), 0, height / 400, 255, max(1, height // 250)
    )
    out["text line"] = text
    _, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 70])
    out["JPEG 70"] = cv2.imdecode(encoded, cv2.IMREAD_GRAYSCALE)
    return out
