"""Lay public copies of the COVID-19 Radiography Database out in the database's own layout.

The shipped models (``covidcxr models``, the ``-db`` names) were trained on what this script
writes. It reads three public snapshots (clones or exported work trees), each limited to the part
we may train and tune on:

* ``--lundis``: ``GitKentC/lundis``, the database resized to 256×256. Only ``train/`` and
  ``validation/`` of ``COVID``, ``Normal`` and ``Viral Pneumonia`` are read; ``test/`` (held out
  for evaluation) and ``TB`` (another collection) never are. Its ``Normal`` folders also hold
  ``others (N).jpg`` files that are not database files: they are left out and counted.
* ``--paediatric``: ``rtchanon/Machine-Learning-for-COVID-19-detection-from-chest-X-RAYS``,
  the database's v3 layout at 224 px; only ``Normal-63.png`` … ``Normal-1403.png`` are read,
  the 1,341 paediatric normals (Kermany) that the lundis copy lacks. Without them every child in
  the copy is Viral Pneumonia, and a model learns "child" instead of "pneumonia".
* ``--vp-masks``: ``ayazmhmd/Unet-Projects``, the original 299×299 Viral Pneumonia images with
  their 256×256 lung masks; only the odd-numbered files are read (the even ones are held out).

Images that are near-duplicates (covidcxr's own matcher, :mod:`covidcxr.data.duplicates`) of an
image under ``--exclude-like`` (the test sample in ``../shared/data/real-sample``) are left out,
so that tests on that sample measure images the models never saw.

Output (``--out``)::

    classify/COVID-19_Radiography_Dataset/   COVID, Normal, Viral Pneumonia (images/, metadata)
    segment/COVID-19_Radiography_Dataset/    Viral Pneumonia images/ + masks/ (odd numbers)
    */covidcxr-dataset.json                  provenance: repositories, commits, counts, exclusions

Files are hard-linked where the file system allows (else copied); the snapshots are not changed.
Run it again to rebuild from scratch (``--out`` is replaced).

    python recipes/real_data.py --lundis ~/src/lundis --paediatric ~/src/rtchanon \\
        --vp-masks ~/src/Unet-Projects --exclude-like ../shared/data/real-sample --out ~/data/db
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

LUNDIS = "GitKentC/lundis"
PAEDIATRIC = "rtchanon/Machine-Learning-for-COVID-19-detection-from-chest-X-RAYS"
VP_MASKS = "ayazmhmd/Unet-Projects"
DATABASE = "COVID-19_Radiography_Dataset"
CLASS_FOLDERS = ("COVID", "Normal", "Viral Pneumonia")
PAEDIATRIC_RANGE = range(63, 1404)
CARD = "covidcxr-dataset.json"
# Where the database's README says each class came from. The lundis copy kept no metadata
# sheets, so COVID images (gathered from many sites) get no source rather than a guess.
RSNA_URL = "https://www.kaggle.com/c/rsna-pneumonia-detection-challenge/data"
KERMANY_URL = "https://www.kaggle.com/paultimothymooney/chest-xray-pneumonia"
LICENCE = (
    "The COVID-19 Radiography Database states no licence: research use only; cite Chowdhury et "
    "al., IEEE Access 8 (2020) 132665, and Rahman et al., arXiv:2012.02238. The mirrors state "
    "no licence either."
)


@dataclass
class Entry:
    """One file to place: where it comes from, its class folder, its new name, its source URL."""

    source: Path
    folder: str
    name: str
    origin: str
    url: str = ""
    mask: Path | None = None


@dataclass
class Plan:
    entries: list[Entry] = field(default_factory=list)
    excluded: list[dict[str, str]] = field(default_factory=list)

    def exclude(self, entry: Entry | Path, reason: str) -> None:
        path = entry.source if isinstance(entry, Entry) else entry
        self.excluded.append({"file": str(path), "reason": reason})


def commit_of(folder: Path) -> str | None:
    """The git commit a snapshot folder was checked out at (None when it is not a clone)."""
    try:
        done = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return done.stdout.strip() or None


def _require(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise SystemExit(f"{path}: no such folder ({what})")
    return path


def plan_lundis(root: Path, plan: Plan) -> None:
    """train/ and validation/ of the three classes; only ``<Class>-N.png`` database files."""
    for half in ("train", "validation"):
        for folder in CLASS_FOLDERS:
            directory = _require(root / half / folder, f"{LUNDIS}: {half}/{folder}")
            pattern = re.compile(rf"^{re.escape(folder)}-\d+\.png$")
            for path in sorted(directory.iterdir()):
                if not path.is_file():
                    continue
                if not pattern.match(path.name):
                    plan.exclude(path, "not a database file name (another collection)")
                    continue
                url = {"Normal": RSNA_URL, "Viral Pneumonia": KERMANY_URL}.get(folder, "")
                plan.entries.append(Entry(path, folder, path.name, f"{LUNDIS}:{half}", url))


def plan_paediatric(root: Path, plan: Plan) -> None:
    """Normal-63 … Normal-1403 of the v3 copy, renamed so they cannot clash with lundis names."""
    directory = _require(root / DATABASE / "Normal", f"{PAEDIATRIC}: {DATABASE}/Normal")
    missing = [n for n in PAEDIATRIC_RANGE if not (directory / f"Normal-{n}.png").is_file()]
    if missing:
        raise SystemExit(
            f"{directory}: {len(missing)} of the paediatric normals Normal-63 … Normal-1403 are "
            f"missing (first: Normal-{missing[0]}.png); check out the whole folder"
        )
    for number in PAEDIATRIC_RANGE:
        path = directory / f"Normal-{number}.png"
        name = f"Normal-paediatric-{number}.png"
        plan.entries.append(Entry(path, "Normal", name, PAEDIATRIC, KERMANY_URL))


def plan_vp_masks(root: Path, plan: Plan) -> None:
    """Odd-numbered Viral Pneumonia images with their masks."""
    images = _require(root / "Viral Pneumonia" / "images", f"{VP_MASKS}: images")
    masks = _require(root / "Viral Pneumonia" / "masks", f"{VP_MASKS}: masks")
    for path in sorted(images.iterdir()):
        match = re.fullmatch(r"Viral Pneumonia-(\d+)\.png", path.name)
        if match is None or int(match.group(1)) % 2 == 0:
            continue  # even numbers are held out for evaluation: never read
        mask = masks / path.name
        if not mask.is_file():
            plan.exclude(path, "no lung mask")
            continue
        plan.entries.append(Entry(path, "Viral Pneumonia", path.name, VP_MASKS, KERMANY_URL, mask))


def exclude_twins(plans: list[Plan], reference: Path, workers: int | None) -> list[dict]:
    """Drop every planned image that covidcxr's near-duplicate matcher groups with an image
    under ``reference``; returns the pairs found."""
    from covidcxr.data.duplicates import group_near_duplicates
    from covidcxr.data.layouts import discover
    from covidcxr.data.sample import Sample
    from covidcxr.data.scan import scan_images

    references = list(discover(reference).samples)
    planned = [(plan, entry) for plan in plans for entry in plan.entries]
    samples = references + [Sample(e.source, 0, e.folder) for _, e in planned]
    print(f"Hashing {len(samples):,} images to find twins of {reference} ...", flush=True)
    scan = scan_images(samples, workers=workers)
    if scan.failures:
        raise SystemExit(f"unreadable images: {scan.failures[:5]}")
    groups = group_near_duplicates(scan.hashes, signatures=scan.signatures, twins=scan.twins)
    reference_groups = {int(g): references[i].path for i, g in enumerate(groups[: len(references)])}
    pairs, dropped = [], set()
    for offset, (plan, entry) in enumerate(planned):
        group = int(groups[len(references) + offset])
        if group in reference_groups:
            twin = reference_groups[group]
            pairs.append({"file": str(entry.source), "twin_of": str(twin)})
            plan.exclude(entry, f"near-duplicate of the test sample's {twin.name}")
            dropped.add(id(entry))
    for plan in plans:
        plan.entries = [e for e in plan.entries if id(e) not in dropped]
    return pairs


def _place(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _write_metadata(path: Path, rows: list[tuple[str, str]]) -> None:
    """``<Class>.metadata.xlsx`` with the database's columns, for the rows whose URL is known."""
    from openpyxl import Workbook

    workbook = Workbook()
    sheet = workbook.active
    sheet.append(("FILE NAME", "FORMAT", "SIZE", "URL"))
    for stem, url in rows:
        sheet.append((stem, "PNG", "", url))
    workbook.save(path)


def write_dataset(plan: Plan, root: Path, card: dict) -> dict[str, int]:
    """Place the plan's files under ``root/COVID-19_Radiography_Dataset`` and write its card."""
    database = root / DATABASE
    rows: dict[str, list[tuple[str, str]]] = {}
    counts: dict[str, int] = {}
    seen: dict[tuple[str, str], Path] = {}
    for entry in plan.entries:
        first = seen.setdefault((entry.folder, entry.name), entry.source)
        if first != entry.source:
            raise SystemExit(
                f"{entry.source} and {first} would both become {entry.folder}/{entry.name}; "
                "a snapshot holds the same file name twice"
            )
    for entry in plan.entries:
        _place(entry.source, database / entry.folder / "images" / entry.name)
        if entry.mask is not None:
            _place(entry.mask, database / entry.folder / "masks" / entry.name)
        if entry.url:
            rows.setdefault(entry.folder, []).append((Path(entry.name).stem, entry.url))
        counts[entry.folder] = counts.get(entry.folder, 0) + 1
    for folder, folder_rows in rows.items():
        _write_metadata(database / f"{folder}.metadata.xlsx", folder_rows)
    origins: dict[str, dict[str, int]] = {}
    for entry in plan.entries:
        per_class = origins.setdefault(entry.origin, {})
        per_class[entry.folder] = per_class.get(entry.folder, 0) + 1
    card = {
        **card,
        "synthetic": False,
        "class_counts": counts,
        "files_by_origin": origins,
        "excluded": plan.excluded,
        "excluded_counts": _count_reasons(plan.excluded),
    }
    (database / CARD).write_text(json.dumps(card, indent=2), encoding="utf-8")
    return counts


def _count_reasons(excluded: list[dict[str, str]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in excluded:
        reason = re.sub(r"'s .*$", "", item["reason"])
        counts[reason] = counts.get(reason, 0) + 1
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lundis", type=Path, required=True, help=f"a snapshot of {LUNDIS}")
    parser.add_argument("--paediatric", type=Path, required=True, help=f"{PAEDIATRIC}")
    parser.add_argument("--vp-masks", type=Path, required=True, help=f"a snapshot of {VP_MASKS}")
    parser.add_argument("--out", type=Path, required=True, help="output folder (replaced)")
    parser.add_argument(
        "--exclude-like",
        type=Path,
        action="append",
        default=[],
        help="leave out near-duplicates of these images (a dataset folder; repeatable)",
    )
    parser.add_argument("--workers", type=int, default=None, help="decoding processes")
    args = parser.parse_args(argv)
    started = time.perf_counter()

    for key in ("lundis", "paediatric", "vp_masks", "out"):
        setattr(args, key, getattr(args, key).expanduser().resolve())
    args.exclude_like = [p.expanduser().resolve() for p in args.exclude_like]
    out = args.out
    if out.exists() and any(out.iterdir()) and not (out / "classify" / DATABASE / CARD).is_file():
        raise SystemExit(
            f"{out}: not empty and not an earlier output of this script (no "
            f"classify/{DATABASE}/{CARD}); it would be replaced: name an empty or new folder"
        )
    classify, segment = Plan(), Plan()
    plan_lundis(args.lundis, classify)
    plan_paediatric(args.paediatric, classify)
    plan_vp_masks(args.vp_masks, segment)
    twins = []
    for reference in args.exclude_like:
        twins += exclude_twins([classify, segment], reference, args.workers)

    if out.exists():
        shutil.rmtree(out)
    sources = {
        LUNDIS: {"commit": commit_of(args.lundis), "read": "train/, validation/ (3 classes)"},
        PAEDIATRIC: {
            "commit": commit_of(args.paediatric),
            "read": f"{DATABASE}/Normal/Normal-{PAEDIATRIC_RANGE[0]}.png … "
            f"Normal-{PAEDIATRIC_RANGE[-1]}.png",
        },
        VP_MASKS: {"commit": commit_of(args.vp_masks), "read": "odd-numbered VP images + masks"},
    }
    common = {
        "name": "COVID-19 Radiography Database, public copies (covidcxr recipes/real_data.py)",
        "licence": LICENCE,
        "twins_of_excluded_references": twins,
        "references_excluded": [str(p) for p in args.exclude_like],
    }
    counts = write_dataset(
        classify,
        out / "classify",
        {**common, "sources": {k: sources[k] for k in (LUNDIS, PAEDIATRIC)}},
    )
    seg_counts = write_dataset(
        segment, out / "segment", {**common, "sources": {VP_MASKS: sources[VP_MASKS]}}
    )
    print(f"classify: {counts}; segment: {seg_counts}")
    print(f"excluded: {_count_reasons(classify.excluded + segment.excluded)}")
    print(f"twins of the reference images left out: {len(twins)}")
    print(f"done in {time.perf_counter() - started:.1f} s -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
