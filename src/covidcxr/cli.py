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

from covidcxr.wording import plural

app = typer.Typer(
    name="covidcxr",
    help="COVID-19 and viral pneumonia on chest X-rays (research use only, not a diagnostic "
    "device).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: no "<bool>" beside flags, no box drawing in logs
)
data_app = typer.Typer(
    help="Inspect, generate, split and cache datasets.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(data_app, name="data")
segment_app = typer.Typer(
    help="Lung segmentation: train, predict, evaluate.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(segment_app, name="segment")

Classes = Annotated[
    int, typer.Option("--classes", help="3 (Normal, COVID, Viral Pneumonia) or 4 (+ Lung Opacity).")
]
Workers = Annotated[
    int | None, typer.Option(help="Decoding processes (default: all cores, at most 8).")
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
AllowOutside = Annotated[
    bool,
    typer.Option(
        "--allow-outside", help="Let a CSV manifest name files outside the manifest's folder."
    ),
]


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


#: Exit status of the commands that read inputs (predict, segment predict, explain); README,
#: "Exit codes". Usage errors (a bad flag, a missing model, an output refused) exit 2.
EXIT_SOME_FAILED = 1
EXIT_NONE_READ = 3


def _list_skipped(failures: list[tuple[Path, str]]) -> None:
    """The files a batch command could not use, with their reasons, on stderr."""
    if failures:
        from covidcxr.io import escape_path

        typer.echo(f"{plural(len(failures), 'file')} skipped:", err=True)
        for path, reason in failures:
            typer.echo(f"  {escape_path(path)}: {reason}", err=True)


def _finish(done: int, failures: list[tuple[Path, str]]) -> None:
    """List the skipped files, then exit 0 when nothing failed, :data:`EXIT_SOME_FAILED` when
    some inputs failed and :data:`EXIT_NONE_READ` when none could be used, so scripts notice."""
    _list_skipped(failures)
    if done == 0:
        typer.echo("error: no input could be read (see the files skipped above)", err=True)
        raise typer.Exit(EXIT_NONE_READ)
    if failures:
        raise typer.Exit(EXIT_SOME_FAILED)


def _evaluation_folder(model: Path) -> Path:
    """Where ``evaluate`` writes without ``--out``: inside a model or run folder of the user's,
    ``./NAME-evaluation`` for a pretrained model (the package is never written into)."""
    from covidcxr import zoo

    if zoo.is_pretrained(zoo.resolve(model)):
        return Path(f"{model}-evaluation")
    return model / "evaluation"


@contextmanager
def _progress(description: str, quiet: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar with ETA on stderr; yields the ``progress(done, total)`` callback. When
    stderr is not a terminal (a log file, a pipe), plain lines at every tenth instead."""
    if quiet:
        yield None
        return
    if not sys.stderr.isatty():
        yield _progress_lines(description)
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


#: Fewer items than this get no progress lines in a log file.
MIN_PROGRESS_LINES = 20


def _progress_lines(description: str) -> Callable[[int, int], None]:
    """``progress(done, total)`` that writes ``description: done/total`` to stderr when a
    further tenth of the work is done: a log file gets about ten lines, no control characters."""
    shown = {"tenth": -1}

    def update(done: int, total: int) -> None:
        if 0 < total < MIN_PROGRESS_LINES:  # a handful of files: the results say enough
            return
        tenth = 10 * done // total if total else 0
        if tenth > shown["tenth"] and (done or not total):
            shown["tenth"] = tenth
            typer.echo(f"{description}: {done:,}/{total:,}", err=True)

    return update


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
        with _progress("Reading images", quiet or as_json) as progress:
            report = inspect_dataset(
                path, classes, out, duplicates, workers, progress, allow_outside=allow_outside
            )
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
    allow_outside: AllowOutside = False,
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
            result = split_dataset(
                path, out, parts, seed, classes, workers, progress, allow_outside=allow_outside
            )
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
        raise _fail(str(error)) from None
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
            typer.echo(f"  {escape_path(failed)}: {reason}")
    typer.echo(f"Cache: {cache.db_path}")


def _train_overrides(**flags: object) -> dict[str, object]:
    """The flags the user actually gave (None means "not given")."""
    return {key: value for key, value in flags.items() if value is not None}


def _devices(value: str | None) -> int | str | None:
    if value is None:
        return None
    return int(value) if value.lstrip("-").isdigit() else value


@app.command("train")
def train_command(
    data: Annotated[
        Path | None,
        typer.Option(
            help="Dataset folder (any layout) or CSV manifest. Required, unless --config or "
            "--resume gives it."
        ),
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Model name (see `covidcxr models`). Default seed-cnn.")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Run folder (default runs/MODEL).")] = None,
    config_file: Annotated[
        Path | None, typer.Option("--config", help="YAML file of settings; flags override it.")
    ] = None,
    augment: Annotated[
        bool | None,
        typer.Option("--augment/--no-augment", help="Random rotation, shift, zoom and flip."),
    ] = None,
    balance: Annotated[
        str | None, typer.Option(help="Class imbalance: none, weights (loss) or sampler.")
    ] = None,
    lungs: Annotated[
        str | None,
        typer.Option(help="What the classifier sees: none, crop (lung box) or mask (lungs only)."),
    ] = None,
    seg_model: Annotated[
        Path | None,
        typer.Option(help="Lung segmentation model for --lungs (default: the dataset's masks)."),
    ] = None,
    feature_cache: Annotated[
        bool | None,
        typer.Option(
            "--feature-cache/--no-feature-cache",
            help="Frozen backbones without --augment: run the backbone once per image.",
        ),
    ] = None,
    fine_tune: Annotated[
        int | None,
        typer.Option(help="Pretrained backbones: also train the last N parts of the trunk."),
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Most epochs (paper: 50; VGG16 10).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size (paper: 64).")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Adam learning rate.")] = None,
    lr_schedule: Annotated[
        str | None,
        typer.Option(help="none, or plateau (divide by 5 when 3 epochs bring no progress)."),
    ] = None,
    patience: Annotated[
        int | None, typer.Option(help="Early stopping: epochs without a lower val loss.")
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(help="default, or paper: the paper's own protocol (seed-cnn: patience 3)."),
    ] = None,
    fractions: Annotated[
        str | None, typer.Option(help="Train,val,test fractions (paper: 0.7,0.1,0.2).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (split, init, batches).")] = None,
    split: Annotated[
        Path | None, typer.Option(help="Use this split CSV (from `data split`) instead.")
    ] = None,
    weights: Annotated[
        str | None,
        typer.Option(help="Trunk weights: imagenet, none, or a local file (offline machines)."),
    ] = None,
    classes: Annotated[int | None, typer.Option("--classes", help="3 or 4 classes.")] = None,
    accelerator: Annotated[str | None, typer.Option(help="auto, cpu, gpu...")] = None,
    devices: Annotated[str | None, typer.Option(help="Devices per node: 1, 2, auto...")] = None,
    strategy: Annotated[str | None, typer.Option(help="auto, ddp, ddp_spawn...")] = None,
    num_nodes: Annotated[int | None, typer.Option(help="Machines (multi-node DDP).")] = None,
    precision: Annotated[str | None, typer.Option(help="32-true, bf16-mixed, 16-mixed.")] = None,
    workers: Workers = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Image cache folder.")] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --out from its last checkpoint.")
    ] = False,
    allow_outside: AllowOutside = False,
    quiet: Quiet = False,
) -> None:
    """Train a classifier (the paper's models and stronger backbones) with early stopping,
    checkpoints, curves, confusion matrix, metrics and a saved model."""
    parts = None
    if fractions is not None:
        try:
            parts = [float(part) for part in fractions.split(",")]
        except ValueError:
            raise _fail(
                f"--fractions should be numbers like 0.7,0.1,0.2, got {fractions!r}"
            ) from None
    flags = _train_overrides(
        data=None if data is None else str(data),
        model=model,
        out=None if out is None else str(out),
        augment=augment,
        balance=balance,
        lungs=lungs,
        seg_model=None if seg_model is None else str(seg_model),
        feature_cache=feature_cache,
        fine_tune=fine_tune,
        max_epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        lr_schedule=lr_schedule,
        patience=patience,
        preset=preset,
        fractions=parts,
        seed=seed,
        split=None if split is None else str(split),
        weights=weights,
        num_classes=classes,
        accelerator=accelerator,
        devices=_devices(devices),
        strategy=strategy,
        num_nodes=num_nodes,
        precision=precision,
        decode_workers=workers,
        cache_dir=None if cache_dir is None else str(cache_dir),
        allow_outside=allow_outside or None,
    )
    _run_training(flags, config_file, resume, out, quiet, task="classification")


def _run_training(
    flags: dict[str, object],
    config_file: Path | None,
    resume: bool,
    out: Path | None,
    quiet: bool,
    task: str,
) -> None:
    """Settings from the YAML file (the run's own on --resume) overridden by the flags given,
    then the training engine, with Lightning's chatter quieted."""
    from covidcxr.config import config_from_mapping, load_yaml

    try:
        if resume:
            if out is None:
                raise ValueError("--resume needs --out: the run folder to continue")
            saved = out / "config.yaml"
            if not saved.is_file():
                raise FileNotFoundError(f"{out}: nothing to resume (no config.yaml there)")
            config_file = saved
        settings = load_yaml(config_file) if config_file is not None else {}
        settings |= flags
        if not settings.get("data"):
            raise ValueError(
                "--data is required: the dataset folder or CSV manifest to train on (or a "
                "`data:` line in the --config file)"
            )
        if quiet:
            settings["quiet"] = True
        config = config_from_mapping(settings)
        from covidcxr.models import get_model_spec

        spec = get_model_spec(config.model, task)
        if spec.task != task:
            command = "covidcxr segment train" if spec.task == "segmentation" else "covidcxr train"
            raise ValueError(f"{spec.name} is a {spec.task} model: train it with `{command}`")
    except (FileNotFoundError, ValueError) as error:
        raise _fail(str(error)) from None

    from covidcxr.engine.train import train  # quiets Lightning's chatter itself
    from covidcxr.models import WeightsUnavailableError

    bars = _ProgressFactory(config.quiet)
    try:
        train(config, resume=resume, progress_factory=bars, log=typer.echo)
    except (FileNotFoundError, FileExistsError, ValueError, WeightsUnavailableError) as error:
        raise _fail(str(error)) from None
    finally:
        bars.close()


class _ProgressFactory:
    """Hands out progress callbacks for library functions; each new bar replaces the last."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self._context = None

    def __call__(self, description: str) -> Callable[[int, int], None] | None:
        self.close()
        if self.quiet:
            return None
        self._context = _progress(description, quiet=False)
        return self._context.__enter__()

    def close(self) -> None:
        if self._context is not None:
            self._context.__exit__(None, None, None)
            self._context = None


@app.command("evaluate")
def evaluate_command(
    model: Annotated[
        Path, typer.Argument(help="A run folder, a saved model folder or a pretrained name.")
    ],
    data: Annotated[Path, typer.Option(help="Dataset folder (any layout) or CSV manifest.")],
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default MODEL/evaluation).")
    ] = None,
    split: Annotated[
        Path | None, typer.Option(help="Score only one part of this split CSV.")
    ] = None,
    subset: Annotated[str, typer.Option(help="Which part of --split: train, val, test.")] = "test",
    seg_model: Annotated[
        Path | None, typer.Option(help="Lung segmenter for a classifier trained with --lungs.")
    ] = None,
    external: Annotated[
        list[Path] | None,
        typer.Option(
            help="An external set (folder or manifest) to score besides --data and compare "
            "with it: sensitivity, specificity, PPV with intervals, per source. Repeatable."
        ),
    ] = None,
    workers: Workers = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Image cache folder.")] = None,
    quiet: Quiet = False,
) -> None:
    """Score a saved model on any dataset: metrics.json, confusion matrix, predictions.csv."""
    from covidcxr.engine.evaluate import evaluate

    target = out or _evaluation_folder(model)
    bars = _ProgressFactory(quiet)
    try:
        metrics = evaluate(
            model, data, target, split, subset, workers, cache_dir, bars, seg_model, external or ()
        )
    except (FileNotFoundError, ValueError) as error:
        raise _fail(str(error)) from None
    finally:
        bars.close()
    test = metrics["test"]
    typer.echo(
        f"{metrics['model']} on {metrics['data']}: {test['num_samples']} images, "
        f"accuracy {100 * test['accuracy']:.2f} %, macro-F1 {100 * test['macro_f1']:.2f} %"
    )
    for name, scores in test["per_class"].items():
        typer.echo(
            f"  {name:<16} recall {100 * scores['recall']:6.2f} %  "
            f"specificity {100 * scores['specificity']:6.2f} %"
        )
    if metrics["unreadable"]:
        typer.echo(f"{plural(len(metrics['unreadable']), 'unreadable image')} skipped:")
        for item in metrics["unreadable"]:
            typer.echo(f"  {item['path']}: {item['reason']}")
    for result in metrics.get("external", []):
        typer.echo(f"External set {result['name']}: {result['verdict']}")
        for name, figures in result["per_class"].items():
            cells = []
            for key in ("sensitivity", "specificity", "ppv"):
                value = figures[key]
                if value["value"] is None:
                    cells.append(f"{key} n/a")
                    continue
                interval = (
                    f" ({100 * value['low']:.0f}–{100 * value['high']:.0f})"
                    if value["low"] is not None
                    else ""
                )
                change = (
                    f", {100 * value['difference']:+.1f}" if value["difference"] is not None else ""
                )
                cells.append(f"{key} {100 * value['value']:.1f} %{interval}{change}")
            typer.echo(f"  {name:<16} " + "; ".join(cells))
        for warning in result["per_source"].get("single_source_classes", []):
            typer.echo(f"  note: {warning['warning']}")
    typer.echo(f"Outputs in {target}")


@app.command("predict")
def predict_command(
    model: Annotated[
        Path,
        typer.Argument(
            help="A pretrained model's name (`covidcxr models`), a run or model folder, or an "
            "exported .onnx file."
        ),
    ],
    inputs: Annotated[list[Path], typer.Argument(help="Image files and/or folders (any depth).")],
    out: Annotated[
        Path | None,
        typer.Option(help="Write predictions here as they come (.csv, .jsonl or .json)."),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume", help="Skip files already in --out and append to it (same model only)."
        ),
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --out.")] = False,
    runtime: Annotated[
        str, typer.Option(help="torch, or onnx (ONNX Runtime; run `covidcxr export` first).")
    ] = "torch",
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 64,
    seg_model: Annotated[
        Path | None, typer.Option(help="Lung segmenter for a classifier trained with --lungs.")
    ] = None,
    workers: Workers = None,
    quiet: Quiet = False,
) -> None:
    """Class probabilities for images (PNG, JPEG, DICOM), streamed over folders of any size;
    bad files are listed and skipped."""
    from covidcxr.predict import predict_files

    if resume and out is None:
        raise _fail("--resume needs --out: the file whose predictions to keep and extend")

    def show(rows: list[dict]) -> None:
        for row in rows:
            unlike = "\tunfamiliar: unlike its training films" if row.get("unfamiliar") else ""
            typer.echo(f"{row['path']}\t{row['predicted']}\t{row['confidence']:.3f}{unlike}")

    try:
        with _progress("Predicting", quiet) as progress:
            result = predict_files(
                model, inputs, out, batch_size, workers, progress, seg_model,
                runtime=runtime, resume=resume, force=force, keep_rows=False,
                on_rows=show if out is None else None,
                warn=lambda message: typer.echo(f"warning: {message}", err=True),
            )  # fmt: skip
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        raise _fail(str(error)) from None
    if out is not None:
        already = f" ({result.skipped:,} already there)" if resume else ""
        typer.echo(f"Wrote {plural(result.predicted, 'prediction')} to {result.out}{already}")
    _finish(result.predicted + result.skipped, result.failures)


@app.command("export")
def export_command(
    model: Annotated[
        Path, typer.Argument(help="A run folder, a saved model folder or a pretrained name.")
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            help="The .onnx file (default: model.onnx in the model folder; ./NAME.onnx for "
            "a pretrained model)."
        ),
    ] = None,
    check: Annotated[
        list[Path] | None,
        typer.Option(help="Images or folders to compare ONNX Runtime with PyTorch on."),
    ] = None,
) -> None:
    """Export a model to ONNX (one file; preprocessing and calibration inside) and check that
    ONNX Runtime gives PyTorch's probabilities."""
    from covidcxr.export import PARITY_TOLERANCE, export_onnx

    try:
        images = None
        if check:
            from covidcxr.io import ImageReadError, read_image
            from covidcxr.predict import iter_image_files

            images = []
            for path, reason in iter_image_files(check):
                if reason is not None:
                    raise FileNotFoundError(f"{path}: {reason}")
                try:
                    images.append(read_image(path))
                except ImageReadError as error:
                    typer.echo(f"skipped {error}", err=True)
            if not images:
                raise ValueError(f"no readable images in {', '.join(map(str, check))}")
        result = export_onnx(model, out, images)
    except (FileNotFoundError, ValueError) as error:
        raise _fail(str(error)) from None
    source = "check images" if check else "synthetic images"
    typer.echo(f"Wrote {result.path}")
    typer.echo(
        f"Parity with PyTorch on {result.images_checked} {source}: max |difference| of "
        f"probabilities {result.max_abs_difference:.2e} (tolerance {PARITY_TOLERANCE:g})"
    )
    if result.segmenter_path is not None:
        typer.echo(
            f"Wrote its lung segmenter {result.segmenter_path} (max |difference| of lung "
            f"probabilities per pixel {result.segmenter_max_abs_difference:.2e}); whole path "
            f"(segment, focus, classify): {result.end_to_end_max_abs_difference:.2e}"
        )


@app.command("compare")
def compare_command(
    runs: Annotated[list[Path], typer.Argument(help="Run folders to compare.")],
    out: Annotated[
        Path | None, typer.Option(help="Write comparison.csv and confusion_matrices.png here.")
    ] = None,
) -> None:
    """The paper-style table (epochs, train / val / test accuracy, per-class recall) and a
    side-by-side confusion-matrix figure."""
    from covidcxr.evaluation.compare import (
        compare_runs,
        format_table,
        plot_test_confusion_matrices,
        write_table,
    )

    try:
        table = compare_runs(runs)
        typer.echo(format_table(table))
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            written = [write_table(table, out / "comparison.csv")]
            written.append(plot_test_confusion_matrices(table, out / "confusion_matrices.png"))
            typer.echo("Wrote " + ", ".join(str(p) for p in written))
    except (FileNotFoundError, ValueError) as error:
        raise _fail(str(error)) from None


@segment_app.command("train")
def segment_train(
    data: Annotated[
        Path | None,
        typer.Option(
            help="Dataset folder with lung masks (or a manifest). Required, unless --config or "
            "--resume gives it."
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Run folder (default runs/unet).")] = None,
    model: Annotated[str, typer.Option(help="Segmentation model.")] = "unet",
    config_file: Annotated[
        Path | None, typer.Option("--config", help="YAML file of settings; flags override it.")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Most epochs (default 30).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size (default 8).")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Adam learning rate.")] = None,
    patience: Annotated[
        int | None, typer.Option(help="Early stopping: epochs without a lower val loss.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    split: Annotated[Path | None, typer.Option(help="Use this split CSV.")] = None,
    augment: Annotated[
        bool | None,
        typer.Option(
            "--augment/--no-augment",
            help="Random flips, zoom, rotation, shift and exposure (image and mask alike).",
        ),
    ] = None,
    postprocess: Annotated[
        bool | None,
        typer.Option(
            "--postprocess/--no-postprocess",
            help="Keep the two largest lung parts and fill holes (measured both ways).",
        ),
    ] = None,
    accelerator: Annotated[str | None, typer.Option(help="auto, cpu, gpu...")] = None,
    devices: Annotated[str | None, typer.Option(help="Devices per node.")] = None,
    strategy: Annotated[str | None, typer.Option(help="auto, ddp...")] = None,
    workers: Workers = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Image cache folder.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out.")] = False,
    allow_outside: AllowOutside = False,
    quiet: Quiet = False,
) -> None:
    """Train a lung U-Net on the dataset's own masks (any mask size, grey or RGB)."""
    flags = _train_overrides(
        data=None if data is None else str(data),
        model=model if not resume else None,
        out=str(out or Path("runs") / model),
        max_epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        patience=patience,
        seed=seed,
        split=None if split is None else str(split),
        augment=augment,
        postprocess=postprocess,
        accelerator=accelerator,
        devices=_devices(devices),
        strategy=strategy,
        decode_workers=workers,
        cache_dir=None if cache_dir is None else str(cache_dir),
        allow_outside=allow_outside or None,
    )
    _run_training(flags, config_file, resume, out, quiet, task="segmentation")


@segment_app.command("predict")
def segment_predict(
    model: Annotated[
        Path, typer.Argument(help="A segmentation run or model folder, or a pretrained name.")
    ],
    inputs: Annotated[list[Path], typer.Argument(help="Image files and/or folders.")],
    out: Annotated[Path, typer.Option(help="Folder for the mask and overlay PNGs.")],
    postprocess: Annotated[
        bool | None, typer.Option("--postprocess/--no-postprocess", help="Override the model's.")
    ] = None,
    quiet: Quiet = False,
) -> None:
    """Lung masks at each input's own size, plus overlays of the lung outline on the X-ray."""
    from covidcxr.segmentation.inference import segment_files

    try:
        with _progress("Segmenting", quiet) as progress:
            result = segment_files(model, inputs, out, postprocess, progress)
    except (FileNotFoundError, ValueError) as error:
        raise _fail(str(error)) from None
    typer.echo(f"Wrote {plural(len(result.rows), 'mask')} and overlays to {out}")
    _finish(len(result.rows), result.failures)


@segment_app.command("evaluate")
def segment_evaluate(
    model: Annotated[
        Path, typer.Argument(help="A segmentation run or model folder, or a pretrained name.")
    ],
    data: Annotated[Path, typer.Option(help="Dataset with lung masks.")],
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default MODEL/evaluation).")
    ] = None,
    split: Annotated[Path | None, typer.Option(help="Score one part of this split CSV.")] = None,
    subset: Annotated[str, typer.Option(help="Which part of --split.")] = "test",
    postprocess: Annotated[
        bool | None, typer.Option("--postprocess/--no-postprocess", help="Override the model's.")
    ] = None,
    quiet: Quiet = False,
) -> None:
    """Dice, IoU and 95 % Hausdorff distance per image and averaged, and the worst cases."""
    from covidcxr.segmentation.inference import evaluate_segmentation

    target = out or _evaluation_folder(model)
    try:
        with _progress("Segmenting", quiet) as progress:
            metrics = evaluate_segmentation(
                model, data, target, split, subset, postprocess, progress
            )
    except (FileNotFoundError, ValueError) as error:
        raise _fail(str(error)) from None
    hd95 = "n/a" if metrics["hd95"] is None else f"{metrics['hd95']:.2f} px"
    typer.echo(
        f"{metrics['model']} on {metrics['num_images']} images: Dice {metrics['dice']:.4f}, "
        f"IoU {metrics['iou']:.4f}, HD95 {hd95} (post-processing "
        f"{'on' if metrics['postprocess'] else 'off'})"
    )
    typer.echo(f"Outputs in {target}: metrics.json, per_image.csv, worst_cases.png")


@app.command("explain")
def explain_command(
    model: Annotated[
        Path, typer.Argument(help="A run folder, a saved classifier folder or a pretrained name.")
    ],
    inputs: Annotated[list[Path], typer.Argument(help="Image files and/or folders.")],
    out: Annotated[Path, typer.Option(help="Folder for the heatmap overlays.")],
    method: Annotated[str, typer.Option(help="gradcam or gradcam++.")] = "gradcam",
    seg_model: Annotated[
        Path | None, typer.Option(help="Lung segmenter: draws the lungs, measures the share.")
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help="Dataset whose own lung masks to draw (when it has them).")
    ] = None,
    quiet: Quiet = False,
) -> None:
    """Grad-CAM heatmaps over the X-rays, with the lung outline and the share of the evidence
    inside the lungs when masks are known."""
    from covidcxr.explain import explain_files

    try:
        masks = None
        if data is not None:
            from covidcxr.data.layouts import discover

            index = discover(data, num_classes=4)
            masks = {s.path: s.mask_path for s in index.samples if s.mask_path is not None}
        with _progress("Explaining", quiet) as progress:
            result = explain_files(model, inputs, out, method, masks, seg_model, progress)
    except (FileNotFoundError, ValueError) as error:
        raise _fail(str(error)) from None
    for row in result.rows:
        share = (
            "" if row["lung_fraction"] is None else f"  {100 * row['lung_fraction']:.0f} % in lungs"
        )
        typer.echo(f"{row['path']}\t{row['predicted']}\t{row['confidence']:.3f}{share}")
    typer.echo(f"Wrote {plural(len(result.rows), 'overlay')} to {out}")
    _finish(len(result.rows), result.failures)


@app.command("report")
def report_command(
    run: Annotated[Path, typer.Argument(help="A classifier's run folder.")],
    out: Annotated[Path, typer.Option(help="The HTML file to write.")] = Path("report.html"),
    data: Annotated[
        Path | None,
        typer.Option(help="The dataset the run trained on: adds Grad-CAM, sources, probes."),
    ] = None,
    external: Annotated[
        list[Path] | None,
        typer.Option(help="An external set to score and compare with the test split. Repeatable."),
    ] = None,
    workers: Workers = None,
    quiet: Quiet = False,
) -> None:
    """One self-contained HTML report: data, curves, results with confidence intervals,
    calibration, Grad-CAM gallery, per-source results, shortcut probes, external sets, leakage."""
    from covidcxr.evaluation.report import build_report

    bars = _ProgressFactory(quiet)
    try:
        result = build_report(run, out, data, workers, bars, external or ())
    except (FileNotFoundError, ValueError) as error:
        raise _fail(str(error)) from None
    finally:
        bars.close()
    for section in result.sections:
        typer.echo(f"{section.title}: {section.finding}")
    typer.echo(f"Report: {result.path}")


@app.command("serve")
def serve_command(
    model: Annotated[
        Path | None,
        typer.Argument(
            help="A pretrained classifier's name, or a run / model folder (default: the best "
            "pretrained classifier, with the pretrained lung model)."
        ),
    ] = None,
    seg: Annotated[
        Path | None, typer.Option("--seg", help="Lung segmentation model: lung outlines.")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    max_upload_mb: Annotated[float, typer.Option(help="Largest upload accepted (413).")] = 32.0,
    timeout: Annotated[float, typer.Option(help="Seconds a request may take (504).")] = 60.0,
    max_pending: Annotated[
        int, typer.Option(help="Requests analysed or waiting at once; more get 503.")
    ] = 32,
    decode_budget_mb: Annotated[
        float,
        typer.Option(help="Memory for decoded images in flight (MiB); requests wait for it."),
    ] = 1536.0,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            help="Host header to answer (repeatable; '*' any, '*.example.org' a domain). "
            "Default: loopback names on loopback, any name on 0.0.0.0."
        ),
    ] = None,
) -> None:
    """Serve a model over HTTP: POST /predict, GET /health, GET /model, and a page at / to drop
    X-rays on (research use only)."""
    from covidcxr.service.app import ServiceSettings, serve

    try:
        settings = ServiceSettings(
            max_upload_mb=max_upload_mb,
            timeout_s=timeout,
            max_pending=max_pending,
            decode_budget_mb=decode_budget_mb,
            allowed_hosts=tuple(allowed_host) if allowed_host else None,
        )
    except ValueError as error:
        message = str(error)
        for setting in ("max_upload_mb", "timeout_s", "max_pending", "decode_budget_mb"):
            flag = "--timeout" if setting == "timeout_s" else "--" + setting.replace("_", "-")
            message = message.replace(f"{setting}=", f"{flag} ").replace(setting, flag)
        message = message.replace("allowed_hosts", "--allowed-host")
        raise _fail(message) from None

    def announce(model: str | Path, seg: str | Path | None) -> None:
        lungs = f" with lung model {seg}" if seg is not None else ""
        shown = f"[{host}]" if ":" in host else host
        typer.echo(
            f"covidcxr: serving {model}{lungs} on http://{shown}:{port}/  (research use only)"
        )

    try:
        serve(model, seg, host, port, settings, announce=announce)
    except (OSError, ValueError) as error:  # FileNotFoundError is an OSError
        raise _fail(str(error)) from None


@app.command("models")
def models_command() -> None:
    """The pretrained models that ship with covidcxr (use them by name), then the
    architectures you can train."""
    from covidcxr import zoo
    from covidcxr.artifact import read_card
    from covidcxr.models import get_model_spec, list_models

    names = zoo.pretrained_names()
    if names:
        typer.echo("Pretrained (use by name: predict, serve, explain, export, --seg-model):")
        for name in names:
            card, _ = read_card(name)
            typer.echo(f"  {name:<22} {card.task:<14} {_card_figure(card)}")
            trained_on = card.training_data.get("name", "unknown data")
            typer.echo(f"  {'':<22} trained on {trained_on}")
        typer.echo("")
    typer.echo("Architectures (covidcxr train --model NAME / segment train --model NAME):")
    for name in list_models():
        spec = get_model_spec(name)
        size = f"{spec.input_size}x{spec.input_size}"
        typer.echo(f"  {name:<22} {spec.task:<14} {size:<8} {spec.description}")


def _card_figure(card) -> str:
    """The headline test figure of a model card, with the data it was measured on."""
    metrics = card.metrics
    if card.task == "segmentation":
        dice = metrics.get("test_dice")
        return "" if dice is None else f"test Dice {dice:.3f}"
    accuracy = metrics.get("test_accuracy")
    if accuracy is None:
        return ""
    covid = metrics.get("test_per_class", {}).get("COVID", {}).get("recall")
    recall = "" if covid is None else f", COVID recall {100 * covid:.1f} %"
    return (
        f"test accuracy {100 * accuracy:.1f} %{recall} ({metrics.get('test_images', '?')} images)"
    )


def run() -> None:  # pragma: no cover - console-script shim for `python -m covidcxr`
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run())
