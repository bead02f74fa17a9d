"""Twins: the same radiograph exported twice, with another crop, scale, border or burnt-in text.

The perceptual hash of :mod:`covidcxr.data.duplicates` links copies that differ in size,
encoding and bit depth, but a crop of 2 % per side already moves its hash by 38–66 bits, and
the public collections behind the COVID-19 Radiography Database hold many such re-exports. This
module finds them in three steps, all on a 64×64 *twin thumbnail* per image
(:func:`twin_thumbnail`: uniform borders trimmed, then squashed to a square, as the database's own
256×256 and 299×299 copies are):

1. **Views.** Each thumbnail gives :data:`VIEWS`: the whole, nine crops at 92 % shifted by up to
   4 % either way, and a centre crop at 84 %, each reduced to a standardised 16×16 vector.
2. **Candidates.** Within each block of images (a class folder: twins of one film carry one
   label), every image's views are compared with every other image's whole view (one matrix
   product per view). An image whose view matches another's whole is its crop's parent. The
   :data:`CANDIDATES` best partners with a correlation of at least :data:`MIN_CANDIDATE` are
   kept.
3. **Confirmation.** The fine detail (thumbnail minus its Gaussian blur, outliers such as burnt-in
   letters clipped) of the central 60 % of one image is searched inside the other's at a few
   scales around the one the views suggest (OpenCV's normalised template matching). A pair whose
   best match reaches :data:`MIN_TWIN_SCORE` is a twin. Twins of different classes are left to
   the hash (callers pass the class as the block).

Calibration (``benchmarks/bench_twins.py`` prints these; the tests assert the first two):

* The 44 real-sample films, each against 11 re-exports of itself (:mod:`covidcxr.data.reexports`:
  crops of 3 % all round, 5 % of one side, 8 % of two sides; half size; 224×224 and 256×256;
  black and white borders; a burnt-in letter; a text line; JPEG 70), one at a time: 96.7 % of the
  484 pairs score at least 0.88 (98.6 % at least 0.85); the misses are burnt-in text and crops.
* The 1,892 ordered pairs of distinct sample films: at most 0.67.
* The 10,073 films of the public copy (``recipes/real_data.py``), pairs looked at by hand: at
  0.85–0.86 several were two films of one patient (another marker, a gastric bubble that moved);
  from 0.87 up nearly all were one film re-exported (new crop or exposure, text added or
  removed); at 0.70–0.77 they were distinct films, mostly follow-ups. :data:`MIN_TWIN_SCORE` is
  0.88, so that a follow-up film is not called a twin; two films of one patient are the
  manifest's ``group`` column's job (:mod:`covidcxr.data.splits`). 57 pairs pass it there; the
  hash alone found 3.

Cost: the candidates are one matrix product per view and block, the confirmations ~2 ms a pair
on one core (five resize-and-match steps). On a 21,165-film stand-in of the whole database
(``bench_twins.py --stand-in``: real films at the database's class sizes, 470 known twin pairs)
the grouping took 42 s on 2 cores beyond 53–64 s of decoding, and found 465 of the 470 pairs;
``covidcxr data inspect`` on it ran 104–114 s in all.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

TWIN_SIZE = 64
"""Side of the twin thumbnail."""
VIEW_SIZE = 16
BORDER_STD = 4.0 / 255.0
"""A row or column whose grey levels vary less than this (on [0, 1]) is a uniform border."""
_SHIFTS = (-0.04, 0.0, 0.04)
VIEWS: tuple[tuple[float, float, float], ...] = (
    (1.0, 0.0, 0.0),
    *((0.92, dy, dx) for dy in _SHIFTS for dx in _SHIFTS),
    (0.84, 0.0, 0.0),
)
"""(scale, shift down, shift right) of each view, as fractions of the thumbnail's side."""
CANDIDATES = 2
MIN_CANDIDATE = 0.9
MIN_TWIN_SCORE = 0.88
TEMPLATE_FRACTION = 0.6
_ROWS_PER_BLOCK = 1024


def twin_thumbnail(image: np.ndarray) -> np.ndarray:
    """The uint8 (TWIN_SIZE, TWIN_SIZE) thumbnail twins are found on: ``image`` (float (H, W) in
    [0, 1]) with its uniform borders trimmed, squashed to a square (area averaging)."""
    import cv2

    if not isinstance(image, np.ndarray) or image.ndim != 2 or image.size == 0:
        raise ValueError(
            f"image should be a non-empty 2-D grey array, got {getattr(image, 'shape', image)}"
        )
    trimmed = np.asarray(image, dtype=np.float32)
    for _ in range(3):  # a white frame round a black band: the band is uniform once framed off
        top, bottom = _content(trimmed.std(axis=1))
        left, right = _content(trimmed.std(axis=0))
        if (top, left) == (0, 0) and (bottom, right) == trimmed.shape:
            break
        trimmed = trimmed[top:bottom, left:right]
    trimmed = np.ascontiguousarray(trimmed)
    small = cv2.resize(trimmed, (TWIN_SIZE, TWIN_SIZE), interpolation=cv2.INTER_AREA)
    return np.clip(np.rint(small * 255.0), 0, 255).astype(np.uint8)


def _content(spread: np.ndarray) -> tuple[int, int]:
    """First and past-last index of the non-uniform rows (columns); all of them when trimming
    would leave less than half (a mostly flat image is not all border)."""
    varied = np.flatnonzero(spread >= BORDER_STD)
    if varied.size == 0 or varied[-1] + 1 - varied[0] < spread.size // 2:
        return 0, spread.size
    return int(varied[0]), int(varied[-1]) + 1


def view_vectors(thumbnails: np.ndarray) -> np.ndarray:
    """float32 (N, len(VIEWS), VIEW_SIZE²): each view of each thumbnail, standardised to zero
    mean and unit length (so a dot product is a correlation)."""
    import cv2

    count = len(thumbnails)
    out = np.empty((count, len(VIEWS), VIEW_SIZE * VIEW_SIZE), dtype=np.float32)
    for index, (scale, down, right) in enumerate(VIEWS):
        top, left, side = _window(scale, down, right)
        for row in range(count):
            crop = thumbnails[row, top : top + side, left : left + side].astype(np.float32)
            small = cv2.resize(crop, (VIEW_SIZE, VIEW_SIZE), interpolation=cv2.INTER_AREA)
            out[row, index] = small.ravel()
    out -= out.mean(axis=2, keepdims=True)
    out /= np.linalg.norm(out, axis=2, keepdims=True) + 1e-6
    return out


def _window(scale: float, down: float, right: float) -> tuple[int, int, int]:
    side = round(TWIN_SIZE * scale)
    top = round((TWIN_SIZE - side) / 2 + down * TWIN_SIZE)
    left = round((TWIN_SIZE - side) / 2 + right * TWIN_SIZE)
    clamp = TWIN_SIZE - side
    return min(max(top, 0), clamp), min(max(left, 0), clamp), side


def candidate_pairs(
    vectors: np.ndarray, blocks: Sequence[int] | np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs worth confirming: ``(first, second, view)`` int arrays, ``first``'s view ``view``
    matching ``second``'s whole at correlation >= MIN_CANDIDATE, at most CANDIDATES per image.
    Only images with the same ``blocks`` label (N,) are compared (None: all)."""
    count = len(vectors)
    labels = np.zeros(count, dtype=np.int64) if blocks is None else np.asarray(blocks)
    firsts, seconds, views = [], [], []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if members.size < 2:
            continue
        whole = np.ascontiguousarray(vectors[members, 0])
        keep = min(CANDIDATES, members.size - 1)
        for start in range(0, members.size, _ROWS_PER_BLOCK):
            rows = members[start : start + _ROWS_PER_BLOCK]
            best = vectors[rows, 0] @ whole.T
            for view in range(1, len(VIEWS)):
                np.maximum(best, vectors[rows, view] @ whole.T, out=best)
            best[np.arange(rows.size), start + np.arange(rows.size)] = -2.0  # not itself
            top = np.argpartition(-best, keep - 1, axis=1)[:, :keep]
            picked = np.take_along_axis(best, top, axis=1)
            row_index, slot = np.nonzero(picked >= MIN_CANDIDATE)
            parent, child = rows[row_index], members[top[row_index, slot]]
            # which view made the match: recomputed for the few pairs kept
            per_view = np.einsum("pvd,pd->pv", vectors[parent], vectors[child, 0])
            firsts.append(parent)
            seconds.append(child)
            views.append(per_view.argmax(axis=1).astype(np.int64))
    if not firsts:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    return np.concatenate(firsts), np.concatenate(seconds), np.concatenate(views)


def _detail(thumbnail: np.ndarray) -> np.ndarray:
    """Fine detail with its outliers (burnt-in letters, wires' edges) clipped at 3 robust sd."""
    import cv2

    grey = thumbnail.astype(np.float32)
    detail = grey - cv2.GaussianBlur(grey, (0, 0), 2.0)
    spread = 1.4826 * float(np.median(np.abs(detail))) + 1e-3
    return np.clip(detail, -3 * spread, 3 * spread)


def twin_score(parent: np.ndarray, child: np.ndarray, scale: float = 1.0) -> float:
    """How well the central detail of ``child`` is found inside ``parent`` (both twin
    thumbnails) resized by about ``1 / scale`` (the child's view scale in the parent): the best
    normalised cross-correlation over a few scales and every shift, in [-1, 1]."""
    import cv2

    side = int(TWIN_SIZE * TEMPLATE_FRACTION)
    offset = (TWIN_SIZE - side) // 2
    template = _detail(child)[offset : offset + side, offset : offset + side]
    best = -1.0
    for across, down in SCALE_STEPS:
        width = max(side + 2, round(TWIN_SIZE * across / scale))
        height = max(side + 2, round(TWIN_SIZE * down / scale))
        method = cv2.INTER_AREA if width * height < TWIN_SIZE**2 else cv2.INTER_LINEAR
        resized = cv2.resize(parent.astype(np.float32), (width, height), interpolation=method)
        match = cv2.matchTemplate(_detail(resized), template, cv2.TM_CCOEFF_NORMED)
        best = max(best, float(match.max()))
    return best


SCALE_STEPS = ((0.94, 0.94), (1.0, 1.0), (1.06, 1.06), (0.95, 1.0), (1.0, 0.95))
"""(across, down) resize factors tried in :func:`twin_score`: three uniform, and two that
undo the squash of a film cropped on one side only."""


def find_twins(
    thumbnails: np.ndarray,
    blocks: Sequence[int] | np.ndarray | None = None,
    workers: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Confirmed twin pairs among ``thumbnails`` (N, TWIN_SIZE, TWIN_SIZE) uint8:
    ``(first, second, score)`` with first < second, each pair once. The confirmations run in
    ``workers`` processes (default: the decoding default) once there are many."""
    thumbnails = np.asarray(thumbnails)
    if thumbnails.ndim != 3 or thumbnails.shape[1:] != (TWIN_SIZE, TWIN_SIZE):
        raise ValueError(
            f"thumbnails should be (N, {TWIN_SIZE}, {TWIN_SIZE}) from twin_thumbnail, "
            f"got shape {thumbnails.shape}"
        )
    first, second, view = candidate_pairs(view_vectors(thumbnails), blocks)
    # each direction is its own candidate (which one is the crop decides how it is scored)
    _, unique = np.unique(first * max(1, len(thumbnails)) + second, return_index=True)
    first, second, view = first[unique], second[unique], view[unique]
    scales = np.array([VIEWS[v][0] for v in view.tolist()])
    chunks = [
        (
            thumbnails[first[i : i + _PAIRS_PER_JOB]],
            thumbnails[second[i : i + _PAIRS_PER_JOB]],
            scales[i : i + _PAIRS_PER_JOB],
        )
        for i in range(0, first.size, _PAIRS_PER_JOB)
    ]
    if len(chunks) > 1:
        from covidcxr.pool import parallel_map

        scores = np.concatenate(list(parallel_map(_score_chunk, chunks, workers, chunksize=1)))
    else:
        scores = np.concatenate([_score_chunk(c) for c in chunks]) if chunks else np.zeros(0)
    keep = scores >= MIN_TWIN_SCORE
    low, high = np.minimum(first, second)[keep], np.maximum(first, second)[keep]
    best: dict[tuple[int, int], float] = {}
    for a, b, score in zip(low.tolist(), high.tolist(), scores[keep].tolist(), strict=True):
        best[(a, b)] = max(score, best.get((a, b), -1.0))
    pairs = sorted(best.items())
    return (
        np.array([a for (a, _), _ in pairs], dtype=np.int64),
        np.array([b for (_, b), _ in pairs], dtype=np.int64),
        np.array([score for _, score in pairs], dtype=np.float64),
    )


_PAIRS_PER_JOB = 1000


def _score_chunk(chunk: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    parents, children, scales = chunk
    return np.array(
        [twin_score(p, c, s) for p, c, s in zip(parents, children, scales, strict=True)],
        dtype=np.float64,
    )
