"""Train / validation / test splits: stratified by class, seeded, and grouped.

Grouped means that every image of a group (a near-duplicate group from
:mod:`covidcxr.data.duplicates`, or a patient) lands in one split, so no picture is trained on
and tested on at once. Splits are stored as CSV files next to the data (:func:`write_split_csv`,
:func:`read_split_csv`) so that a run can be repeated exactly.
"""

from __future__ import annotations

import csv
import math
import time
import warnings
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, replace
from numbers import Integral, Real
from pathlib import Path

import numpy as np

from covidcxr.atomic import replacing
from covidcxr.data.sample import Sample
from covidcxr.io import NOT_UTF8_REASON, escape_path, is_utf8_path
from covidcxr.wording import plural

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")
PAPER_FRACTIONS: tuple[float, ...] = (0.7, 0.1, 0.2)
"""The paper's CNN split; its VGG16 experiment uses (0.75, 0.125, 0.125)."""

# Key prefix for samples without a group; no user value can equal it.
_UNGROUPED = object()

CSV_COLUMNS: tuple[str, ...] = (
    "path",
    "label",
    "class_name",
    "split",
    "group",
    "source",
    "mask_path",
)


def assign_splits(
    labels: Sequence[int],
    groups: Sequence[Hashable],
    fractions: Sequence[float] = PAPER_FRACTIONS,
    seed: int = 0,
    names: Sequence[str] = SPLIT_NAMES,
) -> np.ndarray:
    """Assign each sample to a split, keeping groups whole and class proportions close to
    ``fractions``.

    ``labels`` and ``groups`` have one entry per sample (N,). A group goes whole to one split and
    counts toward its majority label (ties: the smallest label); ``None`` as a group means
    "ungrouped" and makes that sample a group of its own. Per class, the groups are shuffled with
    ``seed``, ordered by size (largest first, stable) and each is given to the split furthest
    below its target (``fraction * class size``; on a tie, the split with the smallest share of
    its target filled, then the earlier one in ``names``). Each split's share of a class ends
    within about one group of its target.

    A class too small for every split fills the splits with the largest deficits first: with
    the default fractions one sample goes to train, two to train and test, three to train
    (2) and test, five to train (3), val and test. A ``UserWarning`` names the splits a class
    is missing from, since metrics for it there are undefined.

    Returns an object array (N,) holding one of ``names`` per sample. The same inputs and seed
    always give the same result.
    """
    fractions, names = _check_fractions(fractions, names)
    if len(labels) != len(groups):
        raise ValueError(
            f"labels and groups should have one entry per sample, got {len(labels)} labels "
            f"and {len(groups)} groups"
        )
    labels = [_check_label(label, index) for index, label in enumerate(labels)]
    if not isinstance(seed, Integral) or isinstance(seed, bool):
        raise ValueError(f"seed should be an integer, got {seed!r}")

    members_by_group = _members_by_group(groups)
    groups_by_class: dict[int, list[list[int]]] = {}
    for members in members_by_group:
        votes = Counter(labels[index] for index in members)
        majority = min(votes, key=lambda label: (-votes[label], label))
        groups_by_class.setdefault(majority, []).append(members)

    rng = np.random.default_rng(seed)
    split_of_sample = np.empty(len(labels), dtype=np.int64)
    fraction_of_split = np.asarray(fractions)
    for label in sorted(groups_by_class):
        class_groups = groups_by_class[label]
        shuffled = [class_groups[i] for i in rng.permutation(len(class_groups))]
        shuffled.sort(key=len, reverse=True)  # stable: equal sizes keep the shuffled order
        targets = fraction_of_split * sum(len(members) for members in shuffled)
        assigned = np.zeros(len(names))
        for members in shuffled:
            split = _neediest_split(targets, assigned)
            assigned[split] += len(members)
            split_of_sample[members] = split
        missing = [name for name, count in zip(names, assigned, strict=True) if count == 0]
        if missing:
            warnings.warn(
                f"class {label} has {int(assigned.sum())} samples in {len(shuffled)} groups, "
                f"too few for {len(names)} splits: it is absent from {', '.join(missing)}",
                UserWarning,
                stacklevel=2,
            )
    return np.array(names, dtype=object)[split_of_sample]


def split_leakage(groups: Sequence[Hashable], splits: Sequence[str]) -> int:
    """Number of groups whose members are in more than one split.

    ``groups`` and ``splits`` have one entry per sample (N,). ``None`` groups are ungrouped
    samples and never leak. 0 means the split is grouped.
    """
    if len(groups) != len(splits):
        raise ValueError(
            f"groups and splits should have one entry per sample, got {len(groups)} groups "
            f"and {len(splits)} splits"
        )
    splits_of_group: dict[Hashable, set[str]] = {}
    for group, split in zip(groups, splits, strict=True):
        if group is not None:
            splits_of_group.setdefault(group, set()).add(split)
    return sum(len(found) > 1 for found in splits_of_group.values())


def write_split_csv(
    path: Path, samples: Sequence[Sample], splits: Sequence[str], root: Path
) -> None:
    """Write samples and their splits to a CSV file with columns :data:`CSV_COLUMNS`.

    Image and mask paths under ``root`` are written relative to it in POSIX form (``COVID/images
    /COVID-1.png``), other paths as they are (absolute). ``None`` is written as an empty cell,
    so an empty-string group or source reads back as ``None``. The file is written to a
    temporary file in the same folder and then renamed over ``path``, so readers never see half
    a file; missing parent folders are created.
    """
    path, root = Path(path), Path(root).absolute()
    if len(samples) != len(splits):
        raise ValueError(
            f"samples and splits should have the same length, got {len(samples)} samples "
            f"and {len(splits)} splits"
        )
    for index, split in enumerate(splits):
        if not isinstance(split, str) or not split:
            raise ValueError(f"split {index} should be a non-empty string, got {split!r}")
    for sample in samples:
        for named in (sample.path, sample.mask_path):
            if named is not None and not is_utf8_path(named):
                raise ValueError(
                    f"{escape_path(named)}: {NOT_UTF8_REASON}. A split file is UTF-8 text and "
                    "cannot hold this name."
                )

    rows = [
        (
            _path_cell(sample.path, root),
            str(sample.label),
            sample.class_name,
            split,
            _optional_cell(sample.group),
            _optional_cell(sample.source),
            "" if sample.mask_path is None else _path_cell(sample.mask_path, root),
        )
        for sample, split in zip(samples, splits, strict=True)
    ]
    with replacing(path) as temporary, temporary.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        writer.writerows(rows)


def read_split_csv(path: Path, root: Path) -> tuple[list[Sample], list[str]]:
    """Read a file written by :func:`write_split_csv`: the samples and their splits.

    Relative paths are resolved against ``root``. Extra columns are ignored. Raises
    ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file and line for a
    missing column or a malformed row.
    """
    path, root = Path(path), Path(root).absolute()
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such split file. Write one with covidcxr.data.splits.write_split_csv, "
            "or check the path"
        )
    samples: list[Sample] = []
    splits: list[str] = []
    # utf-8-sig: a spreadsheet that re-saves the file may add a byte-order mark.
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path}, line 1: the file is empty, expected the header row")
        header = [name.strip() for name in header]
        missing = [name for name in CSV_COLUMNS if name not in header]
        if missing:
            raise ValueError(
                f"{path}, line 1: missing column(s) {', '.join(missing)}; expected the columns "
                f"{','.join(CSV_COLUMNS)}, got {','.join(header)}"
            )
        column = {name: header.index(name) for name in CSV_COLUMNS}
        for row in reader:
            if not row:
                continue
            where = f"{path}, line {reader.line_num}"
            if len(row) != len(header):
                raise ValueError(
                    f"{where}: expected {len(header)} fields like the header, got {len(row)}"
                )
            cells = {name: row[index] for name, index in column.items()}
            for required in ("path", "label", "class_name", "split"):
                if not cells[required]:
                    raise ValueError(f"{where}: the {required} cell is empty")
            try:
                label = int(cells["label"])
            except ValueError:
                raise ValueError(
                    f"{where}: label should be an integer, got {cells['label']!r}"
                ) from None
            samples.append(
                Sample(
                    path=_path_from_cell(cells["path"], root),
                    label=label,
                    class_name=cells["class_name"],
                    mask_path=_path_from_cell(cells["mask_path"], root)
                    if cells["mask_path"]
                    else None,
                    source=cells["source"] or None,
                    group=cells["group"] or None,
                )
            )
            splits.append(cells["split"])
    return samples, splits


def _neediest_split(targets: np.ndarray, assigned: np.ndarray) -> int:
    """The split furthest below its target; among equal deficits (to rounding), the one with the
    smallest share of its target filled, then the earliest. The second rule matters for tiny
    classes: two samples go to train and test rather than both to train."""
    deficit = targets - assigned
    tied = np.flatnonzero(deficit >= deficit.max() - 1e-9)
    filled = assigned[tied] / targets[tied]
    return int(tied[np.argmin(filled)])


def _check_fractions(
    fractions: Sequence[float], names: Sequence[str]
) -> tuple[list[float], list[str]]:
    fractions, names = list(fractions), list(names)
    if len(fractions) != len(names):
        raise ValueError(
            f"fractions and names should have the same length, got {len(fractions)} fractions "
            f"{fractions} and {len(names)} names {names}"
        )
    if not names:
        raise ValueError("names should name at least one split, got none")
    for fraction in fractions:
        if (
            not isinstance(fraction, Real)
            or isinstance(fraction, bool)
            or not math.isfinite(fraction)
            or fraction <= 0
        ):
            raise ValueError(f"fractions should all be positive numbers, got {fractions}")
    total = math.fsum(fractions)
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"fractions should sum to 1, got {fractions} (sum {total:.6g})")
    for name in names:
        if not isinstance(name, str) or not name:
            raise ValueError(f"names should be non-empty strings, got {names}")
    if len(set(names)) != len(names):
        raise ValueError(f"names should be distinct, got {names}")
    return [float(fraction) for fraction in fractions], names


def _check_label(label: object, index: int) -> int:
    if not isinstance(label, Integral) or isinstance(label, bool):
        raise ValueError(f"labels should be integers, got {label!r} at index {index}")
    return int(label)


def _members_by_group(groups: Sequence[Hashable]) -> list[list[int]]:
    """Sample indices of each group, groups in order of first appearance; ``None`` → singletons."""
    members: dict[Hashable, list[int]] = {}
    for index, group in enumerate(groups):
        if group is None:
            members[(_UNGROUPED, index)] = [index]
        else:
            try:
                members.setdefault(group, []).append(index)
            except TypeError:
                raise ValueError(
                    f"groups should be hashable (a string or number), got {group!r} at index "
                    f"{index}"
                ) from None
    return list(members.values())


def _path_cell(path: Path, root: Path) -> str:
    path = Path(path)
    if path.is_absolute() and path.is_relative_to(root):
        return path.relative_to(root).as_posix()
    return str(path)


def _path_from_cell(cell: str, root: Path) -> Path:
    path = Path(cell)
    return path if path.is_absolute() else root / path


def _optional_cell(value: str | None) -> str:
    return "" if value is None else str(value)


# --------------------------------------------------------------------------------------------
# From a dataset folder to a split file


@dataclass(frozen=True)
class SplitResult:
    """What :func:`split_dataset` wrote: the samples (with their final ``group``), their splits,
    the images left out because they could not be read (``unreadable``), and the entries left
    out before any image was read (``problems``, as :attr:`DatasetIndex.problems`: broken
    links, FIFOs, names that are not UTF-8, manifest rows naming a missing file or an unknown
    label...). ``left_out`` is both lists, for a command to print."""

    path: Path
    class_names: tuple[str, ...]
    samples: tuple[Sample, ...]
    splits: tuple[str, ...]
    duplicate_groups: int
    unreadable: tuple[tuple[Path, str], ...]
    seconds: float
    problems: tuple[tuple[Path, str], ...] = ()

    @property
    def left_out(self) -> tuple[tuple[Path, str], ...]:
        """Every entry not in the split, with its reason: ``problems`` then ``unreadable``."""
        return self.problems + self.unreadable

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per split and class: ``{"train": {"Normal": 700, ...}, ...}``."""
        found = Counter(zip(self.splits, (s.class_name for s in self.samples), strict=True))
        names = list(dict.fromkeys(self.splits))
        return {split: {c: found[(split, c)] for c in self.class_names} for split in names}

    def describe(self) -> str:
        """A few lines for the command line."""
        lines = [f"Wrote {self.path} ({len(self.samples):,} images, {self.seconds:.1f} s)"]
        for split, per_class in self.counts().items():
            total = sum(per_class.values())
            classes = ", ".join(f"{name} {count:,}" for name, count in per_class.items())
            lines.append(f"  {split:<5} {total:>7,}  ({classes})")
        lines.append(
            f"  {plural(self.duplicate_groups, 'near-duplicate group')} kept within one split each"
        )
        if self.problems:
            lines.append(
                f"  {plural(len(self.problems), 'entry', 'entries')} skipped or wrong before "
                "reading:"
            )
            lines.extend(f"    {path}: {reason}" for path, reason in self.problems)
        if self.unreadable:
            lines.append(f"  {plural(len(self.unreadable), 'unreadable image')} left out:")
            lines.extend(f"    {path}: {reason}" for path, reason in self.unreadable)
        return "\n".join(lines)


def split_dataset(
    path: str | Path,
    out: str | Path,
    fractions: Sequence[float] = PAPER_FRACTIONS,
    seed: int = 0,
    num_classes: int = 3,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    *,
    allow_outside: bool = False,
) -> SplitResult:
    """Discover the dataset at ``path``, group near-duplicates (and the manifest's own groups,
    e.g. patients), split stratified by class and write the split CSV to ``out``.

    Every image is decoded once to hash it; unreadable images are left out and listed in
    ``unreadable``, entries :func:`~covidcxr.data.layouts.discover` could not use in
    ``problems``. ``allow_outside`` lets a manifest name files outside its folder.
    """
    from covidcxr.data.duplicates import duplicate_groups, group_near_duplicates
    from covidcxr.data.layouts import discover
    from covidcxr.data.scan import scan_images

    started = time.perf_counter()
    index = discover(path, num_classes, allow_outside=allow_outside)
    scan = scan_images(index.samples, workers=workers, progress=progress)
    readable = [s for s, ok in zip(index.samples, scan.ok, strict=True) if ok]
    duplicate_ids = (
        group_near_duplicates(
            scan.hashes[scan.ok],
            signatures=scan.signatures[scan.ok],
            twins=scan.twins[scan.ok],
            blocks=np.array([s.label for s in readable]),
        )
        if readable
        else np.zeros(0, dtype=np.int64)
    )
    components = _merge_groups(duplicate_ids, [s.group for s in readable])
    width = len(str(max(1, len(readable))))
    grouped = [
        replace(sample, group=f"g{component:0{width}d}")
        for sample, component in zip(readable, components, strict=True)
    ]
    splits = assign_splits([s.label for s in grouped], [s.group for s in grouped], fractions, seed)
    out = Path(out)
    write_split_csv(out, grouped, splits, index.root)
    return SplitResult(
        path=out,
        class_names=index.class_names,
        samples=tuple(grouped),
        splits=tuple(str(s) for s in splits),
        duplicate_groups=len(duplicate_groups(duplicate_ids)),
        unreadable=tuple(scan.failures),
        seconds=time.perf_counter() - started,
        problems=tuple(index.problems),
    )


def _merge_groups(duplicate_ids: np.ndarray, explicit: Sequence[str | None]) -> np.ndarray:
    """Connected components of "near-duplicate of" and "same explicit group as" (N,) → (N,)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    count = len(explicit)
    first_of: dict[tuple[str, object], int] = {}
    sources, targets = [], []
    for index, keys in enumerate(zip(duplicate_ids.tolist(), explicit, strict=True)):
        for key in (("duplicate", keys[0]), ("explicit", keys[1])):
            if key[1] is None:
                continue
            sources.append(index)
            targets.append(first_of.setdefault(key, index))
    graph = coo_matrix((np.ones(len(sources)), (sources, targets)), shape=(count, count))
    _, labels = connected_components(graph, directed=False)
    # renumber by first appearance so group names follow the dataset's order
    _, first_index, inverse = np.unique(labels, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first_index))
    return order[inverse]
