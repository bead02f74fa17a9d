"""``covidcxr data inspect``: what a dataset holds, what is wrong with it, the paper's figures."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from covidcxr.data.layouts import DatasetIndex, discover
from covidcxr.data.scan import ImageScan, scan_images

SAMPLES_PER_CLASS_FIGURE = 8


@dataclass
class InspectReport:
    """Everything ``data inspect`` found. Paths are relative to ``root`` where possible.

    ``duplicate_groups`` lists groups of near-duplicate images (more than one member, largest
    first); ``unreadable`` lists ``(path, reason)`` for images and masks that could not be read;
    ``problems`` those for entries left out (or found wrong) before any image was read, such as
    broken symbolic links, FIFOs, file names that are not UTF-8 and bad manifest rows.
    """

    root: str
    layout: str
    class_names: list[str]
    counts: dict[str, int]
    excluded: dict[str, int]
    formats: dict[str, int]
    image_sizes: dict[str, int]
    image_modes: dict[str, int]
    bit_depths: dict[str, int]
    masks_per_class: dict[str, int]
    mask_sizes: dict[str, int]
    mask_modes: dict[str, int]
    sources: dict[str, dict[str, int]]
    duplicate_groups: list[list[str]]
    cross_class_duplicate_groups: int
    unreadable: list[tuple[str, str]]
    problems: list[tuple[str, str]]
    ignored_files: int
    seconds: float
    figures: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict:
        """A JSON-ready dict (what ``--json`` prints)."""
        data = asdict(self)
        data["total"] = self.total
        data["unreadable"] = [{"path": p, "reason": r} for p, r in self.unreadable]
        data["problems"] = [{"path": p, "reason": r} for p, r in self.problems]
        return data


def inspect_dataset(
    path: str | Path,
    num_classes: int = 3,
    out_dir: Path | None = None,
    duplicates: bool = True,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    *,
    allow_outside: bool = False,
) -> InspectReport:
    """Discover the dataset at ``path``, decode every image once, and report on it.

    With ``out_dir``, also writes the exploratory figures there: ``class_counts.png``,
    ``samples_<Class>.png`` (one grid per class) and ``intensity_histograms.png``.
    Unreadable files are listed in the report, never fatal, and so are the entries skipped
    before reading (``problems``: broken links, FIFOs, names that are not UTF-8, bad manifest
    rows). ``allow_outside`` lets a manifest name files outside its folder.
    """
    started = time.perf_counter()
    index = discover(path, num_classes, allow_outside=allow_outside)
    samples = index.samples
    labels = np.array([s.label for s in samples], dtype=np.int64)
    chosen = _figure_samples(labels, len(index.class_names))
    scan = scan_images(
        samples, hashes=duplicates, thumbnails=chosen, workers=workers, progress=progress
    )
    report = _summarise(index, scan, duplicates)
    if out_dir is not None:
        report.figures = [str(p) for p in _write_figures(index, scan, labels, chosen, out_dir)]
        if report.duplicate_groups:
            report.figures.append(str(_plot_groups(Path(index.root), report, Path(out_dir))))
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _figure_samples(labels: np.ndarray, num_classes: int) -> list[int]:
    rng = np.random.default_rng(0)
    chosen: list[int] = []
    for label in range(num_classes):
        members = np.flatnonzero(labels == label)
        take = min(SAMPLES_PER_CLASS_FIGURE, len(members))
        chosen.extend(sorted(rng.choice(members, size=take, replace=False).tolist()))
    return chosen


def _relative(path: Path | None, root: Path) -> str:
    if path is None:
        return ""
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def _tally(values) -> dict[str, int]:
    return dict(Counter(v for v in values if v is not None).most_common())


def _summarise(index: DatasetIndex, scan: ImageScan, duplicates: bool) -> InspectReport:
    root = index.root
    samples = index.samples
    infos = [info for info in scan.infos if info is not None]
    mask_infos = [info for info in scan.mask_infos if info is not None]
    sources: dict[str, dict[str, int]] = {}
    for name in index.class_names:
        members = [s.source or "unknown" for s in samples if s.class_name == name]
        sources[name] = _tally(members)
    groups: list[list[str]] = []
    cross_class = 0
    if duplicates and scan.ok.any():
        from covidcxr.data.duplicates import duplicate_groups, group_near_duplicates

        readable = np.flatnonzero(scan.ok)
        group_ids = group_near_duplicates(
            scan.hashes[readable],
            signatures=scan.signatures[readable],
            twins=scan.twins[readable],
            blocks=np.array([samples[i].label for i in readable]),
        )
        for members in duplicate_groups(group_ids):
            originals = [samples[readable[m]] for m in members]
            groups.append([_relative(s.path, root) for s in originals])
            cross_class += len({s.label for s in originals}) > 1
    return InspectReport(
        root=str(root),
        layout=index.layout,
        class_names=list(index.class_names),
        counts=index.counts(),
        excluded=dict(index.excluded),
        formats=_tally(info.format for info in infos),
        image_sizes=_tally(f"{info.width}x{info.height}" for info in infos),
        image_modes=_tally(info.mode for info in infos),
        bit_depths=_tally(str(info.bit_depth) for info in infos),
        masks_per_class={
            name: sum(1 for s in samples if s.class_name == name and s.mask_path is not None)
            for name in index.class_names
        },
        mask_sizes=_tally(f"{info.width}x{info.height}" for info in mask_infos),
        mask_modes=_tally(info.mode for info in mask_infos),
        sources=sources,
        duplicate_groups=groups,
        cross_class_duplicate_groups=cross_class,
        unreadable=[(_relative(p, root), reason) for p, reason in scan.failures],
        problems=[(_relative(p, root), reason) for p, reason in index.problems],
        ignored_files=len(index.ignored),
        seconds=0.0,
    )


def _write_figures(
    index: DatasetIndex, scan: ImageScan, labels: np.ndarray, chosen: list[int], out_dir: Path
) -> list[Path]:
    from covidcxr.data.figures import (
        plot_class_counts,
        plot_intensity_histograms,
        plot_sample_grid,
    )

    out_dir = Path(out_dir)
    written = [plot_class_counts(index.counts(), out_dir / "class_counts.png")]
    for label, name in enumerate(index.class_names):
        thumbs = [scan.thumbnails[i] for i in chosen if labels[i] == label and i in scan.thumbnails]
        if thumbs:
            slug = name.replace(" ", "_")
            written.append(plot_sample_grid(thumbs, out_dir / f"samples_{slug}.png", name))
    histograms = {
        name: scan.histograms[(labels == label) & scan.ok]
        for label, name in enumerate(index.class_names)
    }
    written.append(plot_intensity_histograms(histograms, out_dir / "intensity_histograms.png"))
    return written


DUPLICATE_PAIRS_FIGURE = 12
"""Near-duplicate groups drawn (two members each) in ``near_duplicates.png``."""


def _plot_groups(root: Path, report: InspectReport, out_dir: Path) -> Path:
    """Two members of each of the first groups side by side, so a person can check them."""
    from covidcxr.data.figures import plot_image_pairs
    from covidcxr.data.transforms import resize_image
    from covidcxr.io import ImageReadError, read_image

    pairs, captions = [], []
    for group in report.duplicate_groups[:DUPLICATE_PAIRS_FIGURE]:
        try:
            images = [resize_image(read_image(root / name), (192, 192)) for name in group[:2]]
        except (ImageReadError, OSError):
            continue  # listed among the unreadable files already
        pairs.append(images)
        more = f" (+{len(group) - 2})" if len(group) > 2 else ""
        captions.append(f"{group[0]}\n{group[1]}{more}")
    title = f"Near-duplicates: {len(pairs)} of {len(report.duplicate_groups)} groups"
    return plot_image_pairs(pairs, captions, out_dir / "near_duplicates.png", title)


def format_report(report: InspectReport, max_listed: int = 10) -> str:
    """The human-readable summary ``data inspect`` prints."""

    def counter_line(counter: dict[str, int]) -> str:
        return ", ".join(f"{key} ({count:,})" for key, count in counter.items()) or "none"

    lines = [
        f"Dataset: {report.root}",
        f"Layout:  {report.layout}",
        f"Images:  {report.total:,} in {len(report.class_names)} classes "
        f"(scanned in {report.seconds:.1f} s)",
    ]
    for name in report.class_names:
        lines.append(
            f"  {name:<16} {report.counts[name]:>7,} images, "
            f"{report.masks_per_class[name]:>7,} with a lung mask"
        )
    for name, count in report.excluded.items():
        lines.append(f"  {name:<16} {count:>7,} images not used (pass --classes 4 to include)")
    lines += [
        f"Formats:     {counter_line(report.formats)}",
        f"Image sizes: {counter_line(dict(list(report.image_sizes.items())[:8]))}"
        + (f" and {len(report.image_sizes) - 8} more" if len(report.image_sizes) > 8 else ""),
        f"Modes:       {counter_line(report.image_modes)}",
        f"Bit depths:  {counter_line(report.bit_depths)}",
        f"Mask sizes:  {counter_line(report.mask_sizes)}; modes: {counter_line(report.mask_modes)}",
        "Sources:",
    ]
    for name, sources in report.sources.items():
        lines.append(f"  {name:<16} {counter_line(sources)}")
    single = [n for n, s in report.sources.items() if len(s) == 1 and "unknown" not in s]
    if single:
        lines.append(
            f"  note: {', '.join(single)} come(s) from a single source: a classifier can learn "
            "the source instead of the disease."
        )
    duplicates_in = sum(len(g) for g in report.duplicate_groups)
    lines.append(
        f"Near-duplicates: {len(report.duplicate_groups):,} groups holding {duplicates_in:,} "
        f"images ({report.cross_class_duplicate_groups} groups span two classes)"
    )
    for group in report.duplicate_groups[:max_listed]:
        lines.append("  " + "  ~  ".join(group))
    if len(report.duplicate_groups) > max_listed:
        lines.append(f"  ... {len(report.duplicate_groups) - max_listed} more (see --json)")
    lines.append(f"Unreadable files: {len(report.unreadable)}")
    for path, reason in report.unreadable[:max_listed]:
        lines.append(f"  {path}: {reason}")
    if len(report.unreadable) > max_listed:
        lines.append(f"  ... {len(report.unreadable) - max_listed} more (see --json)")
    if report.problems:
        lines.append(f"Skipped or wrong before reading: {len(report.problems)}")
        for path, reason in report.problems[:max_listed]:
            lines.append(f"  {path}: {reason}")
        if len(report.problems) > max_listed:
            lines.append(f"  ... {len(report.problems) - max_listed} more (see --json)")
    if report.ignored_files:
        lines.append(f"Ignored (not images of a known class): {report.ignored_files} entries")
    if report.figures:
        lines.append("Figures:")
        lines.extend(f"  {figure}" for figure in report.figures)
    return "\n".join(lines)
