"""The twin matcher: recall on re-exports of the real sample, and wall time on a dataset.

    python benchmarks/bench_twins.py                      # the real sample and its re-exports
    python benchmarks/bench_twins.py ~/data/COVID-19_Radiography_Dataset   # + a whole dataset
    python benchmarks/bench_twins.py --stand-in ~/data/stand-in FOLDER...   # build, then time it

Prints, per kind of re-export, how many of the sample's films were paired with it (one
re-export per film at a time, so no sibling can chain them), the highest score between two
distinct sample films, and for a dataset: decoding (hash + thumbnails) and matching times and
the groups found.

``--stand-in DEST FOLDER...`` first builds a stand-in of the whole database in DEST when the
database itself is not at hand: its four class folders at the database's sizes (21,165 films,
299×299 grey PNG), filled from the real films found in FOLDER... (any layout covidcxr reads).
Films are used once as they are, then mirrored, then upside down (so every film in the stand-in
is distinct), and :data:`STAND_IN_TWINS` COVID films also get one re-export each, so the stand-in
holds that many known twin pairs (the database's own record is ~470 in its COVID class). The
figures it prints are then for the twin pairs recovered among 21k films and the wall time of
``covidcxr data inspect`` on it.
"""

from __future__ import annotations

import json
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


def scan_and_group(samples: list) -> tuple[list, np.ndarray, object, float, float]:
    """Scan ``samples`` and group them as ``data inspect`` and ``data split`` do (hash, fine
    detail and twins, twins compared within a class): the readable samples, their group ids,
    the scan, and the seconds spent decoding and grouping."""
    from covidcxr.data.duplicates import group_near_duplicates
    from covidcxr.data.scan import scan_images

    started = time.perf_counter()
    scan = scan_images(samples)
    decoded = time.perf_counter() - started
    ok = scan.ok
    kept = [s for s, good in zip(samples, ok, strict=True) if good]
    started = time.perf_counter()
    ids = group_near_duplicates(
        scan.hashes[ok],
        signatures=scan.signatures[ok],
        twins=scan.twins[ok],
        blocks=np.array([s.label for s in kept]),
    )
    return kept, ids, scan, decoded, time.perf_counter() - started


def dataset_time(folder: Path) -> None:
    from covidcxr.data.duplicates import duplicate_groups, group_near_duplicates
    from covidcxr.data.layouts import discover

    kept, ids, scan, decoded, matched = scan_and_group(discover(folder).samples)
    ok = scan.ok
    started = time.perf_counter()
    hash_only = group_near_duplicates(scan.hashes[ok], signatures=scan.signatures[ok])
    hashed = time.perf_counter() - started
    print(
        f"{folder}: {len(kept):,} images; decoding and hashing {decoded:.1f} s, "
        f"hash grouping {hashed:.1f} s ({len(duplicate_groups(hash_only))} groups), "
        f"with twins {matched:.1f} s ({len(duplicate_groups(ids))} groups)"
    )


DATABASE_SIZES = {"COVID": 3616, "Normal": 10192, "Viral Pneumonia": 1345, "Lung Opacity": 6012}
"""Films per class folder of the COVID-19 Radiography Database (21,165 in all)."""
STAND_IN_TWINS = 470
_STAND_IN_SIDE = 299


def build_stand_in(dest: Path, sources: list[Path]) -> None:
    """Write the stand-in database to ``dest`` (see the module's docstring); a no-op when a
    finished one is there."""
    import cv2

    from covidcxr.data.layouts import discover
    from covidcxr.data.reexports import reexports

    done = dest / "stand-in.json"
    if done.is_file():
        return
    films: dict[str, list[Path]] = {}
    for source in sources:
        for sample in discover(source.expanduser()).samples:
            films.setdefault(sample.class_name, []).append(sample.path)
    for label in films:
        films[label].sort()
    rng = np.random.default_rng(0)
    # Lung Opacity has no real films here: it takes Normal and COVID films turned upside down
    # (the other classes use only the original and the mirror), so no film appears twice.
    pools = {
        "COVID": [(p, "as is") for p in films["COVID"]] + [(p, "mirror") for p in films["COVID"]],
        "Normal": [(p, "as is") for p in films["Normal"]]
        + [(p, "mirror") for p in films["Normal"]],
        "Viral Pneumonia": [(p, "as is") for p in films["Viral Pneumonia"]]
        + [(p, "mirror") for p in films["Viral Pneumonia"]],
        "Lung Opacity": [(p, "upside down") for p in films["Normal"] + films["COVID"]],
    }
    twins = 0
    kinds = None
    origin: dict[str, list[str]] = {}
    for label, size in DATABASE_SIZES.items():
        pool = pools[label]
        if len(pool) < size:
            raise SystemExit(f"{label}: {len(pool)} films available, the stand-in needs {size}")
        folder = dest / label / "images"
        folder.mkdir(parents=True, exist_ok=True)
        wanted = size - (STAND_IN_TWINS if label == "COVID" else 0)
        for index, (path, turn) in enumerate(pool[:wanted], start=1):
            grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            grey = cv2.resize(grey, (_STAND_IN_SIDE, _STAND_IN_SIDE), interpolation=cv2.INTER_AREA)
            grey = {"as is": grey, "mirror": grey[:, ::-1], "upside down": grey[::-1]}[turn]
            cv2.imwrite(str(folder / f"{label}-{index}.png"), np.ascontiguousarray(grey))
            origin[f"{label}/{label}-{index}.png"] = [str(path), turn]
            if label == "COVID" and index <= STAND_IN_TWINS:
                edits = reexports(grey)
                kinds = kinds or sorted(edits)
                edited = edits[kinds[int(rng.integers(len(kinds)))]]
                cv2.imwrite(str(folder / f"{label}-{wanted + index}.png"), edited)
                origin[f"{label}/{label}-{wanted + index}.png"] = [str(path), "re-export"]
                twins += 1
    record = {
        "films": sum(DATABASE_SIZES.values()),
        "twin_pairs": twins,
        "sources": [str(s) for s in sources],
        "origin": origin,
    }
    done.write_text(json.dumps(record) + "\n")


def stand_in_recall(dest: Path) -> None:
    """How many of the stand-in's known twin pairs ``covidcxr data inspect``'s grouping found,
    and the other groups it formed: those that repeat a group of the source films themselves
    (the twins the public copies already hold, turned alike) and any that do not (false)."""
    from covidcxr.data.duplicates import duplicate_groups
    from covidcxr.data.layouts import discover

    kept, ids, _, decoded, matched = scan_and_group(discover(dest, num_classes=4).samples)
    print(
        f"stand-in: {len(kept):,} images; decoding and hashing {decoded:.1f} s, grouping with "
        f"twins {matched:.1f} s"
    )
    by_name = {s.path.name: group for s, group in zip(kept, ids, strict=True)}
    wanted = DATABASE_SIZES["COVID"] - STAND_IN_TWINS
    found = sum(
        by_name[f"COVID-{i}.png"] == by_name[f"COVID-{wanted + i}.png"]
        for i in range(1, STAND_IN_TWINS + 1)
    )
    known = {f"COVID-{i}.png" for i in range(1, STAND_IN_TWINS + 1)}
    known |= {f"COVID-{wanted + i}.png" for i in range(1, STAND_IN_TWINS + 1)}
    other = [g for g in duplicate_groups(ids) if not any(kept[i].path.name in known for i in g)]
    record = json.loads((dest / "stand-in.json").read_text())
    source_group = _source_groups([Path(s) for s in record["sources"]])
    repeated, new = [], []
    for group in other:
        names = [f"{kept[i].class_name}/{kept[i].path.name}" for i in group]
        origins = [record["origin"][n] for n in names]
        alike = len({turn for _, turn in origins}) == 1
        same = len({source_group.get(path, path) for path, _ in origins}) == 1
        (repeated if alike and same else new).append(names)
    print(
        f"stand-in: {found} of {STAND_IN_TWINS} known twin pairs grouped "
        f"({100 * found / STAND_IN_TWINS:.1f} %); of the {len(other)} other groups, "
        f"{len(repeated)} repeat a group of the source films (their own twins), "
        f"{len(new)} do not (false groups)"
    )
    for names in new[:20]:
        print("    false?", ", ".join(names))


def _source_groups(sources: list[Path]) -> dict[str, int]:
    """Near-duplicate group of each source film (path -> group id, singletons left out)."""
    from covidcxr.data.duplicates import duplicate_groups
    from covidcxr.data.layouts import discover

    kept, ids, *_ = scan_and_group([s for source in sources for s in discover(source).samples])
    return {
        str(kept[i].path): number
        for number, group in enumerate(duplicate_groups(ids))
        for i in group
    }


def inspect_time(folder: Path) -> None:
    """Wall time of the command a user runs (``covidcxr data inspect --classes 4``)."""
    import subprocess

    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "covidcxr",
            "data",
            "inspect",
            str(folder),
            "--classes",
            "4",
            "--quiet",
            "--json",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    print(f"covidcxr data inspect {folder} --classes 4: {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    arguments = sys.argv[1:]
    if arguments[:1] == ["--stand-in"]:
        if len(arguments) < 3:
            raise SystemExit("usage: bench_twins.py --stand-in DEST FOLDER...")
        dest = Path(arguments[1]).expanduser()
        build_stand_in(dest, [Path(a) for a in arguments[2:]])
        inspect_time(dest)
        stand_in_recall(dest)
    else:
        sample_recall()
        for argument in arguments:
            dataset_time(Path(argument).expanduser())
