"""``covidcxr evaluate | compare | explain | report`` and ``covidcxr segment evaluate``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from covidcxr.cli.app import Quiet, Workers, app, segment_app
from covidcxr.cli.common import (
    ProgressBars,
    evaluation_folder,
    fail,
    finish,
    progress_bar,
)
from covidcxr.wording import plural


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
    from covidcxr.analysis.evaluate import evaluate

    target = out or evaluation_folder(model)
    bars = ProgressBars(quiet)
    try:
        metrics = evaluate(
            model, data, target, split, subset, workers, cache_dir, bars, seg_model, external or ()
        )
    except (FileNotFoundError, ValueError) as error:
        raise fail(str(error)) from None
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


@app.command("compare")
def compare_command(
    runs: Annotated[list[Path], typer.Argument(help="Run folders to compare.")],
    out: Annotated[
        Path | None, typer.Option(help="Write comparison.csv and confusion_matrices.png here.")
    ] = None,
) -> None:
    """The paper-style table (epochs, train / val / test accuracy, per-class recall) and a
    side-by-side confusion-matrix figure."""
    from covidcxr.analysis.compare import (
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
        raise fail(str(error)) from None


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
    from covidcxr.analysis.segmentation import evaluate_segmentation

    target = out or evaluation_folder(model)
    try:
        with progress_bar("Segmenting", quiet) as progress:
            metrics = evaluate_segmentation(
                model, data, target, split, subset, postprocess, progress
            )
    except (FileNotFoundError, ValueError) as error:
        raise fail(str(error)) from None
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
    from covidcxr.analysis.explain import explain_files

    try:
        masks = None
        if data is not None:
            from covidcxr.data.layouts import discover

            index = discover(data, num_classes=4)
            masks = {s.path: s.mask_path for s in index.samples if s.mask_path is not None}
        with progress_bar("Explaining", quiet) as progress:
            result = explain_files(model, inputs, out, method, masks, seg_model, progress)
    except (FileNotFoundError, ValueError) as error:
        raise fail(str(error)) from None
    for row in result.rows:
        share = (
            "" if row["lung_fraction"] is None else f"  {100 * row['lung_fraction']:.0f} % in lungs"
        )
        typer.echo(f"{row['path']}\t{row['predicted']}\t{row['confidence']:.3f}{share}")
    typer.echo(f"Wrote {plural(len(result.rows), 'overlay')} to {out}")
    finish(len(result.rows), result.failures)


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
    from covidcxr.analysis.report import build_report

    bars = ProgressBars(quiet)
    try:
        result = build_report(run, out, data, workers, bars, external or ())
    except (FileNotFoundError, ValueError) as error:
        raise fail(str(error)) from None
    finally:
        bars.close()
    for section in result.sections:
        typer.echo(f"{section.title}: {section.finding}")
    typer.echo(f"Report: {result.path}")
