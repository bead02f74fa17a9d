"""The twin matcher: recall on re-exports of the real sample, and wall time on a dataset.

    python benchmarks/bench_twins.py                      # the real sample and its re-exports
    python benchmarks/bench_twins.py ~/data/COVID-19_Radiography_Dataset   # + a whole dataset

Prints, per kind of re-export, how many of the sample's films were paired with it (one
re-export per film at a time, so no sibling can chain them), the highest score between two
distinct sample films, and for a dataset: decoding (hash + thumbnails) and matching times and
the groups found.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "data" / "real-sample"


def sample_recall() -> None:
    from covidcxr.data.layouts import discover
    from covidcxr.data.reexports import reexports
    from covidcxr.data.twins import find_twins, twin_score, twin_thumbnail
    from covidcxr.io import read_image

    films = [np.rint(read_image(s.path) * 255).astype(np.uint8) for s in discover(SAMPLE).samples]
    thumbs = [twin_thumbnail(f / 255.0) for f in films]
    edited = [reexports(f) for f in films]
    print(f"{len(films)} real-sample films; each against one re-export at a time")
    for kind in edited[0]:
        stack = np.stack(thumbs + [twin_thumbnail(e[kind] / 255.0) for e in edited])
        first, second, _ = find_twins(stack, workers=1)
        pairs = set(zip(first.tolist(), second.tolist(), strict=True))
        count = len(films)
        found = sum((i, count + i) in pairs for i in range(count))
        wrong = sum(1 for a, b in pairs if a % count != b % count)
        print(f"  {kind:22} {found:3d} of {count} paired, {wrong} wrong pairs")
    distinct = max(
        twin_score(thumbs[i], thumbs[j])
        for i in range(len(thumbs))
        for j in range(len(thumbs))
        if i != j
    )
    print(f"  highest score of two distinct films: {distinct:.3f}")


def dataset_time(folder: Path) -> None:
    from covidcxr.data.duplicates import duplicate_groups, group_near_duplicates
    from covidcxr.data.layouts import discover
    from covidcxr.data.scan import scan_images

    samples = discover(folder).samples
    started = time.perf_counter()
    scan = scan_images(samples)
    decoded = time.perf_counter() - started
    ok = scan.ok
    labels = np.array([s.label for s, good in zip(samples, ok, strict=True) if good])
    started = time.perf_counter()
    hash_only = group_near_duplicates(scan.hashes[ok], signatures=scan.signatures[ok])
    hashed = time.perf_counter() - started
    started = time.perf_counter()
    ids = group_near_duplicates(
        scan.hashes[ok], signatures=scan.signatures[ok], twins=scan.twins[ok], blocks=labels
    )
    matched = time.perf_counter() - started
    print(
        f"{folder}: {int(ok.sum()):,} images; decoding and hashing {decoded:.1f} s, "
        f"hash grouping {hashed:.1f} s ({len(duplicate_groups(hash_only))} groups), "
        f"with twins {matched:.1f} s ({len(duplicate_groups(ids))} groups)"
    )


if __name__ == "__main__":
    sample_recall()
    for argument in sys.argv[1:]:
        dataset_time(Path(argument).expanduser())
