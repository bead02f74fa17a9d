"""``covidcxr predict | export`` and ``covidcxr segment predict``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from covidcxr.cli.app import Quiet, Workers, app, segment_app
from covidcxr.cli.common import (
    fail,
    finish,
    progress_bar,
)
from covidcxr.wording import plural


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
    engine: Annotated[
        str,
        typer.Option(
            help="local (processes on this machine), or ray (a Ray cluster; --out is then a "
            "folder of Parquet and CSV tables; pip install 'covidcxr[ray]')."
        ),
    ] = "local",
    address: Annotated[
        str | None,
        typer.Option(
            help="--engine ray: the cluster (auto, HOST:PORT or ray://HOST:PORT; default "
            "$RAY_ADDRESS, else a new cluster on this machine)."
        ),
    ] = None,
    concurrency: Annotated[
        int, typer.Option(help="--engine ray: classifier actors, each loading the model once.")
    ] = 1,
    num_cpus: Annotated[float, typer.Option(help="--engine ray: CPUs per actor.")] = 1.0,
    num_gpus: Annotated[
        float, typer.Option(help="--engine ray: GPUs per actor (0.25: four actors per GPU).")
    ] = 0.0,
    quiet: Quiet = False,
) -> None:
    """Class probabilities for images (PNG, JPEG, DICOM), streamed over folders of any size
    (or, with --engine ray, over a Ray cluster); bad files are listed and skipped."""
    from covidcxr.inference.predict import predict_files

    if engine not in ("local", "ray"):
        raise fail(f"--engine should be local or ray, got {engine!r}")
    if resume and out is None:
        raise fail("--resume needs --out: the file whose predictions to keep and extend")
    if engine == "ray":
        if out is None:
            raise fail("--engine ray needs --out: the folder for the Parquet and CSV tables")
        if runtime != "torch":
            raise fail("--engine ray runs PyTorch models; leave out --runtime")
        _predict_on_ray(
            model, inputs, out, resume=resume, force=force, batch_size=batch_size,
            seg_model=seg_model, address=address, concurrency=concurrency, num_cpus=num_cpus,
            num_gpus=num_gpus, quiet=quiet,
        )  # fmt: skip
        return

    def show(rows: list[dict]) -> None:
        for row in rows:
            unlike = "\tunfamiliar: unlike its training films" if row.get("unfamiliar") else ""
            typer.echo(f"{row['path']}\t{row['predicted']}\t{row['confidence']:.3f}{unlike}")

    try:
        with progress_bar("Predicting", quiet) as progress:
            result = predict_files(
                model, inputs, out, batch_size, workers, progress, seg_model,
                runtime=runtime, resume=resume, force=force, keep_rows=False,
                on_rows=show if out is None else None,
                warn=lambda message: typer.echo(f"warning: {message}", err=True),
            )  # fmt: skip
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        raise fail(str(error)) from None
    if out is not None:
        already = f" ({result.skipped:,} already there)" if resume else ""
        typer.echo(f"Wrote {plural(result.predicted, 'prediction')} to {result.out}{already}")
    finish(result.predicted + result.skipped, result.failures)


def _predict_on_ray(
    model: Path, inputs: list[Path], out: Path, *, quiet: bool, **options: object
) -> None:
    """``predict --engine ray``: :func:`covidcxr.archive.predict_on_ray` into the folder ``out``."""
    from covidcxr.archive import RayMissingError, predict_on_ray

    try:
        with progress_bar("Predicting", quiet) as progress:
            result = predict_on_ray(
                model, inputs, out, progress=progress,
                warn=lambda message: typer.echo(f"warning: {message}", err=True), **options,
            )  # fmt: skip
    except RayMissingError as error:
        raise fail(str(error)) from None
    except (FileNotFoundError, FileExistsError, ValueError, ConnectionError) as error:
        raise fail(str(error)) from None
    already = f" ({result.skipped:,} already there)" if options.get("resume") else ""
    typer.echo(
        f"Wrote {plural(result.predicted, 'prediction')} to {out}/predictions.parquet and "
        f"predictions.csv{already}"
    )
    finish(result.predicted + result.skipped, result.failures)


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
    from covidcxr.inference.export import PARITY_TOLERANCE, export_onnx

    try:
        images = None
        if check:
            from covidcxr.inference.predict import iter_image_files
            from covidcxr.io import ImageReadError, read_image

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
        raise fail(str(error)) from None
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
    from covidcxr.inference.segment import segment_files

    try:
        with progress_bar("Segmenting", quiet) as progress:
            result = segment_files(model, inputs, out, postprocess, progress)
    except (FileNotFoundError, ValueError) as error:
        raise fail(str(error)) from None
    typer.echo(f"Wrote {plural(len(result.rows), 'mask')} and overlays to {out}")
    finish(len(result.rows), result.failures)
