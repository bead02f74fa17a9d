"""``covidcxr data inspect | phantoms | split | cache``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from covidcxr.cli.app import AllowOutside, Classes, Quiet, Workers, data_app
from covidcxr.cli.common import (
    fail,
    progress_bar,
)
from covidcxr.wording import plural


@data_app.command("inspect")
def data_inspect(
    path: Annotated[Path, typer.Argument(help="Dataset folder (any layout) or CSV manifest.")],
    classes: Classes = 3,
    out: Annotated[
        Path | None, typer.Option(help="Write the exploratory figures (PNG) to this folder.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
    duplicates: Annotated[
        bool, typer.Option(help="Look for near-duplicate images (perceptual hashes, twin matcher).")
    ] = True,
    workers: Workers = None,
    allow_outside: AllowOutside = False,
    quiet: Quiet = False,
) -> None:
    """Layout, class counts, sizes, modes, masks, sources, near-duplicates and unreadable files."""
    from covidcxr.data.inspect import format_report, inspect_dataset

    try:
        with progress_bar("Reading images", quiet or as_json) as progress:
            report = inspect_dataset(
                path, classes, out, duplicates, workers, progress, allow_outside=allow_outside
            )
    except (FileNotFoundError, ValueError) as error:
        raise fail(str(error)) from None
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        typer.echo(format_report(report))


@data_app.command("phantoms")
def data_phantoms(
    out: Annotated[Path, typer.Argument(help="Folder to write the dataset into.")],
    per_class: Annotated[int, typer.Option(help="Images per class.")] = 100,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same images).")] = 0,
    classes: Classes = 3,
    overwrite: Annotated[bool, typer.Option(help="Replace OUT if it is not empty.")] = False,
    quiet: Quiet = False,
) -> None:
    """Write synthetic chest X-ray phantoms in the COVID-19 Radiography Database's layout."""
    from covidcxr.data.phantoms import write_phantoms

    try:
        with progress_bar("Drawing phantoms", quiet) as progress:
            summary = write_phantoms(
                out,
                per_class,
                seed=seed,
                num_classes=classes,
                overwrite=overwrite,
                progress=progress,
            )
    except (FileExistsError, ValueError) as error:
        raise fail(str(error)) from None
    counts = ", ".join(f"{name} {count}" for name, count in summary.counts.items())
    typer.echo(f"Wrote phantoms to {summary.root} ({counts}) in {summary.seconds:.1f} s")


@data_app.command("split")
def data_split(
    path: Annotated[Path, typer.Argument(help="Dataset folder (any layout) or CSV manifest.")],
    out: Annotated[Path, typer.Option(help="CSV file to write the split to.")],
    fractions: Annotated[
        str, typer.Option(help="Train,validation,test fractions (the paper: 0.7,0.1,0.2).")
    ] = "0.7,0.1,0.2",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    classes: Classes = 3,
    workers: Workers = None,
    allow_outside: AllowOutside = False,
    quiet: Quiet = False,
) -> None:
    """Stratified split that keeps near-duplicate images (and manifest groups) together."""
    from covidcxr.data.splits import split_dataset

    try:
        parts = tuple(float(part) for part in fractions.split(","))
    except ValueError:
        raise fail(f"--fractions should be numbers like 0.7,0.1,0.2, got {fractions!r}") from None
    try:
        with progress_bar("Hashing images", quiet) as progress:
            result = split_dataset(
                path, out, parts, seed, classes, workers, progress, allow_outside=allow_outside
            )
    except (FileNotFoundError, ValueError) as error:
        raise fail(str(error)) from None
    typer.echo(result.describe())


@data_app.command("cache")
def data_cache(
    path: Annotated[Path, typer.Argument(help="Dataset folder (any layout) or CSV manifest.")],
    size: Annotated[int, typer.Option(help="Side of the square images to store.")] = 100,
    masks: Annotated[bool, typer.Option(help="Also cache the lung masks.")] = False,
    classes: Classes = 3,
    cache_dir: Annotated[
        Path | None, typer.Option(help="Cache folder (default $COVIDCXR_CACHE_DIR or ~/.cache).")
    ] = None,
    workers: Workers = None,
    allow_outside: AllowOutside = False,
    quiet: Quiet = False,
) -> None:
    """Decode and resize every image once into the on-disk cache that training reads."""
    import time

    from covidcxr.data.cache import ImageCache
    from covidcxr.data.layouts import discover
    from covidcxr.io import escape_path

    try:
        index = discover(path, classes, allow_outside=allow_outside)
    except (FileNotFoundError, ValueError) as error:
        raise fail(str(error)) from None
    if index.problems:
        count = plural(len(index.problems), "entry", "entries")
        typer.echo(f"{count} skipped or wrong before reading:")
        for problem, reason in index.problems:
            typer.echo(f"  {escape_path(problem)}: {reason}")
    cache = ImageCache(cache_dir)
    jobs = [("image", [s.path for s in index.samples])]
    if masks:
        jobs.append(("mask", [s.mask_path for s in index.samples if s.mask_path is not None]))
    for kind, paths in jobs:
        started = time.perf_counter()
        with progress_bar(f"Caching {kind}s", quiet) as progress:
            batch = cache.get_many(
                paths, (size, size), kind=kind, workers=workers, progress=progress
            )
        seconds = time.perf_counter() - started
        typer.echo(
            f"{kind}s: {len(paths):,} at {size}x{size} — {batch.hits:,} already cached, "
            f"{batch.misses:,} decoded, {len(batch.failures)} unreadable ({seconds:.1f} s)"
        )
        for failed, reason in batch.failures:
            typer.echo(f"  {escape_path(failed)}: {reason}")
    typer.echo(f"Cache: {cache.db_path}")
