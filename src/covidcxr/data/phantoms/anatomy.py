"""Drawing one synthetic chest X-ray phantom: :func:`render_phantom` (anatomy, the class's
pattern inside the lungs, exposure and noise) and its lung mask.

Each class has its own pattern inside the lungs (Normal: clear; COVID: bilateral peripheral
lower-zone ground glass; Viral Pneumonia: diffuse perihilar reticulonodular texture; Lung Opacity:
one dense focal consolidation). Global brightness and contrast are redrawn per image from one
distribution shared by all classes, and the per-image noise level varies more than the class
texture changes PNG size, so neither image statistics nor file properties give the class away.

Geometry is drawn in normalised coordinates: ``x`` from -1 (image left, the patient's right) to
+1, ``y`` from -1 (top) to +1; one unit is half the image width.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from covidcxr.data.classes import ALL_CLASS_NAMES, canonical_class_name

__all__ = ["render_phantom"]


# --------------------------------------------------------------------------------------------
# Noise and drawing helpers. Everything is float32 and FFT- or filter-based: a phantom must
# render in a few tens of milliseconds, and small matrix products are avoided because
# multi-threaded BLAS stalls on a busy machine.
# --------------------------------------------------------------------------------------------


def _frequencies(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Squared spatial frequencies (cycles per pixel) of a (size, size) rfft2 grid."""
    fy = np.fft.fftfreq(size).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(size).astype(np.float32)[None, :]
    return fy**2, fx**2


def _fft_blur(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian blur with periodic borders; cheaper than ``gaussian_filter`` for wide kernels."""
    fy2, fx2 = _frequencies(image.shape[0])
    transfer = np.exp((fy2 + fx2) * np.float32(-2 * np.pi**2 * sigma_px**2))
    return np.fft.irfft2(np.fft.rfft2(image) * transfer, s=image.shape).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Zero-mean, unit-std periodic noise of shape (size, size) with features about
    ``size / cells`` pixels across."""
    band = min(cells + 2, size // 2 - 1)
    rows = np.r_[0 : band + 1, size - band : size]
    envelope_y = np.fft.fftfreq(size)[rows] * size
    envelope_x = np.arange(band + 1)
    envelope = np.exp(-(envelope_y[:, None] ** 2 + envelope_x[None, :] ** 2) / (cells / 2) ** 2)
    spectrum = np.zeros((size, size // 2 + 1), dtype=np.complex64)
    shape = (rows.size, band + 1)
    spectrum[rows, : band + 1] = envelope * (
        rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    )
    spectrum[0, 0] = 0
    field = np.fft.irfft2(spectrum, s=(size, size)).astype(np.float32)
    return field / (field.std() + 1e-12)


def _soft_step(value: np.ndarray, width: float) -> np.ndarray:
    """Smooth 0→1 transition of ``value`` across zero, over about ``width`` on either side."""
    t = np.clip(value * (0.5 / width) + 0.5, 0, 1)
    return t * t * (3 - 2 * t)


def _gaussian(x: np.ndarray, y: np.ndarray, cx: float, cy: float, sigma: float) -> np.ndarray:
    return np.exp(((x - cx) ** 2 + (y - cy) ** 2) * (-0.5 / sigma**2))


@dataclass(frozen=True)
class _Pose:
    """Maps anatomical coordinates to pixels: rotation, zoom and shift of the patient."""

    size: int
    angle: float
    zoom: float
    shift_x: float
    shift_y: float

    def grid(self) -> tuple[np.ndarray, np.ndarray]:
        """Anatomical (x, y) of every pixel centre, each of shape (size, size)."""
        axis = ((np.arange(self.size) + 0.5) / self.size * 2 - 1).astype(np.float32)
        gx, gy = np.meshgrid(axis - self.shift_x, axis - self.shift_y)
        cos, sin = float(np.cos(self.angle)), float(np.sin(self.angle))
        return (cos * gx + sin * gy) / self.zoom, (cos * gy - sin * gx) / self.zoom

    def to_pixels(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, column) pixel positions of anatomical points."""
        cos, sin = float(np.cos(self.angle)), float(np.sin(self.angle))
        gx = self.shift_x + self.zoom * (cos * x - sin * y)
        gy = self.shift_y + self.zoom * (sin * x + cos * y)
        return (gy + 1) / 2 * self.size - 0.5, (gx + 1) / 2 * self.size - 0.5


def _branching_tree(
    rng: np.random.Generator,
    origin: tuple[float, float],
    trunk_angles: np.ndarray,
    trunk_length: float,
    generations: int,
    step: float,
) -> list[np.ndarray]:
    """Points (n, 2) along a randomly branching tree, one array per generation: each branch
    wanders a little and splits in two at its end, the children shorter."""
    count = trunk_angles.size
    starts = np.tile(np.asarray(origin, dtype=np.float64), (count, 1))
    angles = trunk_angles.astype(np.float64)
    lengths = np.full(count, trunk_length) * rng.uniform(0.8, 1.2, count)
    levels = []
    for _ in range(generations):
        steps = max(2, int(lengths.mean() / step))
        headings = angles[:, None] + np.cumsum(rng.normal(0, 0.06, (angles.size, steps)), axis=1)
        stride = (lengths / steps)[:, None]
        xs = starts[:, :1] + stride * np.cumsum(np.cos(headings), axis=1)
        ys = starts[:, 1:] + stride * np.cumsum(np.sin(headings), axis=1)
        levels.append(np.stack([xs.ravel(), ys.ravel()], axis=1))
        spread = rng.uniform(0.25, 0.6, angles.size)
        starts = np.repeat(np.stack([xs[:, -1], ys[:, -1]], axis=1), 2, axis=0)
        angles = np.repeat(headings[:, -1], 2) + np.tile([-1.0, 1.0], angles.size) * np.repeat(
            spread, 2
        )
        angles += rng.normal(0, 0.1, angles.size)
        lengths = np.repeat(lengths, 2) * rng.uniform(0.55, 0.8, angles.size)
    return levels


def _draw_lines(
    pose: _Pose, levels: list[np.ndarray], widths_px: list[float], weights: list[float]
) -> np.ndarray:
    """Rasterise point lists (about one point per pixel) as lines: points of level ``k`` are
    splatted with weight ``weights[k]`` and blurred by ``widths_px[k]`` (levels of equal width
    share one blur). Returns (size, size) float32 with lines peaking near their weight."""
    size = pose.size
    out = np.zeros((size, size), dtype=np.float32)
    for width in sorted(set(widths_px), reverse=True):
        canvas = np.zeros(size * size)
        for level, level_width, weight in zip(levels, widths_px, weights, strict=True):
            if level_width != width:
                continue
            rows, cols = pose.to_pixels(level[:, 0], level[:, 1])
            rows, cols = np.round(rows).astype(np.int64), np.round(cols).astype(np.int64)
            keep = (rows >= 0) & (rows < size) & (cols >= 0) & (cols < size)
            canvas += weight * np.bincount(rows[keep] * size + cols[keep], minlength=size * size)
        # A line sampled once per pixel, blurred by sigma, peaks near 1 / (sqrt(2 pi) sigma).
        canvas = canvas.reshape(size, size).astype(np.float32)
        out += ndimage.gaussian_filter(canvas, width) * np.float32(2.5 * width)
    return out


# --------------------------------------------------------------------------------------------
# Anatomy
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Lung:
    side: int  # -1: image left (patient's right lung), +1: image right (patient's left lung)
    medial: float  # |x| of the medial edge
    lateral: float  # |x| of the lateral edge
    apex: float  # y of the apex
    base: float  # y of the costophrenic angle
    dome: float  # how far the diaphragm dome rises, as a fraction of the lung height

    def point(self, across: float, down: float) -> tuple[float, float]:
        """Anatomical (x, y) of a point given as fractions from the medial edge and the apex."""
        x = self.side * (self.medial + across * (self.lateral - self.medial))
        return x, self.apex + down * (self.base - self.apex)

    def region(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Boolean lung region before the heart is cut out and the border roughened."""
        across = (self.side * x - self.medial) / (self.lateral - self.medial)
        down = (y - self.apex) / (self.base - self.apex)
        medial_edge = 0.45 * np.clip(1 - down / 0.3, 0, None) ** 2
        lateral_edge = 1 - 0.6 * np.clip(1 - down / 0.6, 0, None) ** 2
        lateral_edge -= 0.06 * np.clip(down - 0.6, 0, None) / 0.4
        clipped = np.clip(across, 0, 1)
        diaphragm = 1 - self.dome * (1 - clipped * np.sqrt(clipped))
        return (
            (across >= medial_edge) & (across <= lateral_edge) & (down >= 0) & (down <= diaphragm)
        )


def _ribs(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, width: float) -> np.ndarray:
    """Posterior ribs (curved bands with bright cortices) and fainter anterior ribs."""
    lateral = np.abs(x)
    first = rng.uniform(-0.88, -0.8)
    spacing = rng.uniform(0.12, 0.14)
    growth = rng.uniform(0.004, 0.009)  # lower ribs lie further apart
    thickness = rng.uniform(0.05, 0.065)
    bend = rng.uniform(0.55, 0.8)
    # Posterior ribs leave the spine almost level, then sweep down towards the lateral wall.
    curve = y - (rng.uniform(-0.1, 0.05) * lateral + bend * lateral**2)
    # Rib k sits at first + spacing*k + growth*k^2; invert for the continuous rib index.
    root = np.sqrt(np.clip(spacing**2 + 4 * growth * (curve - first), 0, None))
    index = (root - spacing) / (2 * growth)
    nearest = np.round(index)
    relative = (index - nearest) * (spacing + 2 * growth * nearest) * (2 / thickness)
    squared = relative * relative
    band = np.clip(1 - squared * squared, 0, None)
    edge = (np.abs(relative) - 0.85) * (1 / 0.3)
    cortex = np.clip(1 - edge * edge, 0, None)  # bright cortical rims
    along = _soft_step(lateral - 0.09, 0.03) * _soft_step(width - lateral, 0.05)
    ribs = ((nearest >= 0) & (nearest <= 10)) * along * (0.7 * band + 0.5 * cortex)
    # Anterior ribs run from the lateral wall down and in towards the sternum.
    curve = y - 0.5 * (0.9 - lateral) - 0.3 * (0.9 - lateral) ** 2
    phase = (curve - first + 0.35) / (1.3 * spacing)
    relative = (phase - np.round(phase)) * (2.6 * spacing / thickness)
    along = _soft_step(lateral - 0.25, 0.08) * _soft_step(width - lateral, 0.05)
    ribs += 0.3 * ((phase > 0.5) & (phase < 6.5)) * along * np.clip(1 - relative**2, 0, None)
    return ribs


def _clavicles(x: np.ndarray, y: np.ndarray, height: float, slope: float) -> np.ndarray:
    """Two clavicles from the sternal notch out and up towards the shoulders, in [0, ~1.4]."""
    along = np.abs(x) - 0.07
    centre = height - slope * along + 0.3 * along * (along - 0.6)
    relative = (y - centre) * (1 / 0.036)
    squared = relative * relative
    edge = (np.abs(relative) - 0.9) * (1 / 0.3)
    band = np.clip(1 - squared * squared, 0, None) + 0.4 * np.clip(1 - edge * edge, 0, None)
    return band * _soft_step(along, 0.02) * _soft_step(0.62 - along, 0.04)


# --------------------------------------------------------------------------------------------
# Class patterns: density to add inside the lungs (the caller confines it to the lung mask)
# --------------------------------------------------------------------------------------------


def _covid_pattern(
    rng: np.random.Generator,
    lungs: tuple[_Lung, _Lung],
    x: np.ndarray,
    y: np.ndarray,
    deepness: np.ndarray,
    severity: float,
) -> np.ndarray:
    """Bilateral, peripheral, lower-zone ground glass: patchy haze along the lateral and lower
    borders of both lungs."""
    haze = np.zeros_like(x)
    for lung in lungs:
        for _ in range(int(rng.integers(3, 7))):
            cx, cy = lung.point(rng.uniform(0.6, 1.0), rng.uniform(0.5, 1.0))
            haze += rng.uniform(0.6, 1.0) * _gaussian(x, y, cx, cy, rng.uniform(0.1, 0.18))
    patches = np.clip(0.6 + 0.45 * _smooth_noise(rng, x.shape[0], 16), 0, None)
    peripheral = 0.5 + 0.5 * (1 - deepness)
    return severity * 2.0 * np.clip(haze, 0, 1.2) * patches * peripheral


def _viral_pattern(
    rng: np.random.Generator,
    x: np.ndarray,
    y: np.ndarray,
    hila: list[tuple[float, float]],
    severity: float,
) -> np.ndarray:
    """Diffuse interstitial pattern: a reticular net with small nodules over both lungs,
    strongest around the hila."""
    size = x.shape[0]
    scale = size / 299
    sigma = rng.uniform(2.8, 3.6) * scale
    white = rng.standard_normal((size, size), dtype=np.float32)
    net = ndimage.gaussian_filter(white, sigma) - ndimage.gaussian_filter(white, 2 * sigma)
    net /= net.std() + 1e-6
    reticular = np.exp(-((net / 0.45) ** 2))  # lines where the band-pass noise crosses zero
    nodules = np.zeros((size, size), dtype=np.float32)
    count = max(1, int(rng.integers(80, 160) * scale**2))
    nodules[rng.integers(0, size, count), rng.integers(0, size, count)] = 1.0
    nodule_sigma = rng.uniform(2.0, 2.8) * scale
    nodules = ndimage.gaussian_filter(nodules, nodule_sigma) * np.float32(5 * nodule_sigma**2)
    pattern = ndimage.gaussian_filter(reticular, rng.uniform(0.7, 1.0) * scale)
    pattern = 0.8 * pattern + np.clip(nodules, 0, 1)
    perihilar = np.zeros_like(x)
    for hilum_x, hilum_y in hila:
        distance = np.sqrt((x - hilum_x) ** 2 + (y - hilum_y) ** 2)
        perihilar = np.maximum(perihilar, np.exp(-distance / 0.35))
    return severity * 1.2 * (np.clip(pattern, 0, 1.5) + 0.3) * (0.4 + 0.6 * perihilar)


def _opacity_pattern(
    rng: np.random.Generator,
    pose: _Pose,
    lung_regions: tuple[np.ndarray, np.ndarray],
    deepness: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    hila: list[tuple[float, float]],
    severity: float,
) -> np.ndarray:
    """One dense focal consolidation, usually in one lung, often with air bronchograms."""
    size = x.shape[0]
    which = int(rng.integers(0, 2))

    def random_point(region: np.ndarray) -> tuple[float, float]:
        """A random point of ``region`` away from its border (centres a lesion in the lung)."""
        rows, cols = np.nonzero(region & (deepness > 0.6))
        if rows.size == 0:
            rows, cols = np.nonzero(region)
        pick = int(rng.integers(rows.size))
        return float(x[rows[pick], cols[pick]]), float(y[rows[pick], cols[pick]])

    cx, cy = random_point(lung_regions[which])
    radius = rng.uniform(0.14, 0.24)
    aspect = rng.uniform(0.7, 1.4)
    distance = np.sqrt(((x - cx) * aspect) ** 2 + ((y - cy) / aspect) ** 2) / radius
    lobulation = 0.25 * _smooth_noise(rng, size, 8) + 0.15 * _smooth_noise(rng, size, 20)
    irregular = distance + lobulation
    consolidation = 1 / (1 + np.exp(np.clip((irregular - 1) * (1 / 0.15), -30, 30)))
    consolidation *= 0.85 + 0.15 * _smooth_noise(rng, size, 30)
    if rng.random() < 0.7:  # air bronchograms: airways that stay dark inside the opacity
        hilum_x, hilum_y = hila[which]
        heading = np.arctan2(cy - hilum_y, cx - hilum_x)
        reach = float(np.hypot(cx - hilum_x, cy - hilum_y))
        tree = _branching_tree(
            rng, (hilum_x, hilum_y), heading + rng.uniform(-0.3, 0.3, 2), reach * 0.7, 3, 1.5 / size
        )
        scale = size / 299
        bronchi = _draw_lines(
            pose, tree, [1.0 * scale, 0.75 * scale, 0.75 * scale], [0.8, 0.6, 0.5]
        )
        consolidation -= 0.6 * np.clip(bronchi, 0, 1) * _soft_step(0.7 - irregular, 0.15)
    if rng.random() < 0.15:  # now and then a smaller second focus in the other lung
        second_x, second_y = random_point(lung_regions[1 - which])
        consolidation += 0.7 * _gaussian(x, y, second_x, second_y, radius * 0.35)
    return severity * 3.0 * np.clip(consolidation, 0, 1.2)


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def _resolve_class_name(class_name: str) -> str:
    canonical = canonical_class_name(class_name)
    if canonical is None:
        raise ValueError(
            f"unknown class name {class_name!r}; expected one of {', '.join(ALL_CLASS_NAMES)}"
        )
    return canonical


def _two_lungs(region: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two largest connected parts of ``region`` as (image-left lung, image-right lung);
    specks that the roughened border may leave are dropped."""
    labels, _ = ndimage.label(region)
    sizes = np.bincount(labels.ravel(), minlength=3)
    sizes[0] = 0
    largest = np.argsort(sizes)[::-1][:2]
    parts = [labels == label for label in largest if sizes[label] > 0]
    if len(parts) < 2:
        raise RuntimeError("phantom lung field did not come out as two lungs; please report this")
    parts.sort(key=lambda part: float(x[part].mean()))
    return parts[0], parts[1]


def render_phantom(
    class_name: str, rng: np.random.Generator, size: int = 299
) -> tuple[np.ndarray, np.ndarray]:
    """Render one synthetic frontal chest X-ray of ``class_name``.

    ``class_name`` is a canonical name (``"Normal"``, ``"COVID"``, ``"Viral Pneumonia"``,
    ``"Lung Opacity"``) or an alias that :func:`~covidcxr.data.classes.canonical_class_name`
    knows. Returns ``(image, lung_mask)``: ``image`` float32 of shape (size, size) in [0, 1],
    displayed as a radiograph (bright = dense tissue and bone, dark = air); ``lung_mask`` bool of
    shape (size, size), the lung field the image was drawn with (heart excluded). Lesions fill
    the air of this field, so they lie inside it (up to the one-pixel blur of its border). The
    same generator state gives the same image.
    """
    canonical = _resolve_class_name(class_name)
    if isinstance(size, bool) or not isinstance(size, int) or size < 32:
        raise ValueError(f"size should be an integer >= 32 pixels, got {size!r}")
    scale = size / 299  # pixel widths are tuned at the database's 299 px

    pose = _Pose(
        size=size,
        angle=float(np.deg2rad(rng.uniform(-5, 5))),
        zoom=rng.uniform(0.9, 1.05),
        shift_x=rng.uniform(-0.05, 0.05),
        shift_y=rng.uniform(-0.03, 0.06),
    )
    x, y = pose.grid()
    unit_px = size / 2 * pose.zoom  # pixels per anatomical unit

    # Body: a broad torso under sloping shoulders, the neck above, on a dark background.
    width = rng.uniform(0.9, 1.0)
    across, down = np.abs(x * (1 / width)), ((y - 0.2) * (1 / 1.3)) ** 2
    torso = across * across * across + down * down  # a rounded rectangle
    beyond_neck = np.clip(np.abs(x) - 0.3, 0, None)
    shoulder_line = -0.9 + 0.3 * beyond_neck * np.sqrt(beyond_neck)
    tissue = np.sqrt(np.clip(1 - torso, 0, None)) * _soft_step(y - shoulder_line, 0.08)
    tissue = np.maximum(tissue, 0.8 * _soft_step(0.22 - np.abs(x), 0.04))

    # Lungs: the patient's right lung (image left) is larger; the left one gives way to the heart.
    right = _Lung(
        side=-1,
        medial=rng.uniform(0.07, 0.1),
        lateral=width * rng.uniform(0.86, 0.9),
        apex=rng.uniform(-0.8, -0.72),
        base=rng.uniform(0.5, 0.62),
        dome=rng.uniform(0.14, 0.24),
    )
    left = _Lung(
        side=1,
        medial=rng.uniform(0.07, 0.1),
        lateral=width * rng.uniform(0.83, 0.87),
        apex=right.apex + rng.uniform(0.0, 0.05),
        base=right.base + rng.uniform(0.02, 0.08),
        dome=rng.uniform(0.1, 0.18),
    )
    heart_x, heart_y = rng.uniform(0.08, 0.14), rng.uniform(0.3, 0.38)
    heart_a, heart_b = rng.uniform(0.31, 0.37), rng.uniform(0.21, 0.26)
    tilt = np.deg2rad(rng.uniform(15, 30))
    cos_t, sin_t = float(np.cos(tilt)), float(np.sin(tilt))
    heart_u = (cos_t * (x - heart_x) + sin_t * (y - heart_y)) / heart_a
    heart_v = (cos_t * (y - heart_y) - sin_t * (x - heart_x)) / heart_b
    heart_r2 = heart_u**2 + heart_v**2
    heart = np.sqrt(np.clip(1 - heart_r2, 0, None))

    # Lung field: smooth the geometric outline, roughen it with low-frequency noise, and keep the
    # two lungs. This mask is both what is drawn and what is saved.
    outline = (right.region(x, y) | left.region(x, y)) & (heart_r2 > 1.05)
    field = ndimage.gaussian_filter(outline.astype(np.float32), 3.0 * scale)
    lung_regions = _two_lungs(field + 0.1 * _smooth_noise(rng, size, 7) > 0.5, x)
    lung_mask = lung_regions[0] | lung_regions[1]
    lung_float = lung_mask.astype(np.float32)
    lung_soft = ndimage.gaussian_filter(lung_float, 1.2 * scale)
    # 0 at the lung border, 1 about 0.15 units (a fifth of a lung's width) in.
    deepness = np.clip((_fft_blur(lung_float, 0.1 * unit_px) - 0.5) / 0.4, 0, 1) * lung_float

    hila = [
        (-rng.uniform(0.15, 0.2), rng.uniform(-0.15, -0.04)),
        (rng.uniform(0.15, 0.2), rng.uniform(-0.18, -0.07)),
    ]

    # Heart, mediastinum and abdomen form one water-dense central shadow; the spine shows
    # through it and the trachea is a dark column above the carina.
    mediastinum = _soft_step(0.11 + 0.05 * np.clip(y, 0, None) - np.abs(x), 0.03)
    diaphragm = right.base - right.dome * (right.base - right.apex) * 0.8
    central = np.maximum(np.maximum(mediastinum, heart), _soft_step(y - diaphragm, 0.08))
    vertebrae = np.cos((y - rng.uniform(0, 1)) * (2 * np.pi / rng.uniform(0.12, 0.15)))
    spine = _soft_step(0.06 - np.abs(x), 0.012) * (0.8 + 0.2 * vertebrae)
    trachea = _soft_step(0.03 - np.abs(x + 0.02 * (y + 0.3)), 0.012) * _soft_step(-0.3 - y, 0.05)

    density = (0.6 + 0.2 * central + 0.08 * spine) * tissue - 0.15 * trachea
    air = 0.45 * lung_soft * (0.55 + 0.45 * deepness)  # thinner at the borders
    density -= air
    ribs = _ribs(rng, x, y, width * 0.97) * (tissue > 0.1)
    density += 0.09 * ribs * (0.4 + 0.6 * lung_soft)
    density += 0.14 * _clavicles(x, y, rng.uniform(-0.74, -0.64), rng.uniform(0.1, 0.25))
    for hilum_x, hilum_y in hila:
        density += 0.08 * _gaussian(x, y, hilum_x, hilum_y, 0.05)

    # Vessel markings: branching trees from each hilum, tapering towards the periphery.
    vessel_levels: list[np.ndarray] = []
    for (hilum_x, hilum_y), side in zip(hila, (-1, 1), strict=True):
        angles = np.pi / 2 - side * np.pi / 2 + side * np.linspace(-1.25, 1.25, 6)
        angles += rng.normal(0, 0.15, 6)
        tree = _branching_tree(
            rng, (hilum_x, hilum_y), angles, rng.uniform(0.13, 0.18), 4, 1.5 / size
        )
        vessel_levels = (
            [
                np.concatenate([mine, theirs])
                for mine, theirs in zip(vessel_levels, tree, strict=True)
            ]
            if vessel_levels
            else tree
        )
    vessels = _draw_lines(
        pose,
        vessel_levels,
        [1.5 * scale, 1.5 * scale, 0.8 * scale, 0.8 * scale],
        [1.0, 0.75, 0.55, 0.4],
    )
    density += 0.07 * np.clip(vessels, 0, 1.5) * (0.2 + 0.8 * lung_soft)

    severity = rng.uniform(0.45, 1.0)
    if canonical == "COVID":
        lesion = _covid_pattern(rng, (right, left), x, y, deepness, severity)
    elif canonical == "Viral Pneumonia":
        lesion = _viral_pattern(rng, x, y, hila, severity)
    elif canonical == "Lung Opacity":
        lesion = _opacity_pattern(rng, pose, lung_regions, deepness, x, y, hila, severity)
    else:
        lesion = np.zeros_like(x)
    # A lesion replaces part of the air with fluid or tissue (``lesion`` is an optical depth,
    # ``1 - exp(-lesion)`` the fraction of air filled), so it shows only where there is lung.
    density += air * (1 - np.exp(-lesion))

    # Acquisition: film response, detector blur, gamma; then every image's brightness and
    # contrast are redrawn from one distribution shared by all classes, so that neither tells
    # the class. Quantum noise varies a lot between images, as between real detectors.
    image = 1 - np.exp(-2.2 * np.clip(density, 0, None))
    image = ndimage.gaussian_filter(image, rng.uniform(0.4, 1.1) * scale)
    image = (image / max(float(image.max()), 1e-6)) ** rng.uniform(0.75, 1.35)
    target_mean, target_std = rng.uniform(0.42, 0.58), rng.uniform(0.18, 0.24)
    for _ in range(3):  # clipping moves the moments a little; a few passes bring them back
        image = (image - image.mean()) * (target_std / (image.std() + 1e-6)) + target_mean
        image = np.clip(image, 0, 1)
    noise_std = float(np.exp(rng.uniform(np.log(0.004), np.log(0.04))))
    image += noise_std * rng.standard_normal(image.shape, dtype=np.float32)
    return np.clip(image, 0, 1).astype(np.float32), lung_mask


# --------------------------------------------------------------------------------------------
# Writing a dataset
# --------------------------------------------------------------------------------------------
