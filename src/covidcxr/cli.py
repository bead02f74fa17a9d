"""The ``covidcxr`` command line: parses arguments, calls library functions, prints results.

Heavy libraries (numpy, torch, matplotlib...) are imported inside the commands that need them so
that ``covidcxr --help`` answers at once.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="covidcxr",
    help="COVID-19 and viral pneumonia on chest X-rays (research use only, not a diagnostic "
    "device).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Inspect, generate, split and cache datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")

Classes = Annotated[
    int, typer.Option("--classes", help="3 (Normal, COVID, Viral Pneumonia) or 4 (+ Lung Opacity).")
]
Workers = Annotated[
    int | None, typer.Option(help="Decoding processes (default: all cores, at most 8).")
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"covidcxr {version('covidcxr')}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """COVID-19 and viral pneumonia on chest X-rays — research use only."""


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


@contextmanager
def _progress(description: str, quiet: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar with ETA on stderr; yields the ``progress(done, total)`` callback."""
    if quiet:
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


@data_app.command("inspect")
def data_inspect(
    path: Annotated[Path, typer.Argument(help="Dataset folder (any layout) or CSV manifest.")],
    classes: Classes = 3,
    out: Annotated[
        Path | None, typer.Option(help="Write the exploratory figures (PNG) to this folder.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
    duplicates: Annotated[
        bool, typer.Option(help="Look for near-duplicate images (perceptual hashes).")
    ] = True,
    workers: Workers = None,
    quiet: Quiet = False,
) -> None:
    """Layout, class counts, sizes, modes, masks, sources, near-duplicates and unreadable files."""
    from covidcxr.data.inspect import format_report, inspect_dataset

    try:
        with _progress("Reading images", quiet or as_json) as progress:
            report = inspect_dataset(path, classes, out, duplicates, workers, progress)
    except (FileNotFoundError, ValueError) as error:
        raise _fail(str(error)) from None
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
        with _progress("Drawing phantoms", quiet) as progress:
            summary = write_phantoms(
                out,
                per_class,
                seed=seed,
                num_classes=classes,
                overwrite=overwrite,
                progress=progress,
            )
    except (FileExistsError, ValueError) as error:
        raise _fail(str(error)) from None
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
    quiet: Quiet = False,
) -> None:
    """Stratified split that keeps near-duplicate images (and manifest groups) together."""
    from covidcxr.data.splits import split_dataset

    try:
        parts = tuple(float(part) for part in fractions.split(","))
    except ValueError:
        raise _fail(f"--fractions should be numbers like 0.7,0.1,0.2, got {fractions!r}") from None
    try:
        with _progress("Hashing images", quiet) as progress:
            result = split_dataset(path, out, parts, seed, classes, workers, progress)
    except (FileNotFoundError, ValueError) as error:
        raise _fail(str(error)) from None
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
    quiet: Quiet = False,
) -> None:
    """Decode and resize every image once into the on-disk cache that training reads."""
    import time

    from covidcxr.data.cache import ImageCache
    from covidcxr.data.layouts import discover

    try:
        index = discover(path, classes)
    except (FileNotFoundError, ValueError) as error:
        raise _fail(str(error)) from None
    cache = ImageCache(cache_dir)
    jobs = [("image", [s.path for s in index.samples])]
    if masks:
        jobs.append(("mask", [s.mask_path for s in index.samples if s.mask_path is not None]))
    for kind, paths in jobs:
        started = time.perf_counter()
        with _progress(f"Caching {kind}s", quiet) as progress:
            batch = cache.get_many(
                paths, (size, size), kind=kind, workers=workers, progress=progress
            )
        seconds = time.perf_counter() - started
        typer.echo(
            f"{kind}s: {len(paths):,} at {size}x{size} — {batch.hits:,} already cached, "
            f"{batch.misses:,} decoded, {len(batch.failures)} unreadable ({seconds:.1f} s)"
        )
        for failed, reason in batch.failures:
            typer.echo(f"  {failed}: {reason}")
    typer.echo(f"Cache: {cache.db_path}")


def run() -> None:  # pragma: no cover - console-script shim for `python -m covidcxr`
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run())
